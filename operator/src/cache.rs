//! The controller's caches of the children it owns.
//!
//! One watch per child kind (filtered by the `app.kubernetes.io/managed-by`
//! label) feeds a reflector store and, through the same stream, triggers the
//! reconcile of the owning `GoServer`. Because the store is written before
//! the event reaches the controller, a reconcile triggered by a child event
//! always sees that child at least as new as the event. The applier compares
//! desired children with these stores and asks the apiserver only when an
//! object is not cached (see [`crate::apply`]).
//!
//! `GoServers` are cached the same way ([`goservers`]), for the controller.
//!
//! Cached objects drop `managedFields` (the bulk of a stored object) except
//! the one entry the replica handover reads: gantry's own apply entry on
//! Deployments. `ControllerRevisions` are cached as metadata only: their
//! data (a whole pod template) is read once, on a rollback.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::apply::FIELD_MANAGER;
use crate::build::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::crd::GoServer;

/// Read handles of every child store.
#[derive(Clone)]
pub struct Caches {
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub config_maps: Store<ConfigMap>,
    pub ingresses: Store<Ingress>,
    pub hpas: Store<HorizontalPodAutoscaler>,
    pub revisions: Store<PartialObjectMeta<ControllerRevision>>,
}

/// A child event stream that writes its store as it goes, ready for
/// `Controller::owns_stream`.
pub type ChildStream<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

/// The watch streams that fill [`Caches`]; each must be handed to the
/// controller, which drives it.
pub struct Streams {
    pub deployments: ChildStream<Deployment>,
    pub services: ChildStream<Service>,
    pub config_maps: ChildStream<ConfigMap>,
    pub ingresses: ChildStream<Ingress>,
    pub hpas: ChildStream<HorizontalPodAutoscaler>,
    pub revisions: ChildStream<PartialObjectMeta<ControllerRevision>>,
}

impl Caches {
    /// Stores for every child kind in `namespace` (all namespaces when
    /// `None`), and the streams that fill them.
    pub fn new(client: &Client, namespace: Option<&str>) -> (Self, Streams) {
        let (deployments, deployment_stream) = cached(client, namespace, keep_own_apply_entry);
        let (services, service_stream) = cached(client, namespace, drop_managed_fields);
        let (config_maps, config_map_stream) = cached(client, namespace, drop_managed_fields);
        let (ingresses, ingress_stream) = cached(client, namespace, drop_managed_fields);
        let (hpas, hpa_stream) = cached(client, namespace, drop_managed_fields);
        // An `Api` of `PartialObjectMeta` lists and watches metadata only.
        let (revisions, revision_stream) = cached(client, namespace, drop_managed_fields);
        (
            Self {
                deployments,
                services,
                config_maps,
                ingresses,
                hpas,
                revisions,
            },
            Streams {
                deployments: deployment_stream,
                services: service_stream,
                config_maps: config_map_stream,
                ingresses: ingress_stream,
                hpas: hpa_stream,
                revisions: revision_stream,
            },
        )
    }

    /// Waits until every store has listed its objects once.
    ///
    /// kube-runtime's readiness sits behind a one-shot channel that wakes
    /// only the last task to poll it; asking again in a loop finds the value
    /// once anyone has seen it. Returns `false` if a store's writer is gone
    /// (the controller stopped) before it became ready.
    pub async fn wait_until_ready(&self) -> bool {
        let Self {
            deployments,
            services,
            config_maps,
            ingresses,
            hpas,
            revisions,
        } = self;
        ready(deployments).await
            && ready(services).await
            && ready(config_maps).await
            && ready(ingresses).await
            && ready(hpas).await
            && ready(revisions).await
    }
}

/// Waits for one store (see [`Caches::wait_until_ready`]).
pub async fn ready<K>(store: &Store<K>) -> bool
where
    K: reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready()).await {
            Ok(Ok(())) => return true,
            Ok(Err(_)) => return false,
            Err(_) => {}
        }
    }
}

/// The cached `K` called `name` in `namespace`, if the store has it.
pub fn get<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

fn cached<K>(
    client: &Client,
    namespace: Option<&str>,
    trim: fn(&mut K),
) -> (Store<K>, ChildStream<K>)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let config = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .touched_objects()
        .boxed();
    (reader, stream)
}

/// The `GoServer` store and the stream that fills it, for
/// `Controller::for_stream`: objects as [`GoServer`]s are delivered, less
/// what the reconcile never reads (`managedFields` and kubectl's copy of the
/// last applied object, together often larger than the spec).
pub fn goservers(
    client: &Client,
    namespace: Option<&str>,
) -> (Store<GoServer>, ChildStream<GoServer>) {
    let api: Api<GoServer> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(trim_goserver)
        .reflect(writer)
        .applied_objects()
        .boxed();
    (reader, stream)
}

/// Annotation in which client-side `kubectl apply` keeps the whole object.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn trim_goserver(gs: &mut GoServer) {
    drop_managed_fields(gs);
    if let Some(annotations) = gs.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

fn drop_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// Keeps only gantry's own apply entry, which says whether gantry still
/// owns `spec.replicas` (see the replica handover in [`crate::apply`]).
fn keep_own_apply_entry(deployment: &mut Deployment) {
    deployment.managed_fields_mut().retain(|entry| {
        entry.manager.as_deref() == Some(FIELD_MANAGER)
            && entry.operation.as_deref() == Some("Apply")
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_gantrys_apply_entry_is_kept() {
        let mut deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "managedFields": [
                {"manager": "gantry", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                {"manager": "gantry", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}},
                {"manager": "kube-controller-manager", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}},
            ]},
        }))
        .unwrap();
        keep_own_apply_entry(&mut deployment);
        let managers: Vec<_> = deployment
            .managed_fields()
            .iter()
            .map(|e| (e.manager.clone(), e.operation.clone()))
            .collect();
        assert_eq!(
            managers,
            vec![(Some("gantry".to_owned()), Some("Apply".to_owned()))]
        );

        let mut service: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "managedFields": [{"manager": "gantry", "operation": "Apply"}]},
        }))
        .unwrap();
        drop_managed_fields(&mut service);
        assert!(service.metadata.managed_fields.is_none());
    }
}
