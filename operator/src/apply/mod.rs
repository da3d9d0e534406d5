//! The applier: brings the live children of one `GoServer` in line with the
//! [`Children`] built for it, and says what it changed.
//!
//! ```text
//! Children ─> ConfigMap ─> (replica handover) ─> Deployment ─> Service
//!          ─> Ingress or prune ─> HPA or prune ─> Vec<Change>
//! ```
//!
//! A reconcile of an unchanged `GoServer` must send no request at all, yet a
//! child edited by hand must be restored. Desired children are compared with
//! the controller's caches ([`crate::cache`]); the apiserver is asked only
//! when a child is not cached. Each applied object carries the hash of its
//! desired form in the annotation [`APPLIED_HASH_ANNOTATION`]; a child is
//! applied again when that hash differs (the spec changed, which also covers
//! fields the spec no longer sets) or when some desired field is missing or
//! different in the live object (drift). Fields the apiserver defaults or
//! other managers add are not compared.
//!
//! A cache lags behind the operator's own writes by one watch event. A
//! reconcile that runs in that gap (triggered by the status write of the
//! previous one, say) would find the old child and apply the same body
//! again: a harmless request, but a false "Updated" Event. [`Written`]
//! remembers, per child, which body was applied over which cached version,
//! and a child whose cache still shows exactly that version is left alone
//! until its watch event arrives (which triggers another reconcile).
//!
//! The files, by job: `applier.rs` (the applier's client and caches),
//! `plan.rs` (plan a child from the cache, then execute), `diff.rs` (hash
//! and field comparison), `guard.rs` (a name another owner controls),
//! `history.rs` (`ControllerRevisions`, pruned past the limit),
//! `replicas.rs` (the replica handover to autoscaling), `prune.rs`,
//! `written.rs` (the bodies this process applied), `change.rs` (what
//! changed, and its Events). This file runs them in order.

mod applier;
mod change;
mod diff;
mod guard;
mod history;
mod plan;
mod prune;
mod replicas;
mod written;

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use crate::build::{self, CanaryChildren, Children, Revision};
use crate::cache::Cached;
use crate::cache::optional::{OptionalKind, Presence};
use crate::error::Result;
use crate::gateway::HttpRoute;

pub use crate::build::FIELD_MANAGER;
pub use applier::Applier;
pub use change::{Action, Change, Told, tell};
pub use diff::{APPLIED_HASH_ANNOTATION, difference, is_subset};
pub use guard::owned_by;
pub use history::DEFAULT_REVISION_HISTORY;
use plan::{Child, Plan};
pub use replicas::{REPLICAS_HANDOVER_MANAGER, owns_replicas};
pub use written::Written;

/// The live Deployments after an apply.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The stable Deployment, named like the `GoServer`.
    pub deployment: Deployment,
    /// The canary's, while one runs.
    pub canary: Option<Deployment>,
    /// The `HTTPRoute`, when the spec has one and the cluster serves them.
    pub route: Option<HttpRoute>,
}

impl Applier<'_> {
    /// Applies every child and deletes the optional ones the spec no
    /// longer wants. Every write made is pushed to `changes`, also when a
    /// later one fails. Returns the live Deployments.
    pub async fn apply(&self, children: Children, changes: &mut Vec<Change>) -> Result<Applied> {
        let Children {
            deployment,
            service,
            config_map,
            ingress,
            hpa,
            service_monitor,
            route,
            revision,
            canary,
        } = children;
        let name = self.gs.name_any();
        self.check_current(
            &name,
            canary.is_some(),
            canary.as_ref().is_some_and(|c| c.baseline.is_some()),
        )
        .await?;

        self.apply_first(&revision, &config_map, canary.as_ref(), changes)
            .await?;
        let autoscaled = deployment
            .spec
            .as_ref()
            .is_some_and(|s| s.replicas.is_none());
        // The rest depend on nothing but the ConfigMap: written together,
        // in one round trip's time rather than four. Each keeps its own
        // list of changes, so every write made is told even when another
        // failed.
        let canary_name = build::canary::name(&name);
        let canary_revision = canary.as_ref().map(|c| c.revision.name.clone());
        let canary_config_map = canary
            .as_ref()
            .map(|c| build::config_map_name(&name, &c.revision.data.config));
        let mut told: [Vec<Change>; 10] = Default::default();
        let [
            deployment_changes,
            service_changes,
            ingress_changes,
            hpa_changes,
            monitor_changes,
            route_changes,
            canary_changes,
            canary_service_changes,
            baseline_changes,
            baseline_service_changes,
        ] = &mut told;
        let (live, service, ingress, hpa, monitor, route, live_canary) = tokio::join!(
            self.apply_deployment(&deployment, autoscaled, deployment_changes),
            self.apply_child(&self.caches.services, &service, service_changes),
            self.apply_or_prune(&self.caches.ingresses, ingress, &name, ingress_changes),
            self.apply_or_prune(&self.caches.hpas, hpa, &name, hpa_changes),
            self.apply_optional(
                &self.caches.service_monitors,
                service_monitor,
                &name,
                monitor_changes
            ),
            self.apply_optional(&self.caches.routes, route, &name, route_changes),
            self.apply_canary(
                canary,
                &canary_name,
                [
                    canary_changes,
                    canary_service_changes,
                    baseline_changes,
                    baseline_service_changes
                ]
            ),
        );
        changes.extend(told.into_iter().flatten());
        let live = live?;
        service?;
        ingress?;
        hpa?;
        monitor?;
        let route = route?;
        let live_canary = live_canary?;
        let mut keep = vec![config_map.name_any()];
        keep.extend(canary_config_map);
        self.prune_history(&revision, canary_revision.as_deref(), &keep, &live, changes)
            .await?;
        Ok(Applied {
            deployment: live,
            canary: live_canary,
            route,
        })
    }

    /// The records and the `ConfigMaps`, which go first: a revision is
    /// recorded before it runs, and the pods load their config at start.
    /// The stable revision is recorded before the canary's, which numbers
    /// after it.
    async fn apply_first(
        &self,
        revision: &Revision,
        config_map: &ConfigMap,
        canary: Option<&CanaryChildren>,
        changes: &mut Vec<Change>,
    ) -> Result<()> {
        let mut first: [Vec<Change>; 4] = Default::default();
        let [
            record_changes,
            config_map_changes,
            canary_record_changes,
            canary_config_changes,
        ] = &mut first;
        let (recorded, config, canary_config) = tokio::join!(
            async {
                self.record(revision, record_changes).await?;
                match canary {
                    Some(c) if c.revision.name != revision.name => {
                        self.record(&c.revision, canary_record_changes).await
                    }
                    _ => Ok(()),
                }
            },
            self.apply_child(&self.caches.config_maps, config_map, config_map_changes),
            async {
                match canary.and_then(|c| c.config_map.as_ref()) {
                    Some(config_map) => self
                        .apply_child(&self.caches.config_maps, config_map, canary_config_changes)
                        .await
                        .map(drop),
                    None => Ok(()),
                }
            },
        );
        changes.extend(first.into_iter().flatten());
        recorded?;
        config?;
        canary_config.map(drop)
    }

    /// Applies the canary's Deployment and Service, and its baseline's,
    /// or deletes those the spec wants none of. The canary's live
    /// Deployment.
    async fn apply_canary(
        &self,
        canary: Option<CanaryChildren>,
        name: &str,
        changes: [&mut Vec<Change>; 4],
    ) -> Result<Option<Deployment>> {
        let [
            deployment_changes,
            service_changes,
            baseline_changes,
            baseline_service_changes,
        ] = changes;
        let baseline_name = build::canary::baseline_name(&self.gs.name_any());
        let (canary, baseline) = match canary {
            Some(mut c) => {
                let baseline = c.baseline.take();
                (Some(c), baseline)
            }
            None => (None, None),
        };
        let (deployment, service) = match baseline {
            Some(b) => (Some(b.deployment), Some(b.service)),
            None => (None, None),
        };
        let canary_part = async {
            let Some(canary) = canary else {
                self.prune::<Deployment, _>(&self.caches.deployments, name, deployment_changes)
                    .await?;
                return self
                    .prune::<Service, _>(&self.caches.services, name, service_changes)
                    .await
                    .map(|()| None);
            };
            let (deployment, service) = tokio::join!(
                self.apply_child(
                    &self.caches.deployments,
                    &canary.deployment,
                    deployment_changes
                ),
                self.apply_child(&self.caches.services, &canary.service, service_changes),
            );
            service?;
            deployment.map(Some)
        };
        let (live, baseline_deployment, baseline_service) = tokio::join!(
            canary_part,
            self.apply_or_prune(
                &self.caches.deployments,
                deployment,
                &baseline_name,
                baseline_changes
            ),
            self.apply_or_prune(
                &self.caches.services,
                service,
                &baseline_name,
                baseline_service_changes
            ),
        );
        baseline_deployment?;
        baseline_service?;
        live
    }

    /// Applies or prunes a child of a kind the cluster may not serve; does
    /// nothing while the kind is missing or not yet cached (the status
    /// tells which, and a change of that triggers another reconcile).
    /// The live child, when there is one.
    async fn apply_optional<K>(
        &self,
        kind: &OptionalKind<K>,
        desired: Option<K>,
        name: &str,
        changes: &mut Vec<Change>,
    ) -> Result<Option<K>>
    where
        K: Child + Send + Sync + 'static,
    {
        if kind.presence() != Presence::Ready {
            return Ok(None);
        }
        self.apply_or_prune(&kind.store, desired, name, changes)
            .await
    }

    /// Applies `desired`, or deletes the child `name` of `store` when the
    /// spec wants none. The live child, when there is one.
    async fn apply_or_prune<K: Child>(
        &self,
        store: &Store<Cached<K>>,
        desired: Option<K>,
        name: &str,
        changes: &mut Vec<Change>,
    ) -> Result<Option<K>> {
        match desired {
            Some(desired) => self.apply_child(store, &desired, changes).await.map(Some),
            None => self
                .prune::<K, _>(store, name, changes)
                .await
                .map(|()| None),
        }
    }

    async fn apply_deployment(
        &self,
        desired: &Deployment,
        autoscaled: bool,
        changes: &mut Vec<Change>,
    ) -> Result<Deployment> {
        let plan = self.plan(&self.caches.deployments, desired).await?;
        if let Plan::Apply {
            live: Some(live), ..
        } = &plan
            && autoscaled
        {
            self.hand_over_replicas(live).await?;
        }
        self.execute(plan, desired, changes).await
    }
}
