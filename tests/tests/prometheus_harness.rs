//! The harness of the rollout-verification tests, proved on its own: a real
//! Prometheus scrapes two gantry-server processes labelled as a good and a
//! bad revision, and the error-rate query the operator runs tells them
//! apart; taking Prometheus away makes queries fail, and bringing it back
//! brings its data and targets back. Needs no cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use gantry_e2e::prometheus::{Prometheus, Target};
use gantry_e2e::server::{ServerProcess, Traffic, drive};

/// A bound on every wait: generous, because scrapes, `rate` windows and a
/// busy machine all add up; a hang fails, a slow run does not.
const PATIENCE: Duration = Duration::from_secs(120);

/// The share of a revision's requests that answered 5xx over the last 30 s,
/// as a `GoServer`'s error-rate metric asks for it.
fn error_ratio(revision: &str) -> String {
    format!(
        "sum(rate(http_requests_total{{namespace=\"e2e\",revision=\"{revision}\",status=~\"5..\"}}[30s])) \
         / sum(rate(http_requests_total{{namespace=\"e2e\",revision=\"{revision}\"}}[30s]))"
    )
}

// Several threads: starting a process or restarting Prometheus blocks one
// while it waits, and the traffic must keep flowing meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_tells_a_bad_revision_from_a_good_one() {
    let mut prometheus = Prometheus::start();
    let good = ServerProcess::start("good-1", &[]);
    let bad = ServerProcess::start("bad-2", &[]);
    prometheus.set_targets(&[
        Target::new(
            good.address(),
            &[("namespace", "e2e"), ("revision", "good-1")],
        ),
        Target::new(
            bad.address(),
            &[("namespace", "e2e"), ("revision", "bad-2")],
        ),
    ]);

    // A query Prometheus refuses is an error that says why.
    let refused = prometheus.query("sum(").await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("bad_data")),
        "{refused:?}"
    );

    // The driver itself: every request answered, each with its status.
    let answered = drive(bad.address(), "/debug/panic", 3).await.unwrap();
    assert_eq!(answered.get(&500), Some(&3), "{answered:?}");

    let _good_traffic = Traffic::start(good.address(), &[("/", 1)], 10);
    // One request in four hits the panicking handler.
    let bad_traffic = Traffic::start(bad.address(), &[("/", 3), ("/debug/panic", 1)], 10);

    for revision in ["good-1", "bad-2"] {
        let up = format!("up{{namespace=\"e2e\",revision=\"{revision}\"}}");
        prometheus
            .wait_for_value(&up, "1 (scraped)", PATIENCE, |v| v > 0.5)
            .await
            .unwrap();
    }
    bad_revision_fails(&prometheus, &bad_traffic).await;
    good_revision_is_clean(&prometheus).await;
    outage_and_recovery(&mut prometheus).await;
}

async fn bad_revision_fails(prometheus: &Prometheus, bad_traffic: &Traffic) {
    // The bad revision: a share of its requests fail. (The denominator also
    // counts Prometheus's own scrapes of /metrics, as it would in a cluster.)
    let ratio = prometheus
        .wait_for_value(&error_ratio("bad-2"), "a ratio above 0", PATIENCE, |v| {
            v > 0.0
        })
        .await
        .unwrap();
    assert!(
        ratio < 1.0,
        "bad-2's error ratio {ratio} counts its 200s too"
    );
    let statuses = bad_traffic.statuses();
    assert!(
        statuses.contains_key(&200) && statuses.contains_key(&500),
        "{statuses:?}"
    );

    // The series carry the target's labels beside the server's own.
    let series = prometheus
        .query("http_requests_total{revision=\"bad-2\",route=\"/debug/panic\"}")
        .await
        .unwrap();
    let labels: BTreeSet<&str> = series["result"][0]["metric"]
        .as_object()
        .unwrap_or_else(|| panic!("no /debug/panic series: {series}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        labels,
        BTreeSet::from([
            "__name__",
            "instance",
            "job",
            "method",
            "namespace",
            "revision",
            "route",
            "status"
        ])
    );
}

async fn good_revision_is_clean(prometheus: &Prometheus) {
    // The good revision: it serves, and no 5xx series exists at all, so the
    // ratio is no data rather than 0; `or vector(0)` makes it 0.
    prometheus
        .wait_for_value(
            "sum(rate(http_requests_total{namespace=\"e2e\",revision=\"good-1\"}[30s]))",
            "a request rate above 0",
            PATIENCE,
            |v| v > 0.0,
        )
        .await
        .unwrap();
    let no_data = prometheus.query(&error_ratio("good-1")).await.unwrap();
    assert_eq!(no_data["result"], serde_json::json!([]), "{no_data}");
    let zero = prometheus
        .wait_for_series(
            "(sum(rate(http_requests_total{namespace=\"e2e\",revision=\"good-1\",status=~\"5..\"}[30s])) or vector(0)) \
             / sum(rate(http_requests_total{namespace=\"e2e\",revision=\"good-1\"}[30s]))",
            PATIENCE,
        )
        .await
        .unwrap();
    assert!(zero == 0.0, "good-1's error ratio is {zero}");
}

async fn outage_and_recovery(prometheus: &mut Prometheus) {
    // Prometheus taken away: queries fail (an error, not an empty answer).
    prometheus.stop();
    let refused = prometheus.query("up").await;
    assert!(
        refused.is_err(),
        "a stopped Prometheus answered: {refused:?}"
    );

    // Back on the same address with the same data: what was scraped before
    // the outage is still there...
    prometheus.restart();
    let before = prometheus
        .query("http_requests_total{revision=\"bad-2\",route=\"/debug/panic\"}")
        .await
        .unwrap();
    assert_eq!(
        before["result"].as_array().map(Vec::len),
        Some(1),
        "{before}"
    );
    // ...and with the same targets, scraping resumes: both revisions get a
    // fresh sample (the old ones would still show within the lookback).
    for revision in ["good-1", "bad-2"] {
        let age = format!("time() - timestamp(up{{namespace=\"e2e\",revision=\"{revision}\"}})");
        prometheus
            .wait_for_value(&age, "a scrape in the last 5 s", PATIENCE, |v| v < 5.0)
            .await
            .unwrap();
    }
    prometheus
        .wait_for_value(&error_ratio("bad-2"), "a ratio above 0", PATIENCE, |v| {
            v > 0.0
        })
        .await
        .unwrap();
}
