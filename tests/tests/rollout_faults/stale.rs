//! Stale views on the rollout path: a Deployment status written for the
//! previous template, and the operator's own `GoServer` status replayed
//! from before a decision it has told (the watch proxy holding the
//! `GoServer` watch, as Sieve serves a controller a lagging view).
//!
//! These use the scripted Prometheus (`gantry_e2e::scripted_prometheus`):
//! what matters is what the operator does with the answers, which the test
//! picks per revision; `operator_rollout.rs` judges against the real one.

use crate::operator_support::{
    DEADLINE, Operator, deployed, events_about, poke_reconciles, verifying_none_of,
};
use futures::StreamExt;
use gantry_e2e::receiver::Receiver;
use gantry_e2e::scripted_prometheus::{Answer, ScriptedPrometheus};
use gantry_e2e::watch_proxy::{Delivery, WatchProxy};
use gantry_e2e::{TestNamespace, wait_for, wait_until};
use gantry_operator::crd::{GoServer, VerificationPhase};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};

/// A verification quick enough for many looks: a sample a second, two
/// needed, none may fail.
fn goserver(name: &str, image: &str, hook: Option<&str>, extra: &Value) -> GoServer {
    let mut verification = json!({
        "warmup": "1s", "interval": "1s", "window": "3s",
        "minSamples": 2, "failureLimit": 0,
        "metrics": [{"name": "error-rate", "query": r#"errors{namespace="${namespace}",revision="${revision}"}"#, "max": 0.05}],
    });
    if let Some(url) = hook {
        verification["receivers"] = json!([{"name": "ci", "url": url}]);
    }
    let mut spec = json!({
        "image": image,
        "replicas": 2,
        "rollout": {"verification": verification},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn verification_of(gs: &GoServer, revision: &str) -> Option<(VerificationPhase, String)> {
    gs.status
        .as_ref()?
        .verification
        .as_ref()
        .filter(|v| v.revision == revision)
        .map(|v| (v.phase, v.reason.clone()))
}

/// Every status the apiserver holds for `name`, in order, as a watcher of
/// the test's own (not through any proxy) sees it.
struct History {
    seen: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, GoServer)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl History {
    fn start(api: &Api<GoServer>, name: &str) -> Self {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&seen);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let stream = watcher(api.clone(), config);
        let task = tokio::spawn(async move {
            let mut stream = stream.boxed();
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(gs) | watcher::Event::InitApply(gs)) = event {
                    sink.lock().unwrap().push((std::time::Instant::now(), gs));
                }
            }
        });
        Self { seen, task }
    }

    fn all(&self) -> Vec<GoServer> {
        self.timed().into_iter().map(|(_, gs)| gs).collect()
    }

    /// Each status with the moment the test saw it.
    fn timed(&self) -> Vec<(std::time::Instant, GoServer)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The first revision's pods never become available: it fails at the
/// Deployment's progress deadline, with nothing to roll back to. The next
/// revision's pods can run, and it must not inherit that deadline: the
/// apply's own answer (and the cache, for a moment) still carries the old
/// template's `ProgressDeadlineExceeded`, which failed the good revision
/// for good.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_revision_is_not_failed_by_the_last_ones_deadline() {
    let ns = TestNamespace::new("stale-deadline").await;
    let prometheus = ScriptedPrometheus::start().await;
    prometheus.answer_others(Answer::Value(0.0));
    let url = prometheus.url();
    let _operator = Operator::start_with(&ns, &["--prometheus-url", &url]).await;
    let api: Api<GoServer> = ns.api();
    let history = History::start(&api, "late");
    let stuck = json!({
        "nodeSelector": {"gantry.dev/e2e-no-such-node": "true"},
    });
    let mut gs = goserver("late", "late:1", None, &stuck);
    gs.spec.rollout.as_mut().unwrap().progress_deadline_seconds = Some(3);
    api.create(&PostParams::default(), &gs).await.unwrap();
    let v1 = verifying_none_of(&api, "late", &[]).await;
    wait_for(&api, "late", "v1 failed at its deadline", DEADLINE, |gs| {
        verification_of(gs, &v1).is_some_and(|(phase, _)| phase == VerificationPhase::Failed)
    })
    .await
    .unwrap();

    // v2 can be scheduled.
    api.patch(
        "late",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "late:2", "nodeSelector": null}})),
    )
    .await
    .unwrap();
    let v2 = verifying_none_of(&api, "late", &[&v1]).await;
    wait_for(&api, "late", "v2 verified", DEADLINE, |gs| {
        verification_of(gs, &v2).is_some_and(|(phase, _)| phase == VerificationPhase::Passed)
    })
    .await
    .unwrap();
    let failed: Vec<String> = history
        .all()
        .iter()
        .filter(|gs| {
            verification_of(gs, &v2).is_some_and(|(phase, _)| phase == VerificationPhase::Failed)
        })
        .map(|gs| format!("{:?}", gs.status))
        .collect();
    assert!(failed.is_empty(), "v2 was failed on the way: {failed:#?}");
}

/// An operator behind the watch proxy, judging by a scripted Prometheus
/// that answers well, with a webhook receiver.
struct Behind {
    prometheus: ScriptedPrometheus,
    proxy: WatchProxy,
    operator: Operator,
    receiver: Receiver,
    hook: String,
    _dir: tempfile::TempDir,
}

impl Behind {
    async fn start(ns: &TestNamespace) -> Self {
        let prometheus = ScriptedPrometheus::start().await;
        prometheus.answer_others(Answer::Value(0.0));
        let url = prometheus.url();
        let proxy = WatchProxy::start().await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        proxy.kubeconfig(&kubeconfig);
        let operator =
            Operator::start_through(ns, Some(&kubeconfig), &["--prometheus-url", &url], &[]).await;
        let (receiver, hook) = Receiver::start().await;
        Self {
            prometheus,
            proxy,
            operator,
            receiver,
            hook,
            _dir: dir,
        }
    }
}

/// Once a rollback is told, a reconcile that runs on the status from
/// before it (the `GoServer` watch held back) must not act on that view:
/// it measured again and wrote over the decision, and a flaky metric that
/// then read well passed the revision that had just been rolled back.
/// Oracle: after the `RolledBack` Event, no status of the `GoServer` has
/// anything but v2 as its failed revision, and the Deployment, once back
/// on v1, never runs v2 again, while the watch stays held for several
/// reconciles.
#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // one story, told in order
async fn a_stale_status_never_undoes_a_told_rollback() {
    let ns = TestNamespace::new("stale-status").await;
    let Behind {
        prometheus,
        proxy,
        operator,
        receiver,
        hook,
        _dir,
    } = Behind::start(&ns).await;
    let api: Api<GoServer> = ns.api();
    let history = History::start(&api, "flaky");
    api.create(
        &PostParams::default(),
        &goserver("flaky", "flaky:1", Some(&hook), &json!({})),
    )
    .await
    .unwrap();
    let v1 = verifying_none_of(&api, "flaky", &[]).await;
    wait_for(&api, "flaky", "v1 verified", DEADLINE, |gs| {
        gs.status
            .as_ref()
            .is_some_and(|s| s.last_good_revision.as_deref() == Some(v1.as_str()))
    })
    .await
    .unwrap();

    // v2 reads badly once, then well: a flaky metric. Until the operator's
    // view of the GoServer stands still, it has no data (inconclusive, so
    // v2 waits in Measuring however slowly the test looks); then it reads
    // badly. (Answering badly at once raced the test: on a busy machine
    // the rollback came before the test saw v2 measuring.)
    prometheus.answer_others(Answer::NoData);
    api.patch(
        "flaky",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "flaky:2"}})),
    )
    .await
    .unwrap();
    let v2 = verifying_none_of(&api, "flaky", &[&v1]).await;
    wait_for(&api, "flaky", "v2 measured, without data", DEADLINE, |gs| {
        verification_of(gs, &v2).is_some_and(|(phase, _)| phase == VerificationPhase::Measuring)
            && gs
                .status
                .as_ref()
                .and_then(|s| s.verification.as_ref())
                .is_some_and(|v| v.metrics.iter().any(|m| m.inconclusive > 0))
    })
    .await
    .unwrap();
    let goservers = GoServer::url_path(&(), Some(&ns.name));
    proxy.hold(&goservers, Delivery::All);
    prometheus.answer(&v2, Answer::Value(0.5));
    wait_until("the rollback told", DEADLINE, || async {
        Ok::<_, String>((!events_about(&ns, "flaky", "RolledBack").await.is_empty()).then_some(()))
    })
    .await
    .unwrap();
    prometheus.answer(&v2, Answer::Value(0.0));
    // The rollback reaches the Deployment; then three more reconciles run
    // on the held view, each brought by a touch of the Deployment (an
    // annotation of someone else's, which the operator leaves alone).
    wait_until("v1 back", DEADLINE, || async {
        Ok::<_, String>((deployed(&ns, "flaky").await == v1).then_some(()))
    })
    .await
    .unwrap();
    poke_reconciles(&ns, &operator, "flaky", 3).await;
    let deployments: Api<Deployment> = ns.api();
    proxy.release(&goservers);

    let statuses = history.all();
    let after: Vec<&GoServer> = statuses
        .iter()
        .skip_while(|gs| {
            gs.status
                .as_ref()
                .is_none_or(|s| s.failed_revision.as_deref() != Some(v2.as_str()))
        })
        .collect();
    assert!(!after.is_empty(), "no status ever held v2 off");
    for gs in &after {
        let status = gs.status.as_ref().unwrap();
        assert_eq!(
            status.failed_revision.as_deref(),
            Some(v2.as_str()),
            "a status after the rollback undid it: {status:#?}"
        );
        assert_ne!(status.last_good_revision.as_deref(), Some(v2.as_str()));
    }
    let still = deployments.get("flaky").await.unwrap();
    assert_eq!(deployed(&ns, "flaky").await, v1, "{still:?}");
    // Told once, to the Event and the receiver alike.
    wait_for(&api, "flaky", "every decision told", DEADLINE, |gs| {
        gs.status.as_ref().is_some_and(|s| s.outbox.is_empty())
    })
    .await
    .unwrap();
    let rolled_back = events_about(&ns, "flaky", "RolledBack").await;
    assert_eq!(rolled_back.len(), 1, "{rolled_back:#?}");
    let delivered: Vec<_> = receiver
        .delivered()
        .into_iter()
        .filter(|c| c.decision().0 == "RolledBack")
        .collect();
    assert_eq!(delivered.len(), 1, "{delivered:#?}");
    assert_eq!(
        api.get("flaky").await.unwrap().name_any(),
        "flaky",
        "the GoServer is still there"
    );
}

/// An operator taking over from one whose clock is right, with a clock 60
/// s fast (`GANTRY_CLOCK_OFFSET`), must not find the window over early
/// and count samples closer together than `interval`: times in status are
/// the apiserver's, whatever the replica's clock says. The revision may
/// pass no sooner than warm-up plus `minSamples - 1` intervals after it
/// became available, as the test sees the statuses come.
#[tokio::test(flavor = "multi_thread")]
async fn a_successor_whose_clock_runs_fast_passes_nothing_early() {
    let ns = TestNamespace::new("clock").await;
    let prometheus = ScriptedPrometheus::start().await;
    prometheus.answer_others(Answer::Value(0.0));
    let url = prometheus.url();
    let first = Operator::start_with(&ns, &["--prometheus-url", &url]).await;
    let api: Api<GoServer> = ns.api();
    let history = History::start(&api, "skew");
    // Samples 10 s apart, three needed: the third comes 21 s after the
    // revision is available, whatever the window (1 s).
    let timing = json!({"rollout": {"verification": {
        "warmup": "1s", "interval": "10s", "window": "1s",
        "minSamples": 3, "failureLimit": 0,
        "metrics": [{"name": "error-rate", "query": r#"errors{revision="${revision}"}"#, "max": 0.05}],
    }}});
    api.create(
        &PostParams::default(),
        &goserver("skew", "skew:1", None, &timing),
    )
    .await
    .unwrap();
    let v1 = verifying_none_of(&api, "skew", &[]).await;
    wait_for(&api, "skew", "the first sample", DEADLINE, |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.verification.as_ref())
            .is_some_and(|v| v.metrics.first().is_some_and(|m| m.passed == 1))
    })
    .await
    .unwrap();
    first.kill();
    let _fast = Operator::start_with_env(
        &ns,
        &["--prometheus-url", &url],
        &[(gantry_operator::fault::CLOCK_VARIABLE, "60s")],
    )
    .await;
    wait_for(&api, "skew", "v1 verified", DEADLINE, |gs| {
        verification_of(gs, &v1).is_some_and(|(phase, _)| phase == VerificationPhase::Passed)
    })
    .await
    .unwrap();
    let statuses = history.timed();
    let seen = |phase: VerificationPhase| {
        statuses
            .iter()
            .find(|(_, gs)| verification_of(gs, &v1).is_some_and(|(p, _)| p == phase))
            .map(|(at, _)| *at)
            .expect("that status")
    };
    let took = seen(VerificationPhase::Passed) - seen(VerificationPhase::Measuring);
    // Warm-up 1 s, then two more intervals of 10 s (less a second for the
    // whole seconds of status times).
    assert!(
        took >= std::time::Duration::from_secs(20),
        "passed {took:?} after it was available"
    );
    let v = api
        .get("skew")
        .await
        .unwrap()
        .status
        .unwrap()
        .verification
        .unwrap();
    assert_eq!(v.metrics[0].passed, 3, "{v:?}");
}

/// The same for a verification that passes (`--faults` only): held from
/// the revision's first measurement, the view never sees the `Verified`
/// decision; reconciles on it must neither measure the revision again nor
/// decide it a second time. One Event, one delivery, and every status
/// after the decision keeps the revision verified.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_status_never_repeats_a_told_verification() {
    if !gantry_e2e::faults::full() {
        println!("runs with --faults");
        return;
    }
    let ns = TestNamespace::new("stale-verified").await;
    let Behind {
        prometheus: _prometheus,
        proxy,
        operator,
        receiver,
        hook,
        _dir,
    } = Behind::start(&ns).await;
    let api: Api<GoServer> = ns.api();
    let history = History::start(&api, "steady");
    api.create(
        &PostParams::default(),
        &goserver("steady", "steady:1", Some(&hook), &json!({})),
    )
    .await
    .unwrap();
    let v1 = verifying_none_of(&api, "steady", &[]).await;
    wait_for(&api, "steady", "v1 measuring", DEADLINE, |gs| {
        verification_of(gs, &v1).is_some_and(|(phase, _)| phase == VerificationPhase::Measuring)
    })
    .await
    .unwrap();
    let goservers = GoServer::url_path(&(), Some(&ns.name));
    proxy.hold(&goservers, Delivery::All);
    wait_until("the verification told", DEADLINE, || async {
        Ok::<_, String>((!events_about(&ns, "steady", "Verified").await.is_empty()).then_some(()))
    })
    .await
    .unwrap();
    poke_reconciles(&ns, &operator, "steady", 3).await;
    proxy.release(&goservers);
    let statuses = history.all();
    for gs in statuses.iter().skip_while(|gs| {
        gs.status
            .as_ref()
            .is_none_or(|s| s.last_good_revision.as_deref() != Some(v1.as_str()))
    }) {
        assert_eq!(
            verification_of(gs, &v1).map(|(phase, _)| phase),
            Some(VerificationPhase::Passed),
            "a status after the verification: {:#?}",
            gs.status
        );
    }
    wait_for(&api, "steady", "every decision told", DEADLINE, |gs| {
        gs.status.as_ref().is_some_and(|s| s.outbox.is_empty())
    })
    .await
    .unwrap();
    assert_eq!(events_about(&ns, "steady", "Verified").await.len(), 1);
    assert_eq!(receiver.delivered().len(), 1, "{:#?}", receiver.delivered());
}
