//! The `Canary` strategy end to end: the operator as a real process, the
//! real Gateway API CRDs, and a real Prometheus on loopback scraping
//! gantry-server processes that stand in for each revision's pods, as in
//! the verification tests.
//!
//! No Gateway runs, so the route's weights steer no traffic here: the test
//! sends each revision's traffic itself, and checks what the operator
//! decides from Prometheus and writes (the weighted backends, the
//! canary's Deployment and Service, the status, Events).

mod operator_support;

use std::time::Duration;

use gantry_e2e::gateway_standin::GatewayStandIn;
use gantry_e2e::prometheus::Prometheus;
use gantry_e2e::server::{Revisions, Traffic};
use gantry_e2e::{TestNamespace, gateway_crds, wait_for, wait_for_deletion};
use gantry_operator::crd::{CanaryPhase, GoServer, Verdict};
use gantry_operator::gateway::HttpRoute;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use operator_support::{DEADLINE, Operator, deployed, events_about, kubectl_apply, wait_deployed};
use serde_json::{Value, json};

/// The share of 5xx answers of one revision (see `operator_rollout.rs`).
const ERROR_RATE: &str = r#"(sum(rate(http_requests_total{namespace="${namespace}",revision="${revision}",status=~"5.."}[10s])) or vector(0)) / sum(rate(http_requests_total{namespace="${namespace}",revision="${revision}"}[10s]))"#;

/// Long enough for any one step of these specs, with room for a slow
/// machine.
const STEP_DEADLINE: Duration = Duration::from_secs(120);

/// A canary GoServer: four replicas, samples every 2 s after a 2 s
/// warm-up, two needed; steps of 10 % and 50 % of `pause` each.
fn goserver(name: &str, image: &str, pause: &str, auto_rollback: bool) -> GoServer {
    serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": name},
        "spec": {
            "image": image,
            "replicas": 4,
            "route": {"parentRefs": [{"name": "public"}], "hostnames": ["shop.example.com"]},
            "rollout": {
                "strategy": "Canary",
                "steps": [{"weight": 10, "pause": pause}, {"weight": 50, "pause": pause}],
                "verification": {
                    "warmup": "2s", "interval": "2s", "window": "6s",
                    "minSamples": 2, "failureLimit": 0, "autoRollback": auto_rollback,
                    "metrics": [{"name": "error-rate", "query": ERROR_RATE, "max": 0.05}],
                },
                // Short for a test; the stand-in Gateway accepts at once.
                "gateway": {"drain": "1s"},
            },
        },
    }))
    .unwrap()
}

/// The stable revision's name once it is verified (the first revision of
/// a GoServer is verified in place: there is nothing to compare it with).
async fn first_revision_verified(
    api: &Api<GoServer>,
    revisions: &mut Revisions<'_>,
    name: &str,
) -> (String, Traffic) {
    let gs = wait_for(api, name, "a revision in status", DEADLINE, |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.revision.as_ref())
            .is_some()
    })
    .await
    .unwrap();
    let v1 = gs.status.unwrap().revision.unwrap();
    let traffic = Traffic::start(revisions.start(&v1), &[("/", 1)], 10);
    wait_for(api, name, "v1 verified", STEP_DEADLINE, |gs| {
        gs.status
            .as_ref()
            .is_some_and(|s| s.last_good_revision.as_deref() == Some(v1.as_str()))
    })
    .await
    .unwrap();
    (v1, traffic)
}

async fn set_image(api: &Api<GoServer>, name: &str, image: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": image}})),
    )
    .await
    .unwrap();
}

/// Waits for the canary of a revision other than `not`; its revision.
async fn canary_started(api: &Api<GoServer>, name: &str, not: &str) -> String {
    let gs = wait_for(api, name, "a canary", DEADLINE, |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.canary.as_ref())
            .is_some_and(|c| c.revision != not)
    })
    .await
    .unwrap();
    gs.status.unwrap().canary.unwrap().revision
}

/// Waits until the route's backends are `expected`: (Service, weight). A
/// single backend has the weight 1 the CRD defaults.
async fn route_backends(ns: &TestNamespace, name: &str, expected: &[(&str, Option<i32>)]) {
    let routes: Api<HttpRoute> = ns.api();
    let wanted: Vec<(String, Option<i32>)> = expected
        .iter()
        .map(|(service, weight)| ((*service).to_owned(), *weight))
        .collect();
    let description = format!("route backends {wanted:?}");
    wait_for(&routes, name, &description, STEP_DEADLINE, |route| {
        backends(route) == wanted
    })
    .await
    .unwrap();
}

fn backends(route: &HttpRoute) -> Vec<(String, Option<i32>)> {
    route.spec.rules.as_ref().unwrap()[0]
        .backend_refs
        .as_ref()
        .unwrap()
        .iter()
        .map(|b| (b.name.clone(), b.weight))
        .collect()
}

/// Waits until the canary Deployment asks for `replicas`; checks that its
/// pods are told apart from the stable ones.
async fn canary_deployment(ns: &TestNamespace, name: &str, revision: &str, replicas: i32) {
    let deployments: Api<Deployment> = ns.api();
    let canary = format!("{name}-canary");
    let description = format!("{canary} at {replicas} replicas");
    let deployment = wait_for(&deployments, &canary, &description, STEP_DEADLINE, |d| {
        d.spec.as_ref().and_then(|s| s.replicas) == Some(replicas)
    })
    .await
    .unwrap();
    let spec = deployment.spec.unwrap();
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/instance"], canary);
    assert_eq!(labels["gantry.dev/revision"], revision);
    assert_eq!(
        spec.selector.match_labels.unwrap()["app.kubernetes.io/instance"],
        canary
    );
    let service: Service = ns.api().get(&canary).await.unwrap();
    assert_eq!(
        service.spec.unwrap().selector.unwrap()["app.kubernetes.io/instance"],
        canary
    );
}

/// The operator, and a stand-in Gateway that accepts the routes of the
/// namespace as a Gateway controller would.
async fn start_operator(ns: &TestNamespace, prometheus: &Prometheus) -> Operator {
    gateway_crds::install(&ns.client).await.unwrap();
    let url = prometheus.url();
    Operator::start_with(ns, &["--prometheus-url", &url]).await
}

/// v2 passes both steps (10 %, then 50 %, the canary sized to match) and
/// is promoted: the stable Deployment takes it, then the canary and its
/// backend go. v3 fails its first step: its weight drops to 0 at once and,
/// without autoRollback, it stays there, Degraded, while v2 serves.
#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // one story, told in order
async fn a_good_canary_is_promoted_step_by_step_and_a_bad_one_aborted() {
    let ns = TestNamespace::new("canary").await;
    let prometheus = Prometheus::start();
    let _operator = start_operator(&ns, &prometheus).await;
    let gateway = GatewayStandIn::start(&ns);
    let mut revisions = Revisions::new(&prometheus, &ns.name);
    let api: Api<GoServer> = ns.api();
    api.create(
        &PostParams::default(),
        &goserver("shop", "shop:1", "6s", false),
    )
    .await
    .unwrap();
    let (v1, _v1_traffic) = first_revision_verified(&api, &mut revisions, "shop").await;
    route_backends(&ns, "shop", &[("shop", Some(1))]).await;

    // The Gateway has not taken the first step's weights: the step waits,
    // naming it, and measures nothing.
    gateway.hold();
    set_image(&api, "shop", "shop:2").await;
    let v2 = canary_started(&api, "shop", &v1).await;
    let _v2_traffic = Traffic::start(revisions.start(&v2), &[("/", 1)], 10);
    let waiting = wait_for(
        &api,
        "shop",
        "the step waiting for the Gateway",
        STEP_DEADLINE,
        |gs| {
            gs.status
                .as_ref()
                .and_then(|s| s.verification.as_ref())
                .is_some_and(|v| v.reason == "WaitingForGateway")
        },
    )
    .await
    .unwrap();
    let v = waiting.status.unwrap().verification.unwrap();
    assert!(v.message.contains("Gateway"), "{}", v.message);
    assert!(v.last_measured_at.is_none(), "{v:?}");
    gateway.release();
    route_backends(
        &ns,
        "shop",
        &[("shop", Some(90)), ("shop-canary", Some(10))],
    )
    .await;
    canary_deployment(&ns, "shop", &v2, 1).await;
    // The stable Deployment, its selector and the status stay on v1.
    assert_eq!(deployed(&ns, "shop").await, v1);
    let gs = api.get("shop").await.unwrap();
    let status = gs.status.unwrap();
    assert_eq!(status.revision.as_deref(), Some(v1.as_str()));
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/instance=shop,app.kubernetes.io/name=shop")
    );

    route_backends(
        &ns,
        "shop",
        &[("shop", Some(50)), ("shop-canary", Some(50))],
    )
    .await;
    canary_deployment(&ns, "shop", &v2, 2).await;

    let gs = wait_for(&api, "shop", "v2 promoted", STEP_DEADLINE, |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.canary.as_ref())
            .is_some_and(|c| c.phase == CanaryPhase::Promoted)
    })
    .await
    .unwrap();
    let status = gs.status.unwrap();
    let canary = status.canary.unwrap();
    assert_eq!(
        canary
            .verdicts
            .iter()
            .map(|v| (v.step, v.weight, v.verdict))
            .collect::<Vec<_>>(),
        [(0, 10, Verdict::Passed), (1, 50, Verdict::Passed)]
    );
    assert!(canary.verdicts.iter().all(|v| v.metrics[0].passed >= 2));
    assert_eq!(status.last_good_revision.as_deref(), Some(v2.as_str()));
    assert_eq!(status.history[0].revision, v2);
    assert_eq!(status.history[0].verdict, Verdict::Passed);
    wait_deployed(&ns, "shop", &v2).await;
    route_backends(&ns, "shop", &[("shop", Some(1))]).await;
    wait_for_deletion(&ns.api::<Deployment>(), "shop-canary", DEADLINE)
        .await
        .unwrap();
    wait_for_deletion(&ns.api::<Service>(), "shop-canary", DEADLINE)
        .await
        .unwrap();
    // One Verified Event each for v1 and v2, each naming its revision.
    let verified = events_about(&ns, "shop", "Verified").await;
    let related: Vec<Option<String>> = verified
        .iter()
        .map(|e| e.related.as_ref().and_then(|r| r.name.clone()))
        .collect();
    assert_eq!(verified.len(), 2, "{verified:?}");
    assert!(
        related.contains(&Some(v1.clone())) && related.contains(&Some(v2.clone())),
        "{related:?}"
    );

    // v3 answers 500 to every request: aborted at its first step.
    set_image(&api, "shop", "shop:3").await;
    let v3 = canary_started(&api, "shop", &v2).await;
    let _v3_traffic = Traffic::start(revisions.start(&v3), &[("/debug/panic", 1)], 10);
    let gs = wait_for(&api, "shop", "v3 aborted", STEP_DEADLINE, |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.canary.as_ref())
            .is_some_and(|c| c.phase == CanaryPhase::Aborted)
    })
    .await
    .unwrap();
    let status = gs.status.clone().unwrap();
    assert_eq!(
        status.canary_summary, None,
        "an aborted canary leaves the column"
    );
    let canary = status.canary.unwrap();
    assert_eq!((canary.step, canary.weight), (0, 0));
    assert_eq!(canary.verdicts[0].verdict, Verdict::Failed);
    assert_eq!(status.failed_revision, None, "no autoRollback");
    assert_eq!(status.revision.as_deref(), Some(v2.as_str()));
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "CanaryFailed"),
        "{degraded:?}"
    );
    assert!(
        degraded.message.contains("above max 0.05"),
        "{}",
        degraded.message
    );
    route_backends(
        &ns,
        "shop",
        &[("shop", Some(100)), ("shop-canary", Some(0))],
    )
    .await;
    canary_deployment(&ns, "shop", &v3, 0).await;
    assert_eq!(deployed(&ns, "shop").await, v2);
    let failed = events_about(&ns, "shop", "Failed").await;
    assert!(
        failed
            .iter()
            .any(|e| e.note.as_deref().is_some_and(|n| n.contains("step 1 of 2"))),
        "{failed:?}"
    );
}

/// A step holds while Prometheus is down, whatever its pause; the operator
/// killed then resumes the same step with the samples it had; a failure at
/// the second step with autoRollback holds the revision off and deletes
/// the canary.
#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // one story, told in order
async fn a_step_holds_without_prometheus_and_survives_an_operator_kill() {
    let ns = TestNamespace::new("canary-faults").await;
    let mut prometheus = Prometheus::start();
    let mut operator = start_operator(&ns, &prometheus).await;
    let gateway = GatewayStandIn::start(&ns);
    let mut revisions = Revisions::new(&prometheus, &ns.name);
    let api: Api<GoServer> = ns.api();
    api.create(
        &PostParams::default(),
        &goserver("cart", "cart:1", "8s", true),
    )
    .await
    .unwrap();
    let (v1, _v1_traffic) = first_revision_verified(&api, &mut revisions, "cart").await;

    set_image(&api, "cart", "cart:2").await;
    let v2 = canary_started(&api, "cart", &v1).await;
    let v2_address = revisions.start(&v2);
    let v2_traffic = Traffic::start(v2_address, &[("/", 1)], 10);
    let measured = wait_for(&api, "cart", "step 1 measured", STEP_DEADLINE, |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.verification.as_ref())
            .is_some_and(|v| v.revision == v2 && v.last_measured_at.is_some())
    })
    .await
    .unwrap();
    let started = measured
        .status
        .unwrap()
        .canary
        .unwrap()
        .step_started_at
        .unwrap();

    prometheus.stop();
    wait_for(&api, "cart", "the step held", STEP_DEADLINE, |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.verification.as_ref())
            .is_some_and(|v| v.reason == "PrometheusUnavailable")
    })
    .await
    .unwrap();
    // Held past its pause (8 s) and a few samples more: still step 1.
    let held = wait_for(&api, "cart", "the pause over", STEP_DEADLINE, |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.verification.as_ref())
            .and_then(|v| v.last_measured_at.as_ref())
            .is_some_and(|t| t.0.as_second() >= started.0.as_second() + 14)
    })
    .await
    .unwrap();
    let canary = held.status.as_ref().unwrap().canary.clone().unwrap();
    assert_eq!(
        (canary.phase, canary.step, canary.weight),
        (CanaryPhase::Progressing, 0, 10)
    );
    // What `kubectl get gs` shows in its Canary column.
    assert_eq!(
        held.status.as_ref().unwrap().canary_summary.as_deref(),
        Some("step 1/2, 10%")
    );
    assert!(canary.verdicts.is_empty());
    route_backends(
        &ns,
        "cart",
        &[("cart", Some(90)), ("cart-canary", Some(10))],
    )
    .await;

    // SIGKILL mid-step; Prometheus comes back; the next operator resumes
    // the same step, started when it was.
    operator.kill();
    prometheus.restart();
    operator = start_operator(&ns, &prometheus).await;
    let gs = wait_for(&api, "cart", "step 2", STEP_DEADLINE, |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.canary.as_ref())
            .is_some_and(|c| c.step == 1)
    })
    .await
    .unwrap();
    let canary = gs.status.unwrap().canary.unwrap();
    assert_eq!(canary.verdicts.len(), 1);
    assert_eq!(canary.verdicts[0].step, 0);
    assert!(
        canary.verdicts[0].decided_at.0 > started.0,
        "{:?}",
        canary.verdicts
    );
    // It found the canary there: nothing created again.
    let created: Vec<_> = operator
        .log()
        .into_iter()
        .filter(|l| l["message"] == "child applied" && l["action"] == "Created")
        .collect();
    assert!(
        created.is_empty(),
        "the restarted operator created children: {created:?}"
    );

    // At 50 % v2 starts failing: rolled back. The Gateway is slow to
    // reprogram: until it has taken the canary's weight 0, the canary
    // keeps its pods, and only after a drain is it deleted.
    gateway.hold();
    drop(v2_traffic);
    let _v2_errors = Traffic::start(v2_address, &[("/debug/panic", 1)], 10);
    let gs = wait_for(&api, "cart", "v2 rolled back", STEP_DEADLINE, |gs| {
        gs.status
            .as_ref()
            .is_some_and(|s| s.failed_revision.as_deref() == Some(v2.as_str()))
    })
    .await
    .unwrap();
    route_backends(
        &ns,
        "cart",
        &[("cart", Some(100)), ("cart-canary", Some(0))],
    )
    .await;
    let routes: Api<HttpRoute> = ns.api();
    let zero = routes
        .get("cart")
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap();
    let canary: Deployment = ns.api().get("cart-canary").await.unwrap();
    assert_eq!(
        canary.spec.unwrap().replicas,
        Some(2),
        "the canary keeps its pods while the Gateway has not taken weight 0"
    );
    assert!(
        gs.status
            .as_ref()
            .and_then(|s| s.canary.as_ref())
            .is_some_and(|c| c.drain_until.is_none()),
        "{:?}",
        gs.status
    );
    gateway.release();
    let status = gs.status.unwrap();
    let canary = status.canary.unwrap();
    assert_eq!(
        (canary.phase, canary.step, canary.weight),
        (CanaryPhase::Aborted, 1, 0)
    );
    assert_eq!(status.history[0].verdict, Verdict::RolledBack);
    route_backends(&ns, "cart", &[("cart", Some(1))]).await;
    wait_for_deletion(&ns.api::<Deployment>(), "cart-canary", DEADLINE)
        .await
        .unwrap();
    assert!(
        gateway
            .accepted()
            .iter()
            .any(|(route, generation)| route == "cart" && *generation >= zero),
        "deleted before the Gateway took weight 0: {:?}",
        gateway.accepted()
    );
    assert_eq!(deployed(&ns, "cart").await, v1);
    let rolled_back = events_about(&ns, "cart", "RolledBack").await;
    assert_eq!(rolled_back.len(), 1, "{rolled_back:?}");
    drop(operator);
}

/// A GoServer named like another's canary waits, Degraded `NameConflict`,
/// and takes nothing of the other's. (The documented example is admitted
/// and reconciled beside them.)
#[tokio::test(flavor = "multi_thread")]
async fn a_name_taken_by_another_canary_is_a_conflict() {
    let ns = TestNamespace::new("canary-names").await;
    let prometheus = Prometheus::start();
    let _operator = start_operator(&ns, &prometheus).await;
    let _gateway = GatewayStandIn::start(&ns);
    kubectl_apply(&ns, "examples/canary.yaml");
    let mut revisions = Revisions::new(&prometheus, &ns.name);
    let api: Api<GoServer> = ns.api();
    api.create(
        &PostParams::default(),
        &goserver("web", "web:1", "1h", true),
    )
    .await
    .unwrap();
    let (v1, _traffic) = first_revision_verified(&api, &mut revisions, "web").await;
    set_image(&api, "web", "web:2").await;
    canary_started(&api, "web", &v1).await;
    wait_for(
        &ns.api::<Deployment>(),
        "web-canary",
        "the canary Deployment",
        DEADLINE,
        |_| true,
    )
    .await
    .unwrap();

    let plain: GoServer = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "web-canary"},
        "spec": {"image": "other:1"},
    }))
    .unwrap();
    api.create(&PostParams::default(), &plain).await.unwrap();
    let gs = wait_for(&api, "web-canary", "NameConflict", DEADLINE, |gs| {
        gs.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.reason == "NameConflict")
        })
    })
    .await
    .unwrap();
    let message = &gs
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap()
        .message;
    assert!(
        message.contains("Deployment web-canary belongs to GoServer web"),
        "{message}"
    );
    // The canary is still web's, running web's new revision.
    let canary: Deployment = ns.api().get("web-canary").await.unwrap();
    let owner = &canary.metadata.owner_references.unwrap()[0];
    assert_eq!(owner.name, "web");
    let image: Value = serde_json::to_value(canary.spec.unwrap().template.spec).unwrap();
    assert_eq!(image["containers"][0]["image"], "web:2");

    let example = wait_for(&api, "shop", "the example reconciled", DEADLINE, |gs| {
        gs.status.as_ref().is_some_and(|s| s.revision.is_some())
    })
    .await
    .unwrap();
    let rollout = example.spec.rollout.unwrap();
    assert_eq!(rollout.steps.len(), 2);
}

/// The mean latency of one revision's pods of one track over one interval
/// (see `operator_rollout.rs`).
const MEAN_LATENCY: &str = r#"sum(rate(http_request_duration_seconds_sum{namespace="${namespace}",revision="${revision}",track="${track}"}[${interval}])) / sum(rate(http_request_duration_seconds_count{namespace="${namespace}",revision="${revision}",track="${track}"}[${interval}]))"#;

/// The comparative judge on a canary: beside each canary runs a baseline,
/// fresh pods of the stable revision (`shop-baseline`, track `baseline`)
/// with the same share of the route. v2, as fast as its baseline, passes
/// and is promoted, the baseline going with the canary; v3, 30 % slower
/// than its baseline (real gantry-server processes sleeping in
/// `/debug/sleep`), is judged High and aborted.
#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // one story, told in order
async fn a_canary_is_judged_against_a_baseline_started_beside_it() {
    let ns = TestNamespace::new("canary-judged").await;
    let prometheus = Prometheus::start();
    let _operator = start_operator(&ns, &prometheus).await;
    let _gateway = GatewayStandIn::start(&ns);
    let mut revisions = Revisions::new(&prometheus, &ns.name);
    let api: Api<GoServer> = ns.api();
    let mut gs = goserver("shop", "shop:1", "18s", true);
    let rollout = gs.spec.rollout.as_mut().unwrap();
    rollout.steps = serde_json::from_value(json!([{"weight": 20, "pause": "18s"}])).unwrap();
    let verification = rollout.verification.as_mut().unwrap();
    verification.warmup = "3s".to_owned();
    verification.interval = "3s".to_owned();
    verification.min_samples = 4;
    verification.metrics = serde_json::from_value(json!([
        {"name": "latency", "query": MEAN_LATENCY, "compare": {"allowed": "10%"}},
        {"name": "error-rate", "query": ERROR_RATE, "max": 0.05},
    ]))
    .unwrap();
    api.create(&PostParams::default(), &gs).await.unwrap();
    let sleep = |ms: u32| format!("/debug/sleep?ms={ms}");
    let (v1, v1_traffic) = first_revision_verified(&api, &mut revisions, "shop").await;

    // v2: the canary and its baseline (v1 on the baseline track) answer
    // alike.
    set_image(&api, "shop", "shop:2").await;
    let v2 = canary_started(&api, "shop", &v1).await;
    route_backends(
        &ns,
        "shop",
        &[
            ("shop", Some(60)),
            ("shop-canary", Some(20)),
            ("shop-baseline", Some(20)),
        ],
    )
    .await;
    let deployments: Api<Deployment> = ns.api();
    let baseline = deployments.get("shop-baseline").await.unwrap();
    let spec = baseline.spec.unwrap();
    assert_eq!(spec.replicas, Some(1), "the canary's size");
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["gantry.dev/revision"], v1);
    assert_eq!(labels["gantry.dev/track"], "baseline");
    let canary_traffic = Traffic::start(revisions.start(&v2), &[(&sleep(20), 1)], 10);
    let baseline_traffic = Traffic::start(
        revisions.start_on_track(&v1, Some("baseline")),
        &[(&sleep(20), 1)],
        10,
    );
    let gs = wait_for(&api, "shop", "v2 promoted", STEP_DEADLINE, |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.canary.as_ref())
            .is_some_and(|c| c.revision == v2 && c.phase == CanaryPhase::Promoted)
    })
    .await
    .unwrap();
    let canary = gs.status.unwrap().canary.unwrap();
    let latency = canary.verdicts[0].metrics[0].comparison.clone().unwrap();
    assert_eq!(format!("{:?}", latency.class), "Pass", "{latency:?}");
    assert!(canary.verdicts[0].metrics[0].baseline_samples.len() >= 4);
    // The baseline goes with the canary.
    wait_for_deletion(&deployments, "shop-baseline", DEADLINE)
        .await
        .unwrap();
    wait_for_deletion(&ns.api::<Service>(), "shop-baseline", DEADLINE)
        .await
        .unwrap();
    drop((v1_traffic, canary_traffic, baseline_traffic));

    // v3 sleeps 26 ms where its baseline (v2 now) sleeps 20: aborted.
    set_image(&api, "shop", "shop:3").await;
    let v3 = canary_started(&api, "shop", &v2).await;
    let _stable_traffic = Traffic::start(revisions.start(&v2), &[("/", 1)], 5);
    let _canary_traffic = Traffic::start(revisions.start(&v3), &[(&sleep(26), 1)], 10);
    let _baseline_traffic = Traffic::start(
        revisions.start_on_track(&v2, Some("baseline")),
        &[(&sleep(20), 1)],
        10,
    );
    let gs = wait_for(&api, "shop", "v3 aborted", STEP_DEADLINE, |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.canary.as_ref())
            .is_some_and(|c| c.revision == v3 && c.phase == CanaryPhase::Aborted)
    })
    .await
    .unwrap();
    let status = gs.status.unwrap();
    assert_eq!(status.failed_revision.as_deref(), Some(v3.as_str()));
    let canary = status.canary.unwrap();
    let latency = canary.verdicts[0].metrics[0].comparison.clone().unwrap();
    assert_eq!(format!("{:?}", latency.class), "High", "{latency:?}");
    let comparison = status.verification.unwrap().comparison.unwrap();
    assert_eq!(comparison.baseline_revision.as_deref(), Some(v2.as_str()));
    println!("v3 judged: {}", comparison.message);
    route_backends(
        &ns,
        "shop",
        &[
            ("shop", Some(100)),
            ("shop-canary", Some(0)),
            ("shop-baseline", Some(0)),
        ],
    )
    .await;
}
