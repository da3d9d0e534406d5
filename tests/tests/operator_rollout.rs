//! Rollout verification end to end: the operator as a real process, a real
//! Prometheus on loopback scraping real gantry-server processes that stand
//! in for each revision's pods (labelled with the revision the operator
//! reports), real traffic, and a webhook receiver in the test.
//!
//! Pods in the test cluster run no containers, so the servers are started
//! by the test once the operator names a revision; everything the operator
//! decides it decides from Prometheus, as it would in a cluster.

mod operator_support;

use std::time::Duration;

use gantry_e2e::prometheus::Prometheus;
use gantry_e2e::receiver::Receiver;
use gantry_e2e::server::{Revisions, Traffic};
use gantry_e2e::{TestNamespace, wait_for, wait_until};
use gantry_operator::crd::GoServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use operator_support::{
    DEADLINE, Operator, deployed, events_about, verifying_none_of, wait_deployed,
};
use serde_json::{Value, json};

/// The guide's gate: the share of 5xx answers of one revision. `or
/// vector(0)` makes a revision without errors 0, not no data; a revision
/// without any traffic stays no data.
const ERROR_RATE: &str = r#"(sum(rate(http_requests_total{namespace="${namespace}",revision="${revision}",status=~"5.."}[10s])) or vector(0)) / sum(rate(http_requests_total{namespace="${namespace}",revision="${revision}"}[10s]))"#;

/// A verification quick enough for a test: measured every 2 s for 10 s.
fn verification(webhook: Option<&str>, no_data: &str) -> Value {
    let mut v = json!({
        "warmup": "2s", "interval": "2s", "window": "10s",
        "minSamples": 3, "failureLimit": 0,
        "metrics": [{"name": "error-rate", "query": ERROR_RATE, "max": 0.05, "noData": no_data}],
    });
    if let Some(url) = webhook {
        v["webhook"] = json!({"url": url});
    }
    v
}

fn goserver(name: &str, image: &str, verification: &Value) -> GoServer {
    serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": name},
        "spec": {
            "image": image,
            "replicas": 2,
            "rollout": {"verification": verification},
        },
    }))
    .unwrap()
}

/// Waits for the GoServer's status to report a revision other than `not`.
async fn next_revision(api: &Api<GoServer>, name: &str, not: Option<&str>) -> String {
    let gs = wait_for(api, name, "a new revision in status", DEADLINE, |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.revision.as_deref())
            .is_some_and(|r| Some(r) != not)
    })
    .await
    .unwrap();
    gs.status.unwrap().revision.unwrap()
}

fn condition<'a>(
    gs: &'a GoServer,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    gs.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

fn has(gs: &GoServer, type_: &str, status: &str, reason: &str) -> bool {
    condition(gs, type_).is_some_and(|c| c.status == status && c.reason == reason)
}

/// Waits until `failed` is rolled back (held off as the failed revision).
async fn rolled_back(api: &Api<GoServer>, name: &str, failed: &str) -> GoServer {
    let expectation = format!("{failed} rolled back");
    wait_for(api, name, &expectation, Duration::from_secs(120), |gs| {
        gs.status
            .as_ref()
            .is_some_and(|s| s.failed_revision.as_deref() == Some(failed))
    })
    .await
    .unwrap()
}

/// How often an Event with `reason` was recorded about the GoServer
/// `name`: repeats of one Event are counted in its series.
async fn events(ns: &TestNamespace, name: &str, reason: &str) -> i32 {
    events_about(ns, name, reason)
        .await
        .into_iter()
        .map(|e| e.series.map_or(1, |s| s.count))
        .sum()
}

/// v1 good is verified; v2 bad (5xx above the bound) is rolled back to v1
/// and held there, across an operator crash mid-verification and a
/// replicas edit, while the webhook receiver answers 503 across another
/// SIGKILL (delivered once it answers again); v3 bad ends on v1 too,
/// across an operator killed the moment that rollback is recorded; v3
/// retried fails again, a decision of its own. Each decision is one Event
/// naming its revision and one delivered webhook call with an id of its
/// own, signed as Standard Webhooks specify.
#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // one story, three revisions
async fn a_bad_release_is_rolled_back_to_the_last_verified_one() {
    let ns = TestNamespace::new("op-verify").await;
    let prometheus = Prometheus::start();
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), "webhook-secret\n").unwrap();
    let operator_args = [
        "--prometheus-url".to_owned(),
        prometheus.url(),
        "--webhook-signing-key-file".to_owned(),
        key.path().display().to_string(),
    ];
    let args: Vec<&str> = operator_args.iter().map(String::as_str).collect();
    let mut operator = Some(Operator::start_with(&ns, &args).await);
    let (receiver, hook) = Receiver::start().await;
    let mut revisions = Revisions::new(&prometheus, &ns.name);
    let api: Api<GoServer> = ns.api();
    let spec = verification(Some(&hook), "Inconclusive");

    api.create(&PostParams::default(), &goserver("shop", "shop:1", &spec))
        .await
        .unwrap();
    let v1 = next_revision(&api, "shop", None).await;
    let good = revisions.start(&v1);
    let _traffic = Traffic::start(good, &[("/", 1)], 10);
    let gs = wait_for(
        &api,
        "shop",
        "v1 Verified",
        Duration::from_secs(120),
        |gs| has(gs, "Verified", "True", "Passed"),
    )
    .await
    .unwrap();
    let status = gs.status.unwrap();
    assert_eq!(status.last_good_revision.as_deref(), Some(v1.as_str()));
    assert_eq!(status.history[0].revision, v1);

    // v2 answers 500 to a third of its requests. The receiver is down.
    receiver.set_failing(true);
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "shop:2"}})),
    )
    .await
    .unwrap();
    let v2 = next_revision(&api, "shop", Some(&v1)).await;
    let bad = revisions.start(&v2);
    let _bad_traffic = Traffic::start(bad, &[("/", 2), ("/debug/panic", 1)], 10);
    // The operator crashes while v2 is measured; its successor resumes
    // from status and decides once.
    wait_for(&api, "shop", "v2 measured", DEADLINE, |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.verification.as_ref())
            .is_some_and(|v| v.revision == v2 && v.last_measured_at.is_some())
    })
    .await
    .ok();
    operator.take().unwrap().kill();
    let operator = Operator::start_with(&ns, &args).await;
    let gs = wait_for(
        &api,
        "shop",
        "v2 rolled back",
        Duration::from_secs(120),
        |gs| has(gs, "Degraded", "True", "RolledBack"),
    )
    .await
    .unwrap();
    let status = gs.status.clone().unwrap();
    assert_eq!(status.revision.as_deref(), Some(v1.as_str()));
    assert_eq!(status.failed_revision.as_deref(), Some(v2.as_str()));
    assert!(has(&gs, "Verified", "False", "Failed"));
    let degraded = condition(&gs, "Degraded").unwrap();
    assert!(
        degraded.message.contains(&v2) && degraded.message.contains("above max 0.05"),
        "{}",
        degraded.message
    );
    assert_eq!(
        format!("{:?}", status.history[0].verdict),
        "RolledBack",
        "{:?}",
        status.history
    );
    // The spec stays as written; the Deployment runs v1 again.
    assert_eq!(gs.spec.image, "shop:2");
    wait_deployed(&ns, "shop", &v1).await;
    // The leader's /metrics says so, in the series the GoServerRolledBack
    // alert reads (the one series the alert-rules test cannot provoke).
    // (Read from the operator's own cache: waited for, as it may get the
    // status a moment after the test.)
    let namespace = &ns.name;
    let lines = [
        format!(
            r#"gantry_goserver_failed_revision_info{{namespace="{namespace}",name="shop",revision="{v2}"}} 1"#
        ),
        format!(
            r#"gantry_goserver_revision_verdict{{namespace="{namespace}",name="shop",revision="{v2}",verdict="RolledBack"}} 1"#
        ),
        format!(
            r#"gantry_goserver_revision_info{{namespace="{namespace}",name="shop",revision="{v1}",image="shop:1"}} 1"#
        ),
    ];
    if let Err(err) = wait_until("the rollback's series", DEADLINE, || {
        let metrics = operator.metrics();
        let all = lines.iter().all(|line| metrics.contains(line));
        async move { Ok::<_, String>(all.then_some(())) }
    })
    .await
    {
        panic!("{err}: {lines:?} not all in\n{}", operator.metrics());
    }

    // The decision is kept in the outbox while the receiver fails, and
    // survives a SIGKILL there: the next operator delivers it once the
    // receiver answers.
    let gs = wait_for(&api, "shop", "two failed deliveries", DEADLINE, |gs| {
        gs.status.as_ref().is_some_and(|s| {
            s.outbox
                .iter()
                .any(|n| n.revision == v2 && n.pending.first().is_some_and(|d| d.attempts >= 2))
        })
    })
    .await
    .unwrap();
    let pending = &gs.status.unwrap().outbox[0].pending[0];
    assert!(
        pending
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("503")),
        "{pending:?}"
    );
    operator.kill();
    let operator = Operator::start_with(&ns, &args).await;
    // With --faults the receiver stays down a minute more: the new
    // operator keeps retrying, backing off, until it answers.
    if gantry_e2e::faults::full() {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    receiver.set_failing(false);
    wait_until("v2's rollback delivered", DEADLINE, || {
        let delivered = receiver.delivered();
        let v2 = v2.clone();
        async move {
            Ok::<_, String>(
                delivered
                    .iter()
                    .any(|c| c.decision() == ("RolledBack".to_owned(), v2.clone()))
                    .then_some(()),
            )
        }
    })
    .await
    .unwrap();

    // A replicas edit is no new revision: v1 stays in force.
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    let gs = wait_for(&api, "shop", "the replicas edit observed", DEADLINE, |gs| {
        gs.status
            .as_ref()
            .is_some_and(|s| s.observed_generation == gs.metadata.generation)
    })
    .await
    .unwrap();
    assert_eq!(gs.status.unwrap().revision.as_deref(), Some(v1.as_str()));
    assert_eq!(deployed(&ns, "shop").await, v1);

    // v3, bad as well, ends on v1: the last *verified* revision. This
    // operator dies the moment the rollback is recorded, before it is told
    // and before the Deployment is switched back; its successor finishes
    // the rollback and tells it, once.
    drop(operator);
    let mut crashing = Operator::start_with_env(
        &ns,
        &args,
        &[(
            gantry_operator::fault::VARIABLE,
            "decision-recorded:RolledBack",
        )],
    )
    .await;
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "shop:3"}})),
    )
    .await
    .unwrap();
    let v3 = verifying_none_of(&api, "shop", &[&v1, &v2]).await;
    let bad3 = revisions.start(&v3);
    let _bad3_traffic = Traffic::start(bad3, &[("/debug/panic", 1)], 10);
    let exit = crashing.wait_exit(Duration::from_secs(120));
    assert!(
        exit.is_some_and(|s| std::os::unix::process::ExitStatusExt::signal(&s) == Some(9)),
        "the operator was to die by SIGKILL at its crash point: {exit:?}"
    );
    let recorded = api.get("shop").await.unwrap().status.unwrap();
    assert_eq!(
        recorded.failed_revision.as_deref(),
        Some(v3.as_str()),
        "{recorded:#?}"
    );
    assert!(
        recorded
            .outbox
            .iter()
            .any(|n| n.revision == v3 && !n.recorded && n.pending.len() == 1),
        "the decision is recorded, its Event and webhook still to come: {recorded:?}"
    );
    assert_eq!(deployed(&ns, "shop").await, v3, "switched before the crash");
    assert_eq!(
        events(&ns, "shop", "RolledBack").await,
        1,
        "told before the crash"
    );
    let operator = Operator::start_with(&ns, &args).await;
    let gs = rolled_back(&api, "shop", &v3).await;
    assert_eq!(gs.status.unwrap().revision.as_deref(), Some(v1.as_str()));
    wait_deployed(&ns, "shop", &v1).await;

    // v3 retried, still bad: rolled back again. Another decision, with an
    // id of its own: told again (the same id twice left it untold).
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"gantry.dev/retry": v3}}})),
    )
    .await
    .unwrap();
    wait_for(&api, "shop", "v3 retried", DEADLINE, |gs| {
        gs.status
            .as_ref()
            .is_some_and(|s| s.failed_revision.is_none() && s.revision.as_deref() == Some(&v3))
    })
    .await
    .unwrap();
    rolled_back(&api, "shop", &v3).await;

    // One Event per decision, naming its revision; one delivered webhook
    // call per decision, signed.
    let expected = vec![
        ("Verified".to_owned(), v1.clone()),
        ("RolledBack".to_owned(), v2.clone()),
        ("RolledBack".to_owned(), v3.clone()),
        ("RolledBack".to_owned(), v3.clone()),
    ];
    wait_for(&api, "shop", "every decision told", DEADLINE, |gs| {
        gs.status.as_ref().is_some_and(|s| s.outbox.is_empty())
    })
    .await
    .unwrap();
    // Each decision is delivered on its own, retried on its own backoff:
    // the calls arrive in any order. Their ids (UUID v7) sort as the
    // decisions were made.
    let mut delivered = receiver.delivered();
    delivered.sort_by_key(gantry_e2e::receiver::Call::id);
    let decisions: Vec<(String, String)> = delivered
        .iter()
        .map(gantry_e2e::receiver::Call::decision)
        .collect();
    assert_eq!(decisions, expected, "{delivered:#?}");
    let ids: std::collections::BTreeSet<String> = delivered
        .iter()
        .map(gantry_e2e::receiver::Call::id)
        .collect();
    assert_eq!(ids.len(), 4, "one id per decision: {ids:?}");
    for (reason, revisions) in [("Verified", vec![&v1]), ("RolledBack", vec![&v2, &v3, &v3])] {
        let told = events_about(&ns, "shop", reason).await;
        let mut related: Vec<String> = told
            .iter()
            .filter_map(|e| e.related.as_ref().and_then(|r| r.name.clone()))
            .collect();
        related.sort();
        let mut expected: Vec<String> = revisions.into_iter().cloned().collect();
        expected.sort();
        assert_eq!(related, expected, "{reason}: {told:#?}");
        assert!(told.iter().all(|e| e.series.is_none()), "{told:#?}");
    }
    for call in receiver.calls() {
        // Standard Webhooks: the id and the time are signed with the body.
        let id = call.header("webhook-id");
        assert_eq!(call.id(), id);
        let signature = gantry_operator::rollout::webhook::sign(
            b"webhook-secret",
            id,
            call.header("webhook-timestamp"),
            call.raw.as_bytes(),
        );
        assert_eq!(call.header("webhook-signature"), signature, "{}", call.raw);
        // The signature of earlier releases, over the body alone.
        let legacy =
            gantry_operator::rollout::webhook::sign_body(b"webhook-secret", call.raw.as_bytes());
        assert_eq!(call.header("x-gantry-signature"), legacy, "{}", call.raw);
        assert_eq!(call.body["namespace"], json!(ns.name));
        assert_eq!(call.body["goserver"], "shop");
    }
    drop(operator);
}

/// A revision without traffic is no failure: it stays unverified (`NoData`)
/// and nothing is rolled back; past its deadline it is held and says so.
/// A query with a typo is told apart from an outage; a Prometheus that goes
/// away is the provider failing, not the application. An edit that makes
/// no data a failure applies to the next revision, not to the one being
/// judged. A revision whose pods never become available fails at the
/// Deployment's progress deadline.
#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // one story, four revisions
async fn no_data_and_a_missing_prometheus_are_not_failures() {
    let ns = TestNamespace::new("op-nodata").await;
    let mut prometheus = Prometheus::start();
    let url = prometheus.url();
    // Prometheus ignores the token; it is here to be looked for where it
    // must never show: the log, the status, the Events.
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "e2e-bearer-token-7f3a\n").unwrap();
    let token_path = token.path().display().to_string();
    let operator = Operator::start_with(
        &ns,
        &[
            "--prometheus-url",
            &url,
            "--prometheus-token-file",
            &token_path,
        ],
    )
    .await;
    let mut revisions = Revisions::new(&prometheus, &ns.name);
    let api: Api<GoServer> = ns.api();
    // Held 6 s past the window without a verdict, a revision is overdue.
    let mut spec = verification(None, "Inconclusive");
    spec["deadline"] = json!("6s");

    api.create(&PostParams::default(), &goserver("quiet", "quiet:1", &spec))
        .await
        .unwrap();
    // Beside it, one whose query has a typo: Prometheus refuses it, which
    // is no outage and says so.
    let mut typo = verification(None, "Inconclusive");
    typo["metrics"][0]["query"] =
        json!(r#"sum(rate(http_requests_total{revision="${revision}"}[10s])"#);
    api.create(&PostParams::default(), &goserver("typo", "typo:1", &typo))
        .await
        .unwrap();
    let v1 = next_revision(&api, "quiet", None).await;
    let good = revisions.start(&v1);
    let traffic = Traffic::start(good, &[("/", 1)], 10);
    wait_for(
        &api,
        "quiet",
        "v1 Verified",
        Duration::from_secs(120),
        |gs| has(gs, "Verified", "True", "Passed"),
    )
    .await
    .unwrap();
    drop(traffic);

    // v2 gets no server and no traffic: no data, past its window.
    api.patch(
        "quiet",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "quiet:2"}})),
    )
    .await
    .unwrap();
    let v2 = next_revision(&api, "quiet", Some(&v1)).await;
    let gs = wait_for(
        &api,
        "quiet",
        "v2 without data",
        Duration::from_secs(120),
        |gs| has(gs, "Verified", "Unknown", "NoData"),
    )
    .await
    .unwrap();
    assert_eq!(
        gs.status.as_ref().unwrap().revision.as_deref(),
        Some(v2.as_str())
    );
    assert!(has(&gs, "Degraded", "False", "AsExpected"));
    // Past its deadline it is held (the default), and says so.
    let gs = wait_for(&api, "quiet", "v2 overdue", DEADLINE, |gs| {
        has(gs, "Degraded", "True", "VerificationOverdue")
    })
    .await
    .unwrap();
    assert!(has(&gs, "Verified", "Unknown", "NoData"));
    assert_eq!(
        gs.status.as_ref().unwrap().revision.as_deref(),
        Some(v2.as_str())
    );
    let line = format!(
        r#"gantry_goserver_verification_overdue{{namespace="{}",name="quiet",revision="{v2}"}} 1"#,
        ns.name
    );
    // The gauge is read from the operator's own GoServer cache, which may
    // get the status a moment after the test does.
    if let Err(err) = wait_until("the overdue gauge", DEADLINE, || {
        let found = operator.metrics().contains(&line);
        async move { Ok::<_, String>(found.then_some(())) }
    })
    .await
    {
        panic!("{err}: {line} missing from\n{}", operator.metrics());
    }

    // The typo: Verified=False, Degraded, Prometheus' own words; fixed,
    // it is measured at once.
    let gs = wait_for(&api, "typo", "the query refused", DEADLINE, |gs| {
        has(gs, "Verified", "False", "InvalidQuery")
    })
    .await
    .unwrap();
    let degraded = condition(&gs, "Degraded").unwrap();
    assert_eq!(degraded.reason, "InvalidQuery");
    assert!(
        degraded.message.contains("bad_data") && degraded.message.contains("parse error"),
        "{}",
        degraded.message
    );
    let mut fixed = typo.clone();
    fixed["metrics"][0]["query"] = json!(ERROR_RATE);
    api.patch(
        "typo",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"rollout": {"verification": fixed}}})),
    )
    .await
    .unwrap();
    wait_for(
        &api,
        "typo",
        "measured with the fixed query",
        DEADLINE,
        |gs| {
            gs.status
                .as_ref()
                .and_then(|s| s.verification.as_ref())
                .is_some_and(|v| v.reason != "InvalidQuery" && v.last_measured_at.is_some())
                && has(gs, "Degraded", "False", "AsExpected")
        },
    )
    .await
    .unwrap();

    // Prometheus goes away: unavailable, nothing rolled back.
    prometheus.stop();
    let gs = wait_for(&api, "quiet", "Prometheus unavailable", DEADLINE, |gs| {
        has(gs, "Verified", "Unknown", "PrometheusUnavailable")
    })
    .await
    .unwrap();
    assert_eq!(
        gs.status.as_ref().unwrap().revision.as_deref(),
        Some(v2.as_str())
    );
    assert!(gs.status.as_ref().unwrap().failed_revision.is_none());
    prometheus.restart();
    wait_for(&api, "quiet", "measuring again", DEADLINE, |gs| {
        has(gs, "Verified", "Unknown", "NoData")
    })
    .await
    .unwrap();

    // No data now counts as failure. The edit applies to the next
    // verification: v2 is judged as its own began, measured on.
    let mut strict = verification(None, "Fail");
    strict["deadline"] = json!("6s");
    let edited = api
        .patch(
            "quiet",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rollout": {"verification": strict}}})),
        )
        .await
        .unwrap();
    let since = edited
        .status
        .as_ref()
        .and_then(|s| s.verification.as_ref())
        .and_then(|v| v.last_measured_at.clone());
    let gs = wait_for(
        &api,
        "quiet",
        "v2 measured after the edit",
        DEADLINE,
        |gs| {
            gs.status.as_ref().is_some_and(|s| {
                s.observed_generation == gs.metadata.generation
                    && s.verification
                        .as_ref()
                        .is_some_and(|v| v.last_measured_at > since)
            })
        },
    )
    .await
    .unwrap();
    let status = gs.status.unwrap();
    assert_eq!(status.revision.as_deref(), Some(v2.as_str()));
    assert_eq!(status.failed_revision, None);
    let analysis = status.verification.unwrap().analysis.unwrap();
    assert_eq!(
        serde_json::to_value(analysis.metrics[0].no_data).unwrap(),
        "Inconclusive"
    );

    // v3, judged by the edited analysis: its lack of data fails it.
    api.patch(
        "quiet",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "quiet:3"}})),
    )
    .await
    .unwrap();
    let v3 = verifying_none_of(&api, "quiet", &[&v1, &v2]).await;
    let gs = rolled_back(&api, "quiet", &v3).await;
    assert_eq!(gs.status.unwrap().revision.as_deref(), Some(v1.as_str()));

    // v4's pods can never be scheduled (no node has the label): it misses
    // the Deployment's progress deadline and is rolled back like a failed
    // measurement.
    api.patch(
        "quiet",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {
            "nodeSelector": {"gantry.dev/e2e-no-such-node": "true"},
            "rollout": {"progressDeadlineSeconds": 5},
        }})),
    )
    .await
    .unwrap();
    let v4 = verifying_none_of(&api, "quiet", &[&v1, &v2, &v3]).await;
    let gs = rolled_back(&api, "quiet", &v4).await;
    assert_eq!(
        gs.status.as_ref().unwrap().revision.as_deref(),
        Some(v1.as_str())
    );
    let degraded = condition(&gs, "Degraded").unwrap();
    assert!(
        degraded.reason == "RolledBack" && degraded.message.contains("progress deadline"),
        "{degraded:?}"
    );
    wait_deployed(&ns, "quiet", &v1).await;

    let secret = "e2e-bearer-token-7f3a";
    let gs = serde_json::to_string(&api.get("quiet").await.unwrap()).unwrap();
    let events = serde_json::to_string(
        &ns.api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap(),
    )
    .unwrap();
    let log = operator.log();
    assert!(!log.is_empty());
    assert!(!gs.contains(secret) && !events.contains(secret));
    assert!(
        log.iter().all(|line| !line.to_string().contains(secret)),
        "the token is in the operator's log"
    );
}

/// Scaling during a verification (as an HPA does, through the Deployment's
/// scale) neither fails, resets nor advances it; a new revision arriving
/// mid-window restarts verification for the new one.
#[tokio::test(flavor = "multi_thread")]
async fn scaling_changes_nothing_and_a_new_revision_restarts_verification() {
    let ns = TestNamespace::new("op-restart").await;
    let prometheus = Prometheus::start();
    let url = prometheus.url();
    let _operator = Operator::start_with(&ns, &["--prometheus-url", &url]).await;
    let mut revisions = Revisions::new(&prometheus, &ns.name);
    let api: Api<GoServer> = ns.api();
    // A long window, so the changes below land inside it.
    let mut spec = verification(None, "Inconclusive");
    spec["window"] = json!("40s");
    let mut gs = goserver("web", "web:1", &spec);
    gs.spec.autoscaling =
        serde_json::from_value(json!({"minReplicas": 2, "maxReplicas": 6})).unwrap();
    api.create(&PostParams::default(), &gs).await.unwrap();
    let v1 = next_revision(&api, "web", None).await;
    let server = revisions.start(&v1);
    let _traffic = Traffic::start(server, &[("/", 1)], 10);

    let measured = |at_least: i32| {
        move |gs: &GoServer| {
            gs.status
                .as_ref()
                .and_then(|s| s.verification.as_ref())
                .is_some_and(|v| v.metrics.first().is_some_and(|m| m.passed >= at_least))
        }
    };
    let before = wait_for(&api, "web", "two measurements", DEADLINE, measured(2))
        .await
        .unwrap()
        .status
        .unwrap()
        .verification
        .unwrap();
    // The HPA's way of scaling: the Deployment's scale subresource.
    ns.api::<Deployment>()
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    let during = wait_for(&api, "web", "two more measurements", DEADLINE, measured(4))
        .await
        .unwrap()
        .status
        .unwrap()
        .verification
        .unwrap();
    assert_eq!(during.revision, v1);
    assert_eq!(
        during.available_at, before.available_at,
        "scaling reset the window"
    );
    assert_eq!(format!("{:?}", during.phase), "Measuring");
    assert_eq!(during.metrics[0].failed, 0);

    // v2 arrives mid-window: its verification starts from nothing.
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "web:2"}})),
    )
    .await
    .unwrap();
    let v2 = next_revision(&api, "web", Some(&v1)).await;
    let gs = api.get("web").await.unwrap();
    let status = gs.status.unwrap();
    let restarted = status.verification.unwrap();
    assert_eq!(restarted.revision, v2);
    assert!(
        restarted
            .metrics
            .iter()
            .all(|m| m.passed == 0 && m.failed == 0),
        "{restarted:?}"
    );
    assert_eq!(
        status.last_good_revision, None,
        "v1 never finished its window"
    );
    let server = revisions.start(&v2);
    let _traffic2 = Traffic::start(server, &[("/", 1)], 10);
    let gs = wait_for(&api, "web", "v2 Verified", Duration::from_secs(150), |gs| {
        has(gs, "Verified", "True", "Passed")
    })
    .await
    .unwrap();
    let status = gs.status.unwrap();
    assert_eq!(status.last_good_revision.as_deref(), Some(v2.as_str()));
    assert_eq!(status.history[1].revision, v1);
    assert_eq!(format!("{:?}", status.history[1].verdict), "Unverified");
}

/// The mean latency of one revision over one interval: every sample covers
/// its own interval, none overlaps the next.
const MEAN_LATENCY: &str = r#"sum(rate(http_request_duration_seconds_sum{namespace="${namespace}",revision="${revision}"}[${interval}])) / sum(rate(http_request_duration_seconds_count{namespace="${namespace}",revision="${revision}"}[${interval}]))"#;

/// The comparative judge through a real Prometheus: v1 is verified by its
/// bounds (nothing to compare with) and leaves its samples as the
/// baseline; v2, as fast as v1, passes against it; v3, 30 % slower but far
/// under any bound one would set, is judged High against v2 and rolled
/// back. Latency comes from real gantry-server processes sleeping in
/// `/debug/sleep`.
#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // one story, three revisions
async fn a_revision_slower_than_the_last_verified_one_is_rolled_back() {
    let ns = TestNamespace::new("op-compare").await;
    let prometheus = Prometheus::start();
    let args = ["--prometheus-url".to_owned(), prometheus.url()];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _operator = Operator::start_with(&ns, &args).await;
    let (receiver, hook) = Receiver::start().await;
    let mut revisions = Revisions::new(&prometheus, &ns.name);
    let api: Api<GoServer> = ns.api();
    // Six samples of 3 s a revision; the error ratio keeps its bound.
    let spec = json!({
        "warmup": "3s", "interval": "3s", "window": "18s",
        "minSamples": 5, "failureLimit": 0,
        "webhook": {"url": hook},
        "metrics": [
            {"name": "latency", "query": MEAN_LATENCY, "max": 1.0,
             "compare": {"bad": "Increase", "allowed": "10%"}},
            {"name": "error-rate", "query": ERROR_RATE, "max": 0.05},
        ],
    });
    api.create(&PostParams::default(), &goserver("judged", "shop:1", &spec))
        .await
        .unwrap();

    let comparison = |gs: &GoServer, revision: &str| {
        gs.status
            .as_ref()
            .and_then(|s| s.verification.as_ref())
            .filter(|v| v.revision == revision)
            .and_then(|v| v.comparison.clone())
    };
    // The pods of a revision, answering after `sleep_ms`, under traffic.
    let mut serve = |revision: &str, sleep_ms: u32| {
        let address = revisions.start(revision);
        Traffic::start(address, &[(&format!("/debug/sleep?ms={sleep_ms}"), 1)], 10)
    };

    let v1 = next_revision(&api, "judged", None).await;
    let traffic = serve(&v1, 20);
    let gs = wait_for(
        &api,
        "judged",
        "v1 Verified",
        Duration::from_secs(120),
        |gs| has(gs, "Verified", "True", "Passed"),
    )
    .await
    .unwrap();
    let c = comparison(&gs, &v1).unwrap();
    assert_eq!(format!("{:?}", c.outcome), "NoBaseline", "{c:?}");
    let baseline = gs.status.as_ref().unwrap().baseline.clone().unwrap();
    assert_eq!(baseline.revision, v1);
    assert_eq!(baseline.metrics[0].name, "latency");
    assert!(baseline.metrics[0].samples.len() >= 5, "{baseline:?}");

    // v2 sleeps as long: the same latency, judged Pass.
    api.patch(
        "judged",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "shop:2"}})),
    )
    .await
    .unwrap();
    let v2 = next_revision(&api, "judged", Some(&v1)).await;
    drop(traffic);
    let traffic = serve(&v2, 20);
    let gs = wait_for(
        &api,
        "judged",
        "v2 Verified",
        Duration::from_secs(120),
        |gs| {
            gs.status
                .as_ref()
                .is_some_and(|s| s.last_good_revision.as_deref() == Some(v2.as_str()))
        },
    )
    .await
    .unwrap();
    let c = comparison(&gs, &v2).unwrap();
    assert_eq!(format!("{:?}", c.outcome), "Pass", "{c:?}");
    assert_eq!(c.baseline_revision.as_deref(), Some(v1.as_str()));
    let latency = gs
        .status
        .as_ref()
        .unwrap()
        .verification
        .as_ref()
        .unwrap()
        .metrics[0]
        .comparison
        .clone()
        .unwrap();
    assert_eq!(format!("{:?}", latency.class), "Pass", "{latency:?}");

    // v3 sleeps 26 ms instead of 20: 30 % slower, judged High against v2.
    api.patch(
        "judged",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "shop:3"}})),
    )
    .await
    .unwrap();
    let v3 = next_revision(&api, "judged", Some(&v2)).await;
    drop(traffic);
    let traffic = serve(&v3, 26);
    let gs = rolled_back(&api, "judged", &v3).await;
    let status = gs.status.clone().unwrap();
    assert_eq!(status.revision.as_deref(), Some(v2.as_str()));
    let v = status.verification.as_ref().unwrap();
    let c = v.comparison.clone().unwrap();
    assert_eq!(format!("{:?}", c.outcome), "Fail", "{c:?}");
    assert_eq!(c.baseline_revision.as_deref(), Some(v2.as_str()));
    let latency = v.metrics[0].comparison.clone().unwrap();
    assert_eq!(format!("{:?}", latency.class), "High", "{latency:?}");
    let relative = latency.relative_change.unwrap();
    assert!((0.15..0.5).contains(&relative), "{latency:?}");
    // The bounds alone would have passed it.
    assert_eq!(v.metrics[0].failed, 0);
    // The history, the Event and the webhook say why, with the figures.
    assert_eq!(
        status.history[0].compared_with.as_deref(),
        Some(v2.as_str())
    );
    let degraded = condition(&gs, "Degraded").unwrap();
    println!("v3 judged: {}", degraded.message);
    assert!(
        degraded.message.contains("latency High"),
        "{}",
        degraded.message
    );
    wait_until("v3's rollback delivered", DEADLINE, || {
        let delivered = receiver.delivered();
        let v3 = v3.clone();
        async move {
            Ok::<_, String>(
                delivered
                    .into_iter()
                    .find(|c| c.decision() == ("RolledBack".to_owned(), v3.clone())),
            )
        }
    })
    .await
    .map(|call| {
        let message = call.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("against {v2}")), "{message}");
        assert_eq!(
            call.body["measurements"][0]["comparison"]["class"], "High",
            "{}",
            call.body
        );
    })
    .unwrap();
    drop(traffic);
    let events = events_about(&ns, "judged", "RolledBack").await;
    assert!(
        events.iter().any(|e| e
            .note
            .as_deref()
            .is_some_and(|n| n.contains("latency High"))),
        "{events:?}"
    );
}
