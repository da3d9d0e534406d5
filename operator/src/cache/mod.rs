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
pub mod kinds;
pub mod optional;
pub mod store;
pub mod triggers;

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;

use crate::build::ServiceMonitor;
use crate::gateway::{self, Gateway, HttpRoute};
use feed::{drop_managed_fields, keep_own_apply_entry};
use kinds::child_kinds;

pub use feed::{NoTriggerBackoff, goservers};
pub use kinds::{Claim, Named};
pub(crate) use store::static_kind;
pub use store::{Cached, CachedKind, ChildStream, get, lookup, ready};

// The kinds the operator watches, each written down once: the field of
// `Caches`, how its watch fills the store (see `kinds`), which `GoServers`
// an event of it is for (see `triggers`), and which of a `GoServer`'s names
// its children take, for the name-conflict guard (`apply/guard.rs`).
child_kinds! {
    deployments: Deployment = Owned(keep_own_apply_entry),
        events for triggers::owner, names [Primary, Canary, Baseline];
    services: Service = Owned(drop_managed_fields),
        events for triggers::owner, names [Primary, Canary, Baseline];
    config_maps: ConfigMap = Owned(drop_managed_fields),
        events for triggers::owner, names [];
    ingresses: Ingress = Owned(drop_managed_fields),
        events for triggers::owner, names [Primary];
    hpas: HorizontalPodAutoscaler = Owned(drop_managed_fields),
        events for triggers::owner, names [Primary];
    revisions: ControllerRevision = MetadataOnly(),
        events for triggers::owner, names [];
    /// Not waited for: the cluster may not serve the kind.
    service_monitors: ServiceMonitor = Optional(),
        events for triggers::owner, names [];
    /// Not waited for: the cluster may not serve the kind.
    routes: HttpRoute = Optional(),
        events for triggers::owner, names [];
    /// Every Gateway, not only gantry's (it makes none): their listeners
    /// give a route's scheme. Not waited for. In the watched namespaces
    /// only, like everything else: with one watched namespace, the operator
    /// sees nothing outside it, so a Gateway elsewhere counts as HTTP.
    gateways: Gateway = OptionalUnowned(gateway::trim),
        events for triggers::routes_through, names [];
}

#[cfg(test)]
mod tests {
    use kube::{Client, Config};

    use super::*;

    /// The caches of a client that is never asked: a watch starts only
    /// when the controller polls its stream.
    fn caches() -> Caches {
        let config = Config::new("http://127.0.0.1:1".parse().unwrap());
        Caches::new(&Client::try_from(config).unwrap(), Some("shop")).0
    }

    #[tokio::test]
    async fn the_guard_claims_the_names_each_kind_of_the_table_takes() {
        let names = [
            (Named::Primary, "web"),
            (Named::Canary, "web-canary"),
            (Named::Baseline, "web-baseline"),
        ];
        let claims = caches().claims("shop", &names, Some("u-1"));
        let claimed: Vec<(&str, &str)> = claims.iter().map(|c| (c.kind, c.name.as_str())).collect();
        // Every kind's own name first, then the canary's, then its
        // baseline's: the guard names
        // the first conflict it finds.
        assert_eq!(
            claimed,
            [
                ("Deployment", "web"),
                ("Service", "web"),
                ("Ingress", "web"),
                ("HorizontalPodAutoscaler", "web"),
                ("Deployment", "web-canary"),
                ("Service", "web-canary"),
                ("Deployment", "web-baseline"),
                ("Service", "web-baseline"),
            ]
        );
        // Nothing cached: nobody else controls any of them.
        assert!(claims.iter().all(|c| c.foreign.is_none()));
    }
}
