//! The metrics as the operator serves them, family by family.

use super::*;

#[test]
fn reconciles_are_counted_by_result_and_category() {
    let metrics = Metrics::new();
    metrics.reconciled(Duration::from_millis(20), None);
    metrics.reconciled(Duration::from_millis(30), Some("kube_api"));
    metrics.set_leader(true);
    let text = metrics.encode();
    assert!(
        text.contains("gantry_reconciles_total{result=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("gantry_reconciles_total{result=\"error\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("gantry_reconcile_errors_total{category=\"kube_api\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("gantry_reconcile_duration_seconds_count 2"),
        "{text}"
    );
    assert!(text.contains("gantry_leader 1"), "{text}");
}

fn goserver(value: serde_json::Value) -> GoServer {
    serde_json::from_value(value).expect("a GoServer")
}

#[test]
#[allow(clippy::too_many_lines)] // one scene, every family checked against it
fn goserver_series_follow_the_cache() {
    use kube::runtime::watcher::Event;
    let metrics = Metrics::new();
    let (store, mut writer) = kube::runtime::reflector::store::<GoServer>();
    assert!(
        !metrics.encode().contains("gantry_goserver"),
        "nothing before the controller runs"
    );
    metrics.export_goservers(store);
    let web = goserver(serde_json::json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"image": "registry.example.com/web:2"},
        "status": {
            "revision": "web-bbbbbbbbbb",
            "failedRevision": "web-cccccccccc",
            "desiredReplicas": 3, "readyReplicas": 2, "updatedReplicas": 3,
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "RolloutInProgress", "message": "",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "Degraded", "status": "True", "reason": "RolledBack", "message": "",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"},
            ],
            "history": [
                {"revision": "web-cccccccccc", "image": "registry.example.com/web:3",
                 "deployedAt": "2026-01-01T00:00:00Z", "verdict": "RolledBack",
                 "comparedWith": "web-bbbbbbbbbb",
                 "metrics": [{"name": "latency", "value": 0.026, "relativeChange": 0.68, "class": "High"},
                             {"name": "error-rate", "value": 0.25}]},
                {"revision": "web-bbbbbbbbbb", "image": "registry.example.com/web:2",
                 "deployedAt": "2025-12-01T00:00:00Z", "verdict": "Passed"},
            ],
            "canary": {"revision": "web-cccccccccc", "phase": "Aborted", "step": 1, "weight": 0},
            "verification": {
                "revision": "web-cccccccccc", "phase": "Failed", "reason": "Failed", "message": "",
                "metrics": [{"name": "error-rate", "passed": 1, "failed": 3, "inconclusive": 0,
                             "lastValue": 0.25}],
            },
        },
    }));
    // Held past its deadline, with a decision still to deliver.
    let api = goserver(serde_json::json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"image": "registry.example.com/api:1"},
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Ready", "message": "",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"},
            ],
            "verification": {
                "revision": "api-dddddddddd", "phase": "Measuring", "reason": "NoData",
                "overdueAt": "2026-01-01T01:00:00Z",
            },
            "outbox": [{
                "id": "d1", "event": "Verified", "revision": "api-aaaaaaaaaa", "message": "m",
                "decidedAt": "2026-01-01T00:00:00Z", "recorded": true,
                "pending": [{"receiver": "ci", "attempts": 3}],
            }],
        },
    }));
    writer.apply_watcher_event(&Event::Apply(web.clone()));
    writer.apply_watcher_event(&Event::Apply(api));
    let text = metrics.encode();
    for line in [
        r#"gantry_goservers{condition="Ready",status="False"} 1"#,
        r#"gantry_goservers{condition="Ready",status="True"} 1"#,
        r#"gantry_goservers{condition="Degraded",status="True"} 1"#,
        // The image of the revision in force, from its history entry,
        // not the spec's.
        r#"gantry_goserver_revision_info{namespace="shop",name="web",revision="web-bbbbbbbbbb",image="registry.example.com/web:2"} 1"#,
        r#"gantry_goserver_condition{namespace="shop",name="web",type="Degraded",status="True"} 1"#,
        r#"gantry_goserver_condition{namespace="shop",name="web",type="Degraded",status="False"} 0"#,
        r#"gantry_goserver_condition{namespace="shop",name="api",type="Ready",status="True"} 1"#,
        r#"gantry_goserver_verification_overdue{namespace="shop",name="api",revision="api-dddddddddd"} 1"#,
        r#"gantry_goserver_decisions_untold{namespace="shop",name="api"} 1"#,
        r#"gantry_goserver_replicas_desired{namespace="shop",name="web"} 3"#,
        r#"gantry_goserver_replicas_ready{namespace="shop",name="web"} 2"#,
        r#"gantry_goserver_failed_revision_info{namespace="shop",name="web",revision="web-cccccccccc"} 1"#,
        r#"gantry_goserver_revision_verdict{namespace="shop",name="web",revision="web-cccccccccc",verdict="RolledBack"} 1"#,
        r#"gantry_goserver_revision_previous{namespace="shop",name="web",revision="web-cccccccccc",previous="web-bbbbbbbbbb"} 1"#,
        r#"gantry_goserver_verification_measurements{namespace="shop",name="web",revision="web-cccccccccc",metric="error-rate",result="failed"} 3"#,
        r#"gantry_goserver_verification_value{namespace="shop",name="web",revision="web-cccccccccc",metric="error-rate"} 0.25"#,
        r#"gantry_goserver_canary_weight{namespace="shop",name="web",revision="web-cccccccccc",phase="Aborted"} 0"#,
        // "+68 % latency against web-bbbbbbbbbb"; the metric without a
        // comparison has no such series.
        r#"gantry_goserver_revision_comparison{namespace="shop",name="web",revision="web-cccccccccc",baseline="web-bbbbbbbbbb",metric="latency",class="High"} 0.68"#,
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(!text.contains(r#"metric="error-rate",class"#), "{text}");
    // The oldest revision has nothing to compare with.
    assert!(
        !text.contains(r#"revision="web-bbbbbbbbbb",previous"#),
        "{text}"
    );
    // No revision yet: no revision series for it.
    assert!(
        !text.contains(r#"revision_info{namespace="shop",name="api""#),
        "{text}"
    );
    // Neither held nor owed anything: no such series.
    assert!(
        !text.contains(r#"verification_overdue{namespace="shop",name="web""#)
            && !text.contains(r#"decisions_untold{namespace="shop",name="web""#),
        "{text}"
    );
    // Gone from the cache, gone from the next scrape.
    writer.apply_watcher_event(&Event::Delete(web));
    let text = metrics.encode();
    assert!(!text.contains(r#"name="web""#), "{text}");
    assert!(text.contains(r#"name="api""#), "{text}");
}
