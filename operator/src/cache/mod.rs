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

pub mod feed;
pub mod optional;
pub mod store;
pub mod triggers;

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;

use crate::build::ServiceMonitor;
use crate::gateway::{self, Gateway, HttpRoute};
use feed::{cached, drop_managed_fields, keep_own_apply_entry, metadata_only};
use optional::{OptionalKind, OptionalStreams};

pub use feed::{NoTriggerBackoff, goservers};
pub(crate) use store::static_kind;
pub use store::{Cached, CachedKind, ChildStream, get, lookup, ready};

/// Read handles of every child store.
#[derive(Clone)]
pub struct Caches {
    pub deployments: Store<Cached<Deployment>>,
    pub services: Store<Cached<Service>>,
    pub config_maps: Store<Cached<ConfigMap>>,
    pub ingresses: Store<Cached<Ingress>>,
    pub hpas: Store<Cached<HorizontalPodAutoscaler>>,
    pub revisions: Store<PartialObjectMeta<ControllerRevision>>,
    /// Not waited for: the cluster may not serve the kind.
    pub service_monitors: OptionalKind<ServiceMonitor>,
    /// Not waited for: the cluster may not serve the kind.
    pub routes: OptionalKind<HttpRoute>,
    /// Every Gateway, not only gantry's (it makes none): their listeners
    /// give a route's scheme. Not waited for.
    pub gateways: OptionalKind<Gateway>,
}

/// The watch streams that fill [`Caches`]; each must be handed to the
/// controller, which drives it.
pub struct Streams {
    pub deployments: ChildStream<Cached<Deployment>>,
    pub services: ChildStream<Cached<Service>>,
    pub config_maps: ChildStream<Cached<ConfigMap>>,
    pub ingresses: ChildStream<Cached<Ingress>>,
    pub hpas: ChildStream<Cached<HorizontalPodAutoscaler>>,
    pub revisions: ChildStream<PartialObjectMeta<ControllerRevision>>,
    pub service_monitors: OptionalStreams<ServiceMonitor>,
    pub routes: OptionalStreams<HttpRoute>,
    pub gateways: OptionalStreams<Gateway>,
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
        let (revisions, revision_stream) = metadata_only(client, namespace);
        let (service_monitors, service_monitor_streams) = OptionalKind::new(client, namespace);
        let (routes, route_streams) = OptionalKind::new(client, namespace);
        // In the watched namespaces only, like everything else: with one
        // watched namespace, the operator sees nothing outside it, so a
        // Gateway elsewhere counts as HTTP.
        let (gateways, gateway_streams) = OptionalKind::unowned(client, namespace, gateway::trim);
        (
            Self {
                deployments,
                services,
                config_maps,
                ingresses,
                hpas,
                revisions,
                service_monitors,
                routes,
                gateways,
            },
            Streams {
                deployments: deployment_stream,
                services: service_stream,
                config_maps: config_map_stream,
                ingresses: ingress_stream,
                hpas: hpa_stream,
                revisions: revision_stream,
                service_monitors: service_monitor_streams,
                routes: route_streams,
                gateways: gateway_streams,
            },
        )
    }

    /// Waits until every store has listed its objects once. Optional
    /// kinds are not waited for (see [`crate::optional`]).
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
            service_monitors: _,
            routes: _,
            gateways: _,
        } = self;
        ready(deployments).await
            && ready(services).await
            && ready(config_maps).await
            && ready(ingresses).await
            && ready(hpas).await
            && ready(revisions).await
    }
}
