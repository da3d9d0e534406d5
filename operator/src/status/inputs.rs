//! What the controller observed, handed to [`super::compute`].

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;

use crate::cache::optional::Presence;
use crate::error::Error;
use crate::gateway::HttpRoute;
use crate::rollout::Decision;

/// Inputs of a status besides the `GoServer` itself.
pub struct Inputs<'a> {
    /// The Deployment as the apiserver has it now, if it exists.
    pub deployment: Option<&'a Deployment>,
    /// The rollout state decided this reconcile; `None` when the reconcile
    /// stopped before (the stored one is kept).
    pub rollout: Option<&'a Decision>,
    /// A permanent error that stopped this reconcile.
    pub error: Option<&'a Error>,
    /// The `HorizontalPodAutoscaler`, when autoscaling is on and it exists.
    pub hpa: Option<&'a HorizontalPodAutoscaler>,
    /// Whether the cluster serves `ServiceMonitors`, and they are cached.
    pub service_monitors: Presence,
    /// Whether the cluster serves `HTTPRoutes`, and they are cached.
    pub routes: Presence,
    /// The `HTTPRoute`, when the spec has a route and it exists.
    pub route: Option<&'a HttpRoute>,
    /// Whether a Gateway listener the route attaches to speaks HTTPS.
    pub route_https: bool,
}
