//! The shipped alerting rules (deploy/monitoring/rules.yaml) against a real
//! Prometheus that scrapes a real operator and a real gantry-server on
//! loopback, labelled as a cluster's scrape configuration labels a pod
//! (`namespace`, and `revision` from the pod label `gantry.dev/revision`).
//!
//! `promtool test rules` proves each alert's logic on made-up series; this
//! proves the rules meet the series the processes really export: every
//! expression is valid, every metric it names has series (a renamed metric
//! or label would leave an alert silent forever), the 5xx alert fires for
//! the GoServer's own revision once a third of its requests panic, and the
//! others stay quiet on a healthy GoServer.

mod operator_support;

use std::collections::BTreeSet;
use std::time::Duration;

use gantry_e2e::TestNamespace;
use gantry_e2e::operator::root;
use gantry_e2e::prometheus::{Prometheus, Target};
use gantry_e2e::server::{ServerProcess, Traffic};
use gantry_operator::crd::GoServer;
use operator_support::{Operator, create_ready};
use serde_json::{Value, json};

/// Long enough for a few scrapes and two samples in every `rate` window.
const SERIES_TIMEOUT: Duration = Duration::from_secs(90);

/// Metrics that have series only after an event this test does not
/// provoke: a rollback. The rollout test that rolls back checks this one
/// against the operator's `/metrics`.
const AFTER_A_ROLLBACK: [&str; 1] = ["gantry_goserver_failed_revision_info"];

/// `(alert, expression)` for every rule in the rules file.
fn alerts() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("deploy/monitoring/rules.yaml"))
        .expect("reading deploy/monitoring/rules.yaml");
    let file: Value = serde_norway::from_str(&text).expect("rules.yaml is YAML");
    let alerts: Vec<(String, String)> = file["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").iter())
        .map(|rule| {
            (
                rule["alert"].as_str().expect("an alert name").to_owned(),
                rule["expr"].as_str().expect("an expression").to_owned(),
            )
        })
        .collect();
    assert!(alerts.len() >= 6, "{alerts:?}");
    alerts
}

/// The metric names an expression uses: Gantry's and the server's.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("gantry_") || word.starts_with("http_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names(
            "sum by (ns) (rate(http_requests_total{status=~\"5..\"}[5m])) * on (ns) gantry_goserver_revision_info > 0.005"
        ),
        BTreeSet::from([
            "gantry_goserver_revision_info".to_owned(),
            "http_requests_total".to_owned()
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn alert_rules_meet_the_real_series() {
    let ns = TestNamespace::new("alert-rules").await;
    let operator = Operator::start(&ns).await;
    let gs: GoServer = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "web"},
        "spec": {"image": "registry.example.com/web:1"},
    }))
    .expect("a GoServer");
    let gs = create_ready(&ns, &gs).await;
    let revision = gs
        .status
        .and_then(|s| s.revision)
        .expect("a Ready GoServer has a revision");

    // The GoServer's pod, standing in as a loopback process, with the
    // labels a scrape of the real pod would give; and the operator.
    let server = ServerProcess::start("web", &[]);
    let prometheus = Prometheus::start();
    prometheus.set_targets(&[
        Target::new(
            server.address(),
            &[
                ("namespace", ns.name.as_str()),
                ("revision", revision.as_str()),
            ],
        ),
        Target::new(operator.http_address(), &[("job", "gantry-operator")]),
    ]);
    // A third of the requests panic: a 5xx ratio far above the 0.5 % gate.
    let _traffic = Traffic::start(server.address(), &[("/", 2), ("/debug/panic", 1)], 10);

    let alerts = alerts();
    for (alert, expr) in &alerts {
        prometheus
            .query(expr)
            .await
            .unwrap_or_else(|e| panic!("{alert}: Prometheus refuses its expression: {e:#}"));
        for name in metric_names(expr) {
            if AFTER_A_ROLLBACK.contains(&name.as_str()) {
                continue;
            }
            prometheus
                .wait_for_value(
                    &format!("count({name})"),
                    "some series",
                    SERIES_TIMEOUT,
                    |n| n > 0.0,
                )
                .await
                .unwrap_or_else(|e| panic!("{alert} uses {name}, which has no series: {e:#}"));
        }
    }

    // The 5xx alert's expression returns the GoServer, by name, for its
    // revision in force.
    let (_, error_ratio) = alerts
        .iter()
        .find(|(alert, _)| alert == "GoServerErrorRatioHigh")
        .expect("the 5xx alert");
    let ratio = prometheus
        .wait_for_value(
            &format!(
                "max by (namespace, name, revision) ({error_ratio}) \
                 and on (name) {{name=\"web\"}}"
            ),
            "a ratio above the gate",
            SERIES_TIMEOUT,
            |ratio| ratio > 0.005,
        )
        .await
        .expect("the 5xx alert's expression returns the GoServer");
    assert!(ratio < 1.0, "only a third of the requests fail: {ratio}");
    let fired = prometheus.query(error_ratio).await.expect("the 5xx alert");
    let sample = &fired["result"][0]["metric"];
    assert_eq!(sample["namespace"], ns.name.as_str(), "{fired}");
    assert_eq!(sample["name"], "web", "{fired}");
    assert_eq!(sample["revision"], revision.as_str(), "{fired}");

    // Nothing else is wrong, so nothing else fires. (`for:` durations are
    // not part of an expression: this is what the alert would hold.)
    for (alert, expr) in alerts.iter().filter(|(a, _)| a != "GoServerErrorRatioHigh") {
        let data = prometheus.query(expr).await.expect("a valid expression");
        assert_eq!(
            data["result"],
            json!([]),
            "{alert} holds on a healthy GoServer and a leading operator"
        );
    }
}
