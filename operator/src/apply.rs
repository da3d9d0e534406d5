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

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Mutex, PoisonError};

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::{debug, info};

use crate::build::revision::{CONFIG_MAP_ANNOTATION, REVISION_NUMBER_LABEL};
use crate::build::{self, CanaryChildren, Children, REVISION_LABEL, Revision, short_hash};
use crate::cache::optional::{OptionalKind, Presence};
use crate::cache::{self, Cached, Caches};
use crate::crd::GoServer;
use crate::error::{Error, Result};
use crate::gateway::HttpRoute;
use crate::status;

/// `ControllerRevisions` kept when `rollout.revisionHistoryLimit` is unset.
pub const DEFAULT_REVISION_HISTORY: usize = 10;

pub use crate::build::FIELD_MANAGER;
/// Annotation holding the hash of the desired object last applied.
pub const APPLIED_HASH_ANNOTATION: &str = "gantry.dev/applied-hash";
/// Field manager that keeps `spec.replicas` when autoscaling takes over.
pub const REPLICAS_HANDOVER_MANAGER: &str = "gantry-replicas-handover";

/// What the applier did to one child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Deleted,
}

impl Action {
    /// The Event reason and log word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "Created",
            Self::Updated => "Updated",
            Self::Deleted => "Deleted",
        }
    }
}

/// One write the applier made.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub action: Action,
    /// The child, for the Event's related object.
    pub child: ObjectReference,
}

impl Change {
    fn of<K: Resource<DynamicType = ()>>(action: Action, namespace: &str, name: &str) -> Self {
        Self {
            action,
            child: ObjectReference {
                api_version: Some(K::api_version(&()).into_owned()),
                kind: Some(K::kind(&()).into_owned()),
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectReference::default()
            },
        }
    }

    /// `Deployment web`.
    fn child_name(&self) -> String {
        format!(
            "{} {}",
            self.child.kind.as_deref().unwrap_or_default(),
            self.child.name.as_deref().unwrap_or_default()
        )
    }
}

/// What one Event tells about the applier's changes.
#[derive(Clone, Debug, PartialEq)]
pub struct Told {
    pub action: Action,
    /// `Created ConfigMap web-config-1a2b, Deployment web`.
    pub note: String,
    /// The first child named, for the Event's related object.
    pub related: ObjectReference,
}

/// The Events for `changes`, in order: the children created in one
/// reconcile are told in one Event (a new `GoServer` creates six, and each
/// Event is a write), updates and deletions one per child.
///
/// kube's recorder folds an Event into an earlier one with the same reason
/// and related object (within minutes), keeping the earlier note; a created
/// group is led by a child new to this `GoServer` (its `ControllerRevision`
/// or content-named `ConfigMap`, as the applier writes those first), so
/// groups with different notes are not folded together.
pub fn tell(changes: &[Change]) -> Vec<Told> {
    let mut told: Vec<Told> = Vec::new();
    for change in changes {
        if change.action == Action::Created
            && let Some(created) = told.iter_mut().find(|t| t.action == Action::Created)
        {
            created.note = format!("{}, {}", created.note, change.child_name());
            continue;
        }
        told.push(Told {
            action: change.action,
            note: format!("{} {}", change.action.as_str(), change.child_name()),
            related: change.child.clone(),
        });
    }
    told
}

/// Bodies the operator applied whose watch event may not have reached the
/// cache yet: child key -> (hash of the applied body, resource version the
/// cache showed when it was applied). An entry goes as soon as the cache
/// shows any other version, which the watch event of the write brings.
#[derive(Debug, Default)]
pub struct Written {
    entries: Mutex<HashMap<String, (String, Option<String>)>>,
}

impl Written {
    fn key<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> String {
        format!("{}/{namespace}/{name}", K::kind(&()))
    }

    /// Whether `hash` was applied over exactly the cached `version`, so the
    /// cache is behind our own write. Forgets the entry once the cache has
    /// moved on.
    fn cache_is_behind(&self, key: &str, hash: &str, version: Option<&str>) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(key) {
            Some((written, before)) if written == hash && before.as_deref() == version => true,
            Some(_) => {
                entries.remove(key);
                false
            }
            None => false,
        }
    }

    fn record(&self, key: String, hash: String, before: Option<String>) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, (hash, before));
    }

    fn has(&self, key: &str) -> bool {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(key)
    }

    fn forget(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// What the applier can apply: a namespaced kind it serializes, compares
/// and reads back.
pub trait Child:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
{
}

impl<K> Child for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
{
}

/// Applies the children of one `GoServer`.
pub struct Applier<'a> {
    pub client: &'a Client,
    pub caches: &'a Caches,
    pub written: &'a Written,
    pub gs: &'a GoServer,
}

impl Applier<'_> {
    fn namespace(&self) -> Result<&str> {
        self.gs
            .metadata
            .namespace
            .as_deref()
            .ok_or(Error::MissingObjectKey("namespace"))
    }

    /// Whether no reconcile of this `GoServer` has written its status yet.
    fn never_reconciled(&self) -> bool {
        self.gs
            .status
            .as_ref()
            .is_none_or(|s| s.observed_generation.is_none())
    }

    fn api<K>(&self) -> Result<Api<K>>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Ok(Api::namespaced(self.client.clone(), self.namespace()?))
    }

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
        self.check_current(&name, canary.is_some()).await?;

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
        let mut told: [Vec<Change>; 8] = Default::default();
        let [
            deployment_changes,
            service_changes,
            ingress_changes,
            hpa_changes,
            monitor_changes,
            route_changes,
            canary_changes,
            canary_service_changes,
        ] = &mut told;
        let (live, service, ingress, hpa, monitor, route, live_canary) = tokio::join!(
            self.apply_deployment(&deployment, autoscaled, deployment_changes),
            self.apply_child(&self.caches.services, &service, service_changes),
            async {
                match ingress {
                    Some(ingress) => self
                        .apply_child(&self.caches.ingresses, &ingress, ingress_changes)
                        .await
                        .map(drop),
                    None => {
                        self.prune::<Ingress, _>(&self.caches.ingresses, &name, ingress_changes)
                            .await
                    }
                }
            },
            async {
                match hpa {
                    Some(hpa) => self
                        .apply_child(&self.caches.hpas, &hpa, hpa_changes)
                        .await
                        .map(drop),
                    None => {
                        self.prune::<HorizontalPodAutoscaler, _>(
                            &self.caches.hpas,
                            &name,
                            hpa_changes,
                        )
                        .await
                    }
                }
            },
            self.apply_optional(
                &self.caches.service_monitors,
                service_monitor,
                &name,
                monitor_changes
            ),
            self.apply_optional(&self.caches.routes, route, &name, route_changes),
            self.apply_canary(canary, &canary_name, canary_changes, canary_service_changes),
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

    /// Applies the canary's Deployment and Service, or deletes them when
    /// no canary runs. The canary's live Deployment.
    async fn apply_canary(
        &self,
        canary: Option<CanaryChildren>,
        name: &str,
        deployment_changes: &mut Vec<Change>,
        service_changes: &mut Vec<Change>,
    ) -> Result<Option<Deployment>> {
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
        match desired {
            Some(desired) => self
                .apply_child(&kind.store, &desired, changes)
                .await
                .map(Some),
            None => self
                .prune::<K, _>(&kind.store, name, changes)
                .await
                .map(|()| None),
        }
    }

    /// Stops before the first write when the cached `GoServer` may not be
    /// the live one. The sign is a child of its name that another object
    /// controls. Either the `GoServer` was deleted and created again under
    /// the same name while its watch lagged (the stale-state test found
    /// that writing then hands the new object's children to the old one,
    /// and the garbage collector deletes them), or the child is an earlier
    /// object's, waiting for the garbage collector, and is adopted. One GET
    /// of the `GoServer`, asked only then, tells the two apart.
    async fn check_current(&self, name: &str, with_canary: bool) -> Result<()> {
        let namespace = self.namespace()?;
        let uid = self.gs.uid();
        let own = uid.as_deref();
        let caches = self.caches;
        let canary = build::canary::name(name);
        let mut claims: Vec<(&'static str, &str, Option<OwnerReference>)> = vec![
            (
                "Deployment",
                name,
                foreign(&caches.deployments, namespace, name, own),
            ),
            (
                "Service",
                name,
                foreign(&caches.services, namespace, name, own),
            ),
            (
                "Ingress",
                name,
                foreign(&caches.ingresses, namespace, name, own),
            ),
            (
                "HorizontalPodAutoscaler",
                name,
                foreign(&caches.hpas, namespace, name, own),
            ),
        ];
        if with_canary {
            claims.push((
                "Deployment",
                &canary,
                foreign(&caches.deployments, namespace, &canary, own),
            ));
            claims.push((
                "Service",
                &canary,
                foreign(&caches.services, namespace, &canary, own),
            ));
        }
        // Another GoServer's child under a name this one needs: one's
        // canary is named like the other (`web-canary`). Whichever came
        // second waits, saying so.
        if let Some((kind, child, Some(owner))) = claims.iter().find(|(_, _, owner)| {
            owner
                .as_ref()
                .is_some_and(|o| o.kind == GoServer::kind(&()) && o.name != name)
        }) {
            return Err(Error::NameConflict {
                kind,
                name: (*child).to_owned(),
                owner: owner.name.clone(),
            });
        }
        if claims.iter().all(|(_, _, owner)| owner.is_none()) {
            return Ok(());
        }
        let live = self
            .api::<GoServer>()?
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("get GoServer {name}"), e))?;
        let live = match &live {
            None => "none".to_owned(),
            Some(live) if live.uid() != uid => {
                format!("uid {}", live.uid().unwrap_or_default())
            }
            Some(live) if live.metadata.deletion_timestamp.is_some() => {
                "it being deleted".to_owned()
            }
            Some(_) => return Ok(()),
        };
        Err(Error::Outdated {
            name: name.to_owned(),
            uid: uid.unwrap_or_default(),
            live,
        })
    }

    /// The `ControllerRevisions` of this `GoServer` in the cache, newest first.
    fn revisions(&self) -> Vec<(String, i64, Option<String>)> {
        let uid = self.gs.uid();
        let namespace = self.gs.namespace();
        let mut owned: Vec<(String, i64, Option<String>)> = self
            .caches
            .revisions
            .state()
            .iter()
            .filter(|r| {
                r.namespace() == namespace && owned_by(r.owner_references(), uid.as_deref())
            })
            .map(|r| {
                let number = r
                    .labels()
                    .get(REVISION_NUMBER_LABEL)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let config_map = r.annotations().get(CONFIG_MAP_ANNOTATION).cloned();
                (r.name_any(), number, config_map)
            })
            .collect();
        owned.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        owned
    }

    /// Records `revision` as a `ControllerRevision`, numbered after the
    /// newest one, unless it is recorded already. Its data never changes
    /// (the apiserver refuses that), so an existing record is left alone.
    async fn record(&self, revision: &Revision, changes: &mut Vec<Change>) -> Result<()> {
        let existing = self.revisions();
        if existing.iter().any(|(name, ..)| *name == revision.name) {
            return Ok(());
        }
        let api = self.api::<ControllerRevision>()?;
        let number = existing.first().map_or(1, |(_, n, _)| n.saturating_add(1));
        let record = build::controller_revision(self.gs, revision, number)?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match api.create(&params, &record).await {
            Ok(_) => {}
            // Not cached, but there all the same: a cache behind our write.
            Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
            Err(e) => return Err(Error::from_write("ControllerRevision", &revision.name, e)),
        }
        info!(child = %revision.name, number, "revision recorded");
        changes.push(Change::of::<ControllerRevision>(
            Action::Created,
            self.namespace()?,
            &revision.name,
        ));
        Ok(())
    }

    /// Deletes `ControllerRevisions` beyond `revisionHistoryLimit` (never
    /// the one in force, the canary's or the last verified one) and, once the rollout is
    /// complete, every `ConfigMap` of this `GoServer` that no kept revision
    /// uses. Until then old pods may still restart and need theirs.
    async fn prune_history(
        &self,
        in_force: &Revision,
        canary: Option<&str>,
        config_maps: &[String],
        live: &Deployment,
        changes: &mut Vec<Change>,
    ) -> Result<()> {
        let limit = self
            .gs
            .spec
            .rollout
            .as_ref()
            .and_then(|r| r.revision_history_limit)
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(DEFAULT_REVISION_HISTORY)
            .max(1);
        let last_good = self
            .gs
            .status
            .as_ref()
            .and_then(|s| s.last_good_revision.clone());
        let mut referenced = config_maps.to_vec();
        for (i, (name, _, used)) in self.revisions().into_iter().enumerate() {
            let protected = name == in_force.name
                || Some(&name) == last_good.as_ref()
                || Some(name.as_str()) == canary;
            if i < limit || protected {
                referenced.extend(used);
                continue;
            }
            self.prune::<ControllerRevision, _>(&self.caches.revisions, &name, changes)
                .await?;
        }
        let runs_in_force = live
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get(REVISION_LABEL))
            == Some(&in_force.name);
        if !(runs_in_force && status::rollout_complete(live)) {
            return Ok(());
        }
        let namespace = self.namespace()?;
        let prefix = build::config_map_prefix(&self.gs.name_any());
        let legacy = prefix.trim_end_matches('-').to_owned();
        let uid = self.gs.uid();
        let unused: Vec<String> = self
            .caches
            .config_maps
            .state()
            .iter()
            .filter(|c| c.namespace().as_deref() == Some(namespace))
            .filter(|c| owned_by(c.owner_references(), uid.as_deref()))
            .map(|c| c.name_any())
            .filter(|n| n.starts_with(&prefix) || *n == legacy)
            .filter(|n| !referenced.contains(n))
            .collect();
        for name in unused {
            self.prune::<ConfigMap, _>(&self.caches.config_maps, &name, changes)
                .await?;
        }
        Ok(())
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

    async fn apply_child<K>(
        &self,
        store: &Store<Cached<K>>,
        desired: &K,
        changes: &mut Vec<Change>,
    ) -> Result<K>
    where
        K: Child,
    {
        let plan = self.plan(store, desired).await?;
        self.execute(plan, desired, changes).await
    }

    /// Decides whether `desired` must be applied, from the cache, or from
    /// one GET when the cache does not have it.
    async fn plan<K>(&self, store: &Store<Cached<K>>, desired: &K) -> Result<Plan<K>>
    where
        K: Child,
    {
        let kind = cache::static_kind::<K>();
        let name = desired.name_any();
        let namespace = self.namespace()?;
        let (body, hash) = with_hash(desired, kind)?;
        let key = Written::key::<K>(namespace, &name);
        let live = match cache::get(store, namespace, &name)? {
            Some(cached) => {
                if self
                    .written
                    .cache_is_behind(&key, &hash, cached.resource_version().as_deref())
                {
                    debug!(%kind, child = %name, "cache behind our own write, not applying again");
                    return Ok(Plan::Keep(cached));
                }
                Some(cached)
            }
            // A `GoServer` never reconciled before has no children yet,
            // unless we just wrote them: nothing to ask (six GETs saved on
            // every create).
            None if self.never_reconciled() && !self.written.has(&key) => None,
            None => self
                .api::<K>()?
                .get_opt(&name)
                .await
                .map_err(|e| Error::kube(format!("get {kind} {name}"), e))?,
        };
        if let Some(live) = &live {
            let live_json =
                serde_json::to_value(live).map_err(|source| Error::Serialize { kind, source })?;
            match difference(&body, &live_json, "", false) {
                None => {
                    self.written.forget(&key);
                    return Ok(Plan::Keep(live.clone()));
                }
                Some(path) => debug!(%kind, child = %name, field = %path, "child differs"),
            }
        }
        Ok(Plan::Apply {
            live,
            body,
            hash,
            key,
        })
    }

    async fn execute<K>(&self, plan: Plan<K>, desired: &K, changes: &mut Vec<Change>) -> Result<K>
    where
        K: Child,
    {
        let (live, body, hash, key) = match plan {
            Plan::Keep(live) => return Ok(live),
            Plan::Apply {
                live,
                body,
                hash,
                key,
            } => (live, body, hash, key),
        };
        let kind = cache::static_kind::<K>();
        let name = desired.name_any();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let applied = self
            .api::<K>()?
            .patch(&name, &params, &Patch::Apply(&body))
            .await
            .map_err(|e| Error::from_write(kind, &name, e))?;
        let before = live.as_ref().and_then(ResourceExt::resource_version);
        self.written.record(key, hash, before);
        let action = if live.is_some() {
            Action::Updated
        } else {
            Action::Created
        };
        info!(%kind, child = %name, action = action.as_str(), "child applied");
        changes.push(Change::of::<K>(action, self.namespace()?, &name));
        Ok(applied)
    }

    /// When autoscaling is switched on, the operator stops applying
    /// `spec.replicas` so the HPA owns it. Server-side apply removes a field
    /// its only owner stops applying, and the Deployment would fall back to
    /// one replica until the HPA acted: an outage for a server that ran at
    /// ten. So, once, while `gantry` still owns the field, the current count
    /// is applied under a second manager; dropping it from gantry's apply
    /// then leaves the value in place, and the HPA scales from there.
    async fn hand_over_replicas(&self, live: &Deployment) -> Result<()> {
        let Some(replicas) = live.spec.as_ref().and_then(|s| s.replicas) else {
            return Ok(());
        };
        if !owns_replicas(live, FIELD_MANAGER) {
            return Ok(());
        }
        let name = live.name_any();
        let handover = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {"replicas": replicas},
        });
        self.api::<Deployment>()?
            .patch(
                &name,
                &PatchParams::apply(REPLICAS_HANDOVER_MANAGER).force(),
                &Patch::Apply(&handover),
            )
            .await
            .map_err(|e| Error::from_write("Deployment", &name, e))?;
        info!(child = %name, replicas, "replicas handed over to autoscaling");
        Ok(())
    }

    /// Deletes the child `name` if the cache has it and this `GoServer`
    /// controls it. The delete names the child's UID and resource version,
    /// so a child that was replaced in the meantime (the `GoServer` deleted
    /// and created again under the same name), or changed since the cache
    /// saw it (adopted by that new object, say), is never deleted on the
    /// strength of an old view; the watch event of the change brings
    /// another reconcile.
    async fn prune<K, C>(
        &self,
        store: &Store<C>,
        name: &str,
        changes: &mut Vec<Change>,
    ) -> Result<()>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + Debug
            + DeserializeOwned,
        C: Resource<DynamicType = ()> + Clone + 'static,
    {
        let namespace = self.namespace()?;
        let owner_uid = self
            .gs
            .metadata
            .uid
            .as_deref()
            .ok_or(Error::MissingObjectKey("uid"))?;
        let Some(live) = cache::lookup(store, namespace, name) else {
            return Ok(());
        };
        let owned = owned_by(live.owner_references(), Some(owner_uid));
        if !owned || live.meta().deletion_timestamp.is_some() {
            return Ok(());
        }
        let kind = K::kind(&());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: live.uid(),
                resource_version: live.resource_version(),
            }),
            ..DeleteParams::background()
        };
        match self.api::<K>()?.delete(name, &params).await {
            Ok(_) => {}
            // Gone already, or replaced by an object with another UID: the
            // watch brings the news, and with it another reconcile.
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
                return Ok(());
            }
            Err(e) => return Err(Error::kube(format!("delete {kind} {name}"), e)),
        }
        self.written.forget(&Written::key::<K>(namespace, name));
        info!(%kind, child = %name, action = "Deleted", "child no longer wanted, deleted");
        changes.push(Change::of::<K>(Action::Deleted, namespace, name));
        Ok(())
    }
}

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

/// What [`Applier::plan`] decided for one child.
enum Plan<K> {
    /// Up to date (or the cache is behind our own write): the live object.
    Keep(K),
    /// Apply `body`; `live` is what exists now, if anything.
    Apply {
        live: Option<K>,
        body: Value,
        hash: String,
        key: String,
    },
}

/// The controller of the cached child `name` of `store`, when it is not
/// the `GoServer` with `uid`.
fn foreign<C: Resource<DynamicType = ()> + Clone + 'static>(
    store: &Store<C>,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
) -> Option<OwnerReference> {
    cache::lookup(store, namespace, name)?
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true) && Some(r.uid.as_str()) != uid)
        .cloned()
}

/// Whether the `GoServer` with `uid` is the controller among `owners`.
pub fn owned_by(owners: &[OwnerReference], uid: Option<&str>) -> bool {
    uid.is_some_and(|uid| {
        owners
            .iter()
            .any(|r| r.controller == Some(true) && r.uid == uid)
    })
}

/// Whether `manager` holds `spec.replicas` of `deployment` through apply.
pub fn owns_replicas(deployment: &Deployment, manager: &str) -> bool {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry.manager.as_deref() == Some(manager) && entry.operation.as_deref() == Some("Apply")
        })
        .filter_map(|entry| entry.fields_v1.as_ref())
        .any(|fields| fields.0.pointer("/f:spec/f:replicas").is_some())
}

/// The desired object as JSON with its hash annotation, and the hash.
fn with_hash<K: Serialize>(desired: &K, kind: &'static str) -> Result<(Value, String)> {
    let mut body =
        serde_json::to_value(desired).map_err(|source| Error::Serialize { kind, source })?;
    let bytes = serde_json::to_vec(&body).map_err(|source| Error::Serialize { kind, source })?;
    let hash = short_hash(&bytes, 16);
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(
                APPLIED_HASH_ANNOTATION.to_owned(),
                Value::String(hash.clone()),
            );
        }
    }
    Ok((body, hash))
}

/// Whether every field of `desired` has the same value in `live`.
///
/// Objects compare key by key, so fields only the live object has (status,
/// defaults, other managers' fields) do not matter; lists compare element by
/// element and must have the same length. An empty list, an empty object or
/// `false` in `desired` matches a missing field, as the apiserver drops them.
/// Resource quantities compare by value: the apiserver stores `0.5` as `500m`.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    difference(desired, live, "", false).is_none()
}

/// The path of the first field where `live` does not match `desired`.
pub fn difference(desired: &Value, live: &Value, path: &str, quantities: bool) -> Option<String> {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().find_map(|(k, dv)| {
            let here = format!("{path}.{k}");
            match l.get(k) {
                Some(lv) => difference(
                    dv,
                    lv,
                    &here,
                    quantities || matches!(k.as_str(), "requests" | "limits"),
                ),
                None => (!is_empty(dv)).then_some(here),
            }
        }),
        (Value::Array(d), Value::Array(l)) => {
            if d.len() != l.len() {
                return Some(format!("{path} (length)"));
            }
            d.iter()
                .zip(l)
                .enumerate()
                .find_map(|(i, (dv, lv))| difference(dv, lv, &format!("{path}[{i}]"), false))
        }
        (Value::Number(d), Value::Number(l)) => (d.as_f64() != l.as_f64()).then(|| path.to_owned()),
        (Value::String(d), Value::String(l)) if quantities && d != l => {
            let same = match (quantity(d), quantity(l)) {
                (Some(d), Some(l)) => (d - l).abs() <= f64::EPSILON * d.abs().max(l.abs()) * 4.0,
                _ => false,
            };
            (!same).then(|| path.to_owned())
        }
        (d, Value::Null) => (!is_empty(d)).then(|| path.to_owned()),
        (d, l) => (d != l).then(|| path.to_owned()),
    }
}

/// The value of a Kubernetes resource quantity (`100m`, `64Mi`, `1e3`, `0.5`).
fn quantity(text: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 15] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|n| (n, *factor)))
        .unwrap_or((text, 1.0));
    let value: f64 = number.parse().ok()?;
    value.is_finite().then_some(value * factor)
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn created_children_are_told_in_one_event() {
        let changes = [
            Change::of::<ControllerRevision>(Action::Created, "ns", "web-1a"),
            Change::of::<Deployment>(Action::Updated, "ns", "web"),
            Change::of::<ConfigMap>(Action::Created, "ns", "web-config-2b"),
            Change::of::<ConfigMap>(Action::Deleted, "ns", "web-config-0c"),
        ];
        let told: Vec<_> = tell(&changes)
            .into_iter()
            .map(|t| (t.action, t.note, t.related.name.unwrap_or_default()))
            .collect();
        assert_eq!(
            told,
            [
                (
                    Action::Created,
                    "Created ControllerRevision web-1a, ConfigMap web-config-2b".to_owned(),
                    "web-1a".to_owned()
                ),
                (
                    Action::Updated,
                    "Updated Deployment web".to_owned(),
                    "web".to_owned()
                ),
                (
                    Action::Deleted,
                    "Deleted ConfigMap web-config-0c".to_owned(),
                    "web-config-0c".to_owned()
                ),
            ]
        );
        assert!(tell(&[]).is_empty());
    }

    #[test]
    fn subset_ignores_extra_live_fields() {
        let desired = json!({"spec": {"replicas": 2, "template": {"containers": [{"name": "a"}]}}});
        let live = json!({
            "spec": {"replicas": 2, "progressDeadlineSeconds": 600,
                     "template": {"containers": [{"name": "a", "terminationMessagePath": "/dev/termination-log"}]}},
            "status": {"replicas": 2},
        });
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn subset_sees_changed_and_missing_values() {
        let live = json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}});
        assert!(!is_subset(&json!({"spec": {"replicas": 3}}), &live));
        assert!(!is_subset(&json!({"spec": {"paused": true}}), &live));
        assert!(!is_subset(
            &json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}}),
            &live
        ));
        assert!(!is_subset(
            &json!({"spec": {"ports": [{"port": 81}]}}),
            &live
        ));
    }

    #[test]
    fn quantities_compare_by_value() {
        let live = json!({"resources": {"requests": {"cpu": "500m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}}});
        let same = json!({"resources": {"requests": {"cpu": "0.5", "memory": "67108864"}, "limits": {"memory": "1024Mi"}}});
        assert!(is_subset(&same, &live));
        let more = json!({"resources": {"requests": {"cpu": "0.6"}}});
        assert!(!is_subset(&more, &live));
        // Outside requests and limits, strings compare as strings.
        assert!(!is_subset(
            &json!({"env": {"value": "0.5"}}),
            &json!({"env": {"value": "500m"}})
        ));
        assert_eq!(quantity("100m"), Some(0.1));
        assert_eq!(quantity("2Ki"), Some(2048.0));
        assert_eq!(quantity("1e3"), Some(1000.0));
        assert_eq!(quantity("abc"), None);
    }

    #[test]
    fn subset_treats_empty_as_missing() {
        let live = json!({"spec": {"replicas": 2}});
        assert!(is_subset(
            &json!({"spec": {"volumes": [], "x": {}, "y": false}}),
            &live
        ));
        assert!(is_subset(
            &json!({"spec": {"emptyDir": {}}}),
            &json!({"spec": {"emptyDir": {}}})
        ));
    }

    #[test]
    fn hash_annotation_follows_content() {
        let (a, hash_a) = with_hash(
            &json!({"metadata": {"name": "x"}, "data": {"k": "1"}}),
            "ConfigMap",
        )
        .unwrap();
        let (b, hash_b) = with_hash(
            &json!({"metadata": {"name": "x"}, "data": {"k": "2"}}),
            "ConfigMap",
        )
        .unwrap();
        let hash = |v: &Value| v["metadata"]["annotations"][APPLIED_HASH_ANNOTATION].clone();
        assert_eq!(hash(&a), json!(hash_a));
        assert_ne!(hash_a, hash_b);
        // A live object lacking a removed key still differs by its hash.
        assert!(!is_subset(&b, &a));
    }

    fn deployment_managed_by(entries: &Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "web", "managedFields": entries}}))
            .unwrap()
    }

    #[test]
    fn replicas_ownership_is_read_from_apply_entries_only() {
        let applied = deployment_managed_by(&json!([
            {"manager": "gantry", "operation": "Apply",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}},
        ]));
        assert!(owns_replicas(&applied, "gantry"));
        assert!(!owns_replicas(&applied, "kube-controller-manager"));

        // After the handover gantry's apply no longer lists the field, and
        // an Update by the HPA's controller does not count as gantry's.
        let handed_over = deployment_managed_by(&json!([
            {"manager": "gantry", "operation": "Apply",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:template": {}}}},
            {"manager": "gantry", "operation": "Update",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": REPLICAS_HANDOVER_MANAGER, "operation": "Apply",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        ]));
        assert!(!owns_replicas(&handed_over, "gantry"));
        assert!(owns_replicas(&handed_over, REPLICAS_HANDOVER_MANAGER));
    }

    #[test]
    fn a_cache_behind_our_own_write_is_recognised_until_it_moves_on() {
        let written = Written::default();
        let key = Written::key::<Deployment>("web", "hello");
        assert!(!written.cache_is_behind(&key, "h1", Some("10")));
        written.record(key.clone(), "h1".to_owned(), Some("10".to_owned()));
        // The cache still shows the version the body was applied over.
        assert!(written.cache_is_behind(&key, "h1", Some("10")));
        // Another desired body is no write of ours in flight.
        assert!(!written.cache_is_behind(&key, "h2", Some("10")));
        // Once the cache moved on, the entry is forgotten for good.
        written.record(key.clone(), "h1".to_owned(), Some("10".to_owned()));
        assert!(!written.cache_is_behind(&key, "h1", Some("11")));
        assert!(!written.cache_is_behind(&key, "h1", Some("10")));
    }
}
