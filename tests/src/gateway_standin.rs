//! A stand-in for a Gateway controller: it writes the status a Gateway
//! writes on the `HTTPRoutes` of one namespace, `Accepted` (and
//! `ResolvedRefs`) for each parent at the route's current generation, as
//! a Gateway does once it has programmed the route. No traffic moves: the
//! local cluster has no data plane, and the tests send each revision's
//! traffic themselves.
//!
//! [`GatewayStandIn::hold`] stops it accepting new generations (a Gateway
//! that reprograms late, or not at all), [`GatewayStandIn::release`] lets
//! it catch up; [`GatewayStandIn::accepted`] lists every `(route,
//! generation)` it accepted, in order, so a test can check what the
//! operator did meanwhile.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use gantry_operator::gateway::HttpRoute;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::TestNamespace;

/// The controller name written into the route's status.
pub const CONTROLLER: &str = "gantry.dev/e2e-gateway";

/// Accepts the routes of one namespace until dropped.
pub struct GatewayStandIn {
    held: watch::Sender<bool>,
    accepted: Arc<Mutex<Vec<(String, i64)>>>,
    task: JoinHandle<()>,
}

impl GatewayStandIn {
    /// Starts accepting every route of `ns`.
    pub fn start(ns: &TestNamespace) -> Self {
        let routes: Api<HttpRoute> = ns.api();
        let (held, mut holding) = watch::channel(false);
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            let mut pending: std::collections::BTreeMap<String, HttpRoute> =
                std::collections::BTreeMap::new();
            let mut events = watcher(routes.clone(), watcher::Config::default()).boxed();
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    event = events.next() => match event {
                        Some(Ok(watcher::Event::Apply(route) | watcher::Event::InitApply(route))) => {
                            pending.insert(route.name_any(), route);
                        }
                        Some(Ok(watcher::Event::Delete(route))) => {
                            pending.remove(&route.name_any());
                        }
                        Some(_) => {}
                        None => return,
                    },
                    _ = holding.changed() => {}
                    _ = tick.tick() => {}
                }
                if *holding.borrow() {
                    continue;
                }
                let due: Vec<HttpRoute> = pending
                    .values()
                    .filter(|route| !accepted_now(route))
                    .cloned()
                    .collect();
                for route in due {
                    let generation = route.metadata.generation.unwrap_or_default();
                    if accept(&routes, &route, generation).await {
                        record
                            .lock()
                            .expect("the accepted routes")
                            .push((route.name_any(), generation));
                        pending.remove(&route.name_any());
                    }
                }
            }
        });
        Self {
            held,
            accepted,
            task,
        }
    }

    /// Stops accepting new generations.
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Accepts again, catching up at once.
    pub fn release(&self) {
        self.held.send_replace(false);
    }

    /// Every `(route, generation)` accepted so far, in order.
    pub fn accepted(&self) -> Vec<(String, i64)> {
        self.accepted.lock().expect("the accepted routes").clone()
    }
}

impl Drop for GatewayStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether every parent of `route` is reported `Accepted` at its current
/// generation already.
fn accepted_now(route: &HttpRoute) -> bool {
    let generation = route.metadata.generation;
    let parents = route.spec.parent_refs.as_deref().unwrap_or_default();
    let reported = route
        .status
        .as_ref()
        .map(|s| s.parents.as_slice())
        .unwrap_or_default();
    parents.iter().all(|wanted| {
        reported.iter().any(|p| {
            p.parent_ref.name == wanted.name
                && p.parent_ref.section_name == wanted.section_name
                && p.conditions.iter().any(|c| {
                    c.type_ == "Accepted"
                        && c.status == "True"
                        && c.observed_generation == generation
                })
        })
    })
}

/// Writes `Accepted` for every parent of `route` at `generation`; whether
/// the write went through (a newer generation refuses it: the next event
/// brings that one).
async fn accept(routes: &Api<HttpRoute>, route: &HttpRoute, generation: i64) -> bool {
    let parents: Vec<serde_json::Value> = route
        .spec
        .parent_refs
        .iter()
        .flatten()
        .map(|parent| {
            json!({
                "parentRef": {
                    "group": "gateway.networking.k8s.io", "kind": "Gateway",
                    "name": parent.name, "namespace": parent.namespace,
                    "sectionName": parent.section_name,
                },
                "controllerName": CONTROLLER,
                "conditions": [
                    {"type": "Accepted", "status": "True", "reason": "Accepted",
                     "message": "programmed by the test's stand-in Gateway",
                     "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z"},
                    {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "message": "",
                     "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z"},
                ],
            })
        })
        .collect();
    let body = json!({
        "metadata": {"resourceVersion": route.resource_version()},
        "status": {"parents": parents},
    });
    routes
        .patch_status(
            &route.name_any(),
            &PatchParams::default(),
            &Patch::Merge(body),
        )
        .await
        .is_ok()
}
