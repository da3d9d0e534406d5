//! The controller's wiring: the `GoServer` watch, a watch per child kind
//! mapped back to its `GoServer`, and the run until a signal.

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{PartialObjectMeta, PartialObjectMetaExt};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use tracing::{debug, info, warn};

use super::context::Context;
use super::{error_policy, reconcile};
use crate::build::{self, ServiceMonitor};
use crate::cache::{self, Caches};
use crate::crd::GoServer;
use crate::error::Error;
use crate::gateway::{Gateway, HttpRoute};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::options::RunOptions;

/// How long reconciles in flight may take to finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the controller until SIGINT or SIGTERM. `health` turns ready once
/// the `GoServer` watch and every child cache have listed everything;
/// reconciles are counted in `metrics`.
pub async fn run(client: Client, options: &RunOptions, metrics: Arc<Metrics>, health: Arc<Health>) {
    let namespace = options.namespace.as_deref();
    info!(
        namespace = namespace.unwrap_or("*"),
        "gantry-operator starting"
    );
    let (caches, streams) = Caches::new(&client, namespace);
    let (store, goservers) = cache::goservers(&client, namespace);
    metrics.export_goservers(store.clone());
    let attached = store.clone();
    let controller = Controller::for_stream(goservers, store.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(options.concurrency));
    // A delivery answered wakes its GoServer, whose next status write
    // records it.
    let (wake, woken) = mpsc::unbounded();
    let ctx = Arc::new(Context::new(
        client,
        metrics,
        caches.clone(),
        store.clone(),
        options,
        wake,
    ));
    tokio::spawn(async move {
        if cache::ready(&store).await && caches.wait_until_ready().await {
            health.set_ready(true);
            info!("watches synced, ready");
        }
    });
    let cache::Streams {
        deployments,
        services,
        config_maps,
        ingresses,
        hpas,
        revisions,
        service_monitors,
        routes,
        gateways,
    } = streams;
    let running = controller
        .watches_stream(deployments.map_ok(trigger::<_, Deployment>), goserver_of)
        .watches_stream(services.map_ok(trigger::<_, Service>), goserver_of)
        .watches_stream(config_maps.map_ok(trigger::<_, ConfigMap>), goserver_of)
        .watches_stream(ingresses.map_ok(trigger::<_, Ingress>), goserver_of)
        .watches_stream(
            hpas.map_ok(trigger::<_, HorizontalPodAutoscaler>),
            goserver_of,
        )
        .watches_stream(
            revisions.map_ok(trigger::<_, ControllerRevision>),
            goserver_of,
        )
        .watches_stream(
            service_monitors
                .children
                .map_ok(trigger::<_, ServiceMonitor>),
            goserver_of,
        )
        .watches_stream(routes.children.map_ok(trigger::<_, HttpRoute>), goserver_of)
        // A Gateway's listeners give the scheme of the routes on it.
        .watches_stream(
            gateways.children.map_ok(trigger::<_, Gateway>),
            move |gateway| routes_on(&attached, &gateway),
        )
        // An optional kind installed or removed: every GoServer learns
        // whether it can have its child.
        .reconcile_all_on(futures::stream::select_all([
            service_monitors.changes,
            routes.changes,
            gateways.changes,
        ]))
        .reconcile_on(woken)
        .trigger_backoff(cache::NoTriggerBackoff)
        .graceful_shutdown_on(crate::signal::shutdown())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(object = %object, "reconciled"),
                // Told at info by the reconcile itself; the watch brings the news.
                Err(kube::runtime::controller::Error::ReconcilerFailed(
                    Error::Outdated { .. },
                    object,
                )) => debug!(object = %object, "reconcile skipped"),
                Err(err) => warn!(error = %err, "reconcile failed"),
            }
        });
    // A graceful shutdown waits for the reconciles in flight; one waiting
    // on an apiserver that cannot be reached would hold the process until
    // the kubelet's SIGKILL. They get a grace period, then are dropped:
    // nothing a reconcile writes depends on it finishing.
    let overdue = async {
        crate::signal::shutdown().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        () = running => {}
        () = overdue => warn!(
            grace_seconds = SHUTDOWN_GRACE.as_secs(),
            "reconciles still running after the shutdown grace period; stopping without them"
        ),
    }
    info!("gantry-operator stopped");
}

/// The `GoServers` whose route names `gateway` as a parent.
pub(super) fn routes_on<C: Resource>(
    goservers: &Store<GoServer>,
    gateway: &C,
) -> Vec<ObjectRef<GoServer>> {
    let (Some(name), Some(namespace)) = (
        gateway.meta().name.as_deref(),
        gateway.meta().namespace.as_deref(),
    ) else {
        return Vec::new();
    };
    goservers
        .state()
        .iter()
        .filter(|gs| {
            let own = gs.metadata.namespace.as_deref();
            gs.spec.route.as_ref().is_some_and(|route| {
                route
                    .parent_refs
                    .iter()
                    .any(|p| p.name == name && p.namespace.as_deref().or(own) == Some(namespace))
            })
        })
        .map(|gs| ObjectRef::from_obj(gs.as_ref()))
        .collect()
}

/// The `GoServer` an event of one of gantry's children is for: its
/// controller if that is a `GoServer`, else, when nothing controls it, the
/// `GoServer` its instance label names. A child deleted and created again
/// by someone else (restored from a backup, say) has gantry's labels and
/// no owner; a watch that coalesced the two events shows only the new
/// object, and without the label nothing would reconcile its `GoServer`
/// (found by the lost-state test).
pub(super) fn goserver_of<K>(child: PartialObjectMeta<K>) -> Option<ObjectRef<GoServer>> {
    let ObjectMeta {
        namespace,
        owner_references,
        labels,
        ..
    } = child.metadata;
    let controller = owner_references
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.controller == Some(true));
    let name = match controller {
        Some(owner)
            if owner.kind == GoServer::kind(&())
                && owner.api_version == GoServer::api_version(&()) =>
        {
            owner.name
        }
        Some(_) => return None,
        None => labels?.remove(build::INSTANCE_LABEL)?,
    };
    Some(ObjectRef::new(&name).within(&namespace?))
}

/// What [`goserver_of`] reads of a child event: its namespace, controller
/// and instance label, in the form kube's trigger streams take.
// By value: the signature `map_ok` asks for.
#[allow(clippy::needless_pass_by_value)]
pub(super) fn trigger<C, K>(child: C) -> PartialObjectMeta<K>
where
    C: Resource<DynamicType = ()>,
    K: Resource<DynamicType = ()>,
{
    let meta = child.meta();
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        owner_references: meta.owner_references.as_ref().map(|owners| {
            owners
                .iter()
                .filter(|r| r.controller == Some(true))
                .cloned()
                .collect()
        }),
        labels: meta.labels.as_ref().and_then(|labels| {
            let instance = labels.get(build::INSTANCE_LABEL)?;
            Some([(build::INSTANCE_LABEL.to_owned(), instance.clone())].into())
        }),
        ..ObjectMeta::default()
    }
    .into_request_partial()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn service(owners: &serde_json::Value, labels: &serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "svc", "namespace": "shop", "ownerReferences": owners, "labels": labels},
        }))
        .expect("a Service")
    }

    fn owner(kind: &str, api_version: &str, name: &str, controller: bool) -> serde_json::Value {
        json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": "u", "controller": controller})
    }

    #[test]
    fn a_child_event_is_for_its_controlling_goserver() {
        let labels = json!({build::INSTANCE_LABEL: "labelled"});
        let child = service(
            &json!([owner("GoServer", "gantry.dev/v1alpha1", "web", true)]),
            &labels,
        );
        assert_eq!(
            goserver_of(trigger::<_, Service>(child)),
            Some(ObjectRef::new("web").within("shop"))
        );
        // Controlled by something else: not ours, whatever its labels say.
        let child = service(
            &json!([owner("ReplicaSet", "apps/v1", "rs", true)]),
            &labels,
        );
        assert_eq!(goserver_of(trigger::<_, Service>(child)), None);
    }

    #[test]
    fn a_child_without_controller_is_for_the_goserver_its_label_names() {
        // A replacement made by someone else: gantry's labels, no owner.
        let child = service(&json!([]), &json!({build::INSTANCE_LABEL: "web"}));
        assert_eq!(
            goserver_of(trigger::<_, Service>(child)),
            Some(ObjectRef::new("web").within("shop"))
        );
        let child = service(
            &json!([owner("GoServer", "gantry.dev/v1alpha1", "other", false)]),
            &json!({}),
        );
        assert_eq!(goserver_of(trigger::<_, Service>(child)), None);
    }
}
