//! Prometheus misbehaving under a verification: slow past the query
//! timeout, answering 5xx, restarted with its data gone, and the counters
//! of the revision's pods starting again from 0. None of these is the
//! application failing: each holds the verification (or is read through,
//! as `rate()` reads a counter reset), and the revision is judged once
//! Prometheus answers again.

use std::time::Duration;

use crate::operator_support::{DEADLINE, Operator};
use gantry_e2e::prometheus::Prometheus;
use gantry_e2e::scripted_prometheus::{Answer, ScriptedPrometheus};
use gantry_e2e::server::{Revisions, Traffic};
use gantry_e2e::{TestNamespace, wait_for};
use gantry_operator::crd::{GoServer, VerificationPhase};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

fn goserver(name: &str, verification: &Value) -> GoServer {
    serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": name},
        "spec": {"image": format!("{name}:1"), "replicas": 2, "rollout": {"verification": verification}},
    }))
    .unwrap()
}

/// The verification's reason, once it is `reason`.
async fn reason(api: &Api<GoServer>, name: &str, reason: &str) -> GoServer {
    wait_for(api, name, reason, DEADLINE, |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.verification.as_ref())
            .is_some_and(|v| v.reason == reason)
    })
    .await
    .unwrap()
}

/// Slow past its timeout, then 503: `PrometheusUnavailable` each time, no
/// sample counted either way; answering again, the revision passes.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_or_failing_prometheus_holds_the_verification() {
    let ns = TestNamespace::new("prom-slow").await;
    let prometheus = ScriptedPrometheus::start().await;
    let _operator = Operator::start(&ns).await;
    let api: Api<GoServer> = ns.api();
    let verification = json!({
        "prometheus": {"url": prometheus.url(), "timeout": "1s"},
        "warmup": "1s", "interval": "1s", "window": "2s",
        "minSamples": 2, "failureLimit": 0,
        "metrics": [{"name": "error-rate", "query": r#"errors{revision="${revision}"}"#, "max": 0.05}],
    });
    prometheus.answer_others(Answer::Slow(Duration::from_secs(3), 0.0));
    api.create(&PostParams::default(), &goserver("slow", &verification))
        .await
        .unwrap();
    let gs = reason(&api, "slow", "PrometheusUnavailable").await;
    let v = gs.status.unwrap().verification.unwrap();
    assert!(v.message.contains("no answer within 1s"), "{}", v.message);
    prometheus.answer_others(Answer::Error(
        503,
        "unavailable",
        "the TSDB is still loading".to_owned(),
    ));
    let gs = wait_for(&api, "slow", "a 503", DEADLINE, |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.verification.as_ref())
            .is_some_and(|v| v.message.contains("503"))
    })
    .await
    .unwrap();
    let v = gs.status.unwrap().verification.unwrap();
    assert_eq!(v.reason, "PrometheusUnavailable");
    assert!(v.metrics.iter().all(|m| m.passed + m.failed == 0), "{v:?}");
    prometheus.answer_others(Answer::Value(0.0));
    let gs = wait_for(&api, "slow", "verified", DEADLINE, |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.verification.as_ref())
            .is_some_and(|v| v.phase == VerificationPhase::Passed)
    })
    .await
    .unwrap();
    assert_eq!(
        gs.status.unwrap().verification.unwrap().metrics[0].failed,
        0
    );
}

/// The guide's 5xx ratio, against the real Prometheus: the revision's pod
/// restarted mid-window (its counters from 0: `rate()` reads through the
/// reset), then Prometheus restarted with its data gone (no data, then data
/// again). Nothing fails; the revision passes on the samples it gets.
#[tokio::test(flavor = "multi_thread")]
async fn a_counter_reset_and_an_emptied_prometheus_are_not_failures() {
    let ns = TestNamespace::new("prom-reset").await;
    let mut prometheus = Prometheus::start();
    let url = prometheus.url();
    let _operator = Operator::start_with(&ns, &["--prometheus-url", &url]).await;
    let api: Api<GoServer> = ns.api();
    let error_rate = r#"(sum(rate(http_requests_total{namespace="${namespace}",revision="${revision}",status=~"5.."}[10s])) or vector(0)) / sum(rate(http_requests_total{namespace="${namespace}",revision="${revision}"}[10s]))"#;
    let verification = json!({
        "warmup": "2s", "interval": "2s", "window": "16s",
        "minSamples": 4, "failureLimit": 0,
        "metrics": [{"name": "error-rate", "query": error_rate, "max": 0.05}],
    });
    api.create(&PostParams::default(), &goserver("reset", &verification))
        .await
        .unwrap();
    let v1 = wait_for(&api, "reset", "a revision", DEADLINE, |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.revision.as_ref())
            .is_some()
    })
    .await
    .unwrap()
    .status
    .unwrap()
    .revision
    .unwrap();
    let mut revisions = Revisions::new(&prometheus, &ns.name);
    let address = revisions.start(&v1);
    let _traffic = Traffic::start(address, &[("/", 1)], 10);
    let measured = |at_least: i32| {
        move |gs: &GoServer| {
            gs.status
                .as_ref()
                .and_then(|s| s.verification.as_ref())
                .is_some_and(|v| v.metrics.first().is_some_and(|m| m.passed >= at_least))
        }
    };
    wait_for(&api, "reset", "a passed sample", DEADLINE, measured(1))
        .await
        .unwrap();
    // The pod restarts: its counters begin again at 0.
    revisions.restart(&v1);
    wait_for(
        &api,
        "reset",
        "samples after the reset",
        DEADLINE,
        measured(3),
    )
    .await
    .unwrap();
    // Prometheus loses its data.
    prometheus.restart_empty();
    let gs = wait_for(&api, "reset", "verified", Duration::from_secs(120), |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.verification.as_ref())
            .is_some_and(|v| {
                matches!(
                    v.phase,
                    VerificationPhase::Passed | VerificationPhase::Failed
                )
            })
    })
    .await
    .unwrap();
    let v = gs.status.unwrap().verification.unwrap();
    assert_eq!(v.phase, VerificationPhase::Passed, "{v:?}");
    assert_eq!(v.metrics[0].failed, 0, "{v:?}");
}
