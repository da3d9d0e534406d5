//! A crash after every distinct write of a rollout's life, as Sieve tests
//! controllers, with the rollout's own oracles.
//!
//! The life of one `GoServer` (scripted Prometheus answers per revision, a
//! stand-in Gateway accepting the route, a webhook receiver):
//!
//! 1. v1, good: verified.
//! 2. v2, bad: rolled back to v1.
//! 3. the Canary strategy and v3, good: two steps, promoted, drained.
//! 4. v4, bad at first: aborted at its first step, rolled back, drained.
//! 5. v4 retried by annotation, good now: promoted.
//! 6. a rollback to v3 by annotation: v3 in force, v4 held off.
//! 7. v5, without data: promoted by annotation.
//!
//! A reference run logs every write the operator makes, named by what it
//! is (`<VERB> <resource> <name> <phase>`, see `gantry_operator::fault`).
//! Each crash run drives the same life with an operator that kills itself
//! after the first write named `<what>` that it makes once the life has
//! reached step `<k>` (`GANTRY_CRASH_AT=write:<what>`, armed by a file the
//! test creates at that step), then starts a new operator. Points are
//! named by what the write is, not by when it comes, so concurrent writes
//! in another order name the same points.
//!
//! Oracles, in every run: it crashed at its point; every step ends where
//! the reference's did (the same children and status, over several equal
//! looks); each child kind and name was created and deleted as often as in
//! the reference (nothing deleted and made again); every decision of the
//! reference was told by exactly one Event (named by its id) and at least
//! one delivered webhook call; and the repeats of a delivery are counted.
//!
//! `cargo xtask test` runs a sample of the points (the seed is printed);
//! `cargo xtask test --faults` runs every one.

mod operator_support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gantry_e2e::faults::{full, pick};
use gantry_e2e::gateway_standin::GatewayStandIn;
use gantry_e2e::receiver::Receiver;
use gantry_e2e::scripted_prometheus::{Answer, ScriptedPrometheus};
use gantry_e2e::snapshot::{self, Snapshot};
use gantry_e2e::{TestNamespace, gateway_crds};
use gantry_operator::crd::{CanaryPhase, GoServer};
use gantry_operator::gateway::HttpRoute;
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use operator_support::{DEADLINE, Operator, events_about, has_condition};
use serde_json::{Value, json};

const NAME: &str = "life";

/// Crash runs in the default suite; `--faults` runs every point.
const SAMPLED: usize = 3;
/// Crash runs at once, each in a namespace of its own.
const CONCURRENT: usize = 3;

const BAD: f64 = 0.5;
const GOOD: f64 = 0.0;

/// The steps of the life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Verified,
    RolledBack,
    CanaryPromoted,
    CanaryAborted,
    Retried,
    RollbackTo,
    Promoted,
}

const LIFE: [Step; 7] = [
    Step::Verified,
    Step::RolledBack,
    Step::CanaryPromoted,
    Step::CanaryAborted,
    Step::Retried,
    Step::RollbackTo,
    Step::Promoted,
];

/// A crash point: the write named `what`, once the life is at `step`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Point {
    step: usize,
    what: String,
}

fn goserver(hook: &str) -> GoServer {
    serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": NAME},
        "spec": {
            "image": "life:1",
            "replicas": 2,
            "route": {"parentRefs": [{"name": "public"}], "hostnames": ["life.example.com"]},
            "rollout": {
                "gateway": {"drain": "1s", "timeout": "30s"},
                "verification": {
                    "warmup": "1s", "interval": "1s", "window": "2s",
                    "minSamples": 2, "failureLimit": 0,
                    "receivers": [{"name": "ci", "url": hook}],
                    "metrics": [{"name": "error-rate", "max": 0.05,
                                 "query": r#"errors{namespace="${namespace}",revision="${revision}"}"#}],
                },
            },
        },
    }))
    .expect("a valid GoServer")
}

/// The children's UIDs, per `kind/name`, as watches see them: how often
/// each was created and deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Churn {
    created: BTreeMap<String, BTreeSet<String>>,
    deleted: BTreeMap<String, BTreeSet<String>>,
}

impl Churn {
    /// `kind/name` to (creations, deletions).
    fn summary(&self) -> BTreeMap<String, (usize, usize)> {
        let names: BTreeSet<&String> = self.created.keys().chain(self.deleted.keys()).collect();
        names
            .into_iter()
            .map(|name| {
                (
                    name.clone(),
                    (
                        self.created.get(name).map_or(0, BTreeSet::len),
                        self.deleted.get(name).map_or(0, BTreeSet::len),
                    ),
                )
            })
            .collect()
    }
}

/// Watches every child kind of the `GoServer` into a [`Churn`].
fn watch_churn(ns: &TestNamespace) -> (Arc<Mutex<Churn>>, Vec<tokio::task::JoinHandle<()>>) {
    let churn = Arc::new(Mutex::new(Churn::default()));
    let selector = format!("app.kubernetes.io/managed-by=gantry,app.kubernetes.io/instance={NAME}");
    let tasks = vec![
        churn_of::<Deployment>(ns, &selector, &churn),
        churn_of::<Service>(ns, &selector, &churn),
        churn_of::<ConfigMap>(ns, &selector, &churn),
        churn_of::<ControllerRevision>(ns, &selector, &churn),
        churn_of::<HttpRoute>(ns, &selector, &churn),
    ];
    (churn, tasks)
}

fn churn_of<K: snapshot::Namespaced + Send + Sync + 'static>(
    ns: &TestNamespace,
    selector: &str,
    churn: &Arc<Mutex<Churn>>,
) -> tokio::task::JoinHandle<()> {
    let api: Api<K> = ns.api();
    let churn = Arc::clone(churn);
    let stream = watcher(api, watcher::Config::default().labels(selector));
    tokio::spawn(async move {
        let mut stream = stream.boxed();
        while let Some(event) = stream.next().await {
            let (object, deleted) = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => (o, false),
                Ok(watcher::Event::Delete(o)) => (o, true),
                _ => continue,
            };
            let key = format!("{}/{}", K::kind(&()), object.name_any());
            let uid = object.uid().unwrap_or_default();
            let mut churn = churn.lock().expect("the churn");
            let map = if deleted {
                &mut churn.deleted
            } else {
                &mut churn.created
            };
            map.entry(key).or_default().insert(uid);
        }
    })
}

/// What a run leaves behind for the oracles.
struct Outcome {
    snapshots: Vec<Snapshot>,
    churn: BTreeMap<String, (usize, usize)>,
    /// `(event, revision)` of each decision Event.
    events: Vec<(String, String)>,
    /// `(event, revision)` of each delivered webhook call, with its id.
    delivered: Vec<(String, String, String)>,
    /// The writes named in each step (the reference run's only).
    writes: Vec<Vec<String>>,
    /// Whether the first operator died at its crash point.
    crashed: bool,
}

/// One life, under an operator that may crash.
struct Life {
    ns: TestNamespace,
    prometheus: ScriptedPrometheus,
    receiver: Receiver,
    hook: String,
    _gateway: GatewayStandIn,
    operator: Option<Operator>,
    point: Option<Point>,
    armed: PathBuf,
    _dir: tempfile::TempDir,
    crashed: Option<String>,
    churn: Arc<Mutex<Churn>>,
    watches: Vec<tokio::task::JoinHandle<()>>,
    /// The revision of each image, once known.
    revisions: BTreeMap<&'static str, String>,
}

impl Drop for Life {
    fn drop(&mut self) {
        for watch in &self.watches {
            watch.abort();
        }
    }
}

impl Life {
    async fn start(point: Option<Point>) -> Self {
        let ns = TestNamespace::new("life").await;
        gateway_crds::install(&ns.client)
            .await
            .expect("the Gateway API CRDs");
        let prometheus = ScriptedPrometheus::start().await;
        let (receiver, hook) = Receiver::start().await;
        let gateway = GatewayStandIn::start(&ns);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let armed = dir.path().join("armed");
        let (churn, watches) = watch_churn(&ns);
        let mut life = Self {
            ns,
            prometheus,
            receiver,
            hook,
            _gateway: gateway,
            operator: None,
            point,
            armed,
            _dir: dir,
            crashed: None,
            churn,
            watches,
            revisions: BTreeMap::new(),
        };
        life.operator = Some(life.start_operator(true).await);
        life
    }

    /// An operator: the first one with the crash point (or, in the
    /// reference run, naming every write), a successor without.
    async fn start_operator(&self, first: bool) -> Operator {
        let url = self.prometheus.url();
        let args = ["--prometheus-url", url.as_str()];
        let armed = self.armed.display().to_string();
        let crash = self.point.as_ref().map(|p| format!("write:{}", p.what));
        let env: Vec<(&str, &str)> = match (&crash, first) {
            (Some(crash), true) => vec![
                (gantry_operator::fault::VARIABLE, crash.as_str()),
                (gantry_operator::fault::ARMED_VARIABLE, armed.as_str()),
            ],
            (None, true) => vec![(gantry_operator::fault::VARIABLE, "trace-writes")],
            _ => Vec::new(),
        };
        Operator::start_with_env(&self.ns, &args, &env).await
    }

    /// Starts a successor once the first operator has died at its point.
    async fn supervise(&mut self) {
        let Some(operator) = self.operator.as_mut() else {
            return;
        };
        let Some(status) = operator.wait_exit(Duration::ZERO) else {
            return;
        };
        assert!(
            self.crashed.is_none(),
            "the restarted operator exited too ({status}) in {}",
            self.ns.name
        );
        assert_eq!(
            status.signal(),
            Some(9),
            "the operator crashing at {:?} ended with {status}",
            self.point
        );
        let _ = std::fs::remove_file(&self.armed);
        self.crashed = Some(status.to_string());
        self.operator = Some(self.start_operator(false).await);
    }

    fn api(&self) -> Api<GoServer> {
        self.ns.api()
    }

    /// The revision `image` makes of the live `GoServer`'s spec.
    async fn revision(&mut self, image: &'static str) -> String {
        if let Some(known) = self.revisions.get(image) {
            return known.clone();
        }
        let mut gs = self.api().get(NAME).await.expect("the GoServer");
        image.clone_into(&mut gs.spec.image);
        let revision = gantry_operator::build::spec_revision(&gs)
            .expect("a revision")
            .name;
        self.revisions.insert(image, revision.clone());
        revision
    }

    async fn answer(&mut self, image: &'static str, value: f64) {
        let revision = self.revision(image).await;
        self.prometheus.answer(&revision, Answer::Value(value));
    }

    async fn merge(&self, patch: Value) {
        self.api()
            .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patching the GoServer");
    }

    async fn act(&mut self, step: Step) {
        match step {
            Step::Verified => {
                let gs = goserver(&self.hook);
                self.api()
                    .create(&PostParams::default(), &gs)
                    .await
                    .expect("creating the GoServer");
                self.answer("life:1", GOOD).await;
            }
            Step::RolledBack => {
                self.answer("life:2", BAD).await;
                self.merge(json!({"spec": {"image": "life:2"}})).await;
            }
            Step::CanaryPromoted => {
                self.answer("life:3", GOOD).await;
                self.merge(json!({"spec": {"image": "life:3", "rollout": {
                    "strategy": "Canary",
                    "steps": [{"weight": 20, "pause": "3s"}, {"weight": 50, "pause": "3s"}],
                }}}))
                .await;
            }
            Step::CanaryAborted => {
                self.answer("life:4", BAD).await;
                self.merge(json!({"spec": {"image": "life:4"}})).await;
            }
            Step::Retried => {
                self.answer("life:4", GOOD).await;
                let v4 = self.revision("life:4").await;
                self.merge(json!({"metadata": {"annotations": {"gantry.dev/retry": v4}}}))
                    .await;
            }
            Step::RollbackTo => {
                let v3 = self.revision("life:3").await;
                self.merge(json!({"metadata": {"annotations": {"gantry.dev/rollback-to": v3}}}))
                    .await;
            }
            Step::Promoted => {
                // No data: the canary's step cannot pass by itself.
                let v5 = self.revision("life:5").await;
                self.prometheus.answer(&v5, Answer::NoData);
                self.merge(json!({"spec": {"image": "life:5"}})).await;
            }
        }
    }

    /// What a step waits for after its action, besides settling: the
    /// promotion by annotation needs the canary measuring first.
    async fn midway(&mut self, step: Step) -> Result<bool, String> {
        if step != Step::Promoted {
            return Ok(true);
        }
        let v5 = self.revision("life:5").await;
        let gs = self.api().get(NAME).await.map_err(|e| e.to_string())?;
        let status = gs.status.unwrap_or_default();
        let measuring = status
            .verification
            .as_ref()
            .is_some_and(|v| v.revision == v5 && v.last_measured_at.is_some());
        let asked = gs
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("gantry.dev/promote"));
        let promoted = status.last_good_revision.as_deref() == Some(v5.as_str());
        if measuring && !asked && !promoted {
            self.merge(json!({"metadata": {"annotations": {"gantry.dev/promote": v5}}}))
                .await;
        }
        Ok(true)
    }

    /// Whether `step` is done: the state it leads to, fully told.
    async fn done(&mut self, step: Step, gs: &GoServer) -> bool {
        let Some(status) = gs.status.as_ref() else {
            return false;
        };
        let told = status.outbox.is_empty()
            && gs
                .metadata
                .annotations
                .as_ref()
                .is_none_or(|a| !a.keys().any(|k| k.starts_with("gantry.dev/")))
            && has_condition(gs, "Ready", "True");
        if !told {
            return false;
        }
        let canary_gone = snapshot_lacks_canary(&self.ns).await;
        let v = |image| self.revisions.get(image).cloned().unwrap_or_default();
        let good = status.last_good_revision.clone().unwrap_or_default();
        let failed = status.failed_revision.clone();
        let revision = status.revision.clone().unwrap_or_default();
        let canary = status
            .canary
            .as_ref()
            .map(|c| (c.revision.clone(), c.phase));
        match step {
            Step::Verified => good == v("life:1") && revision == good,
            Step::RolledBack => failed == Some(v("life:2")) && revision == v("life:1"),
            Step::CanaryPromoted => {
                good == v("life:3")
                    && revision == good
                    && canary == Some((good.clone(), CanaryPhase::Promoted))
                    && canary_gone
            }
            Step::CanaryAborted => {
                failed == Some(v("life:4"))
                    && revision == v("life:3")
                    && canary == Some((v("life:4"), CanaryPhase::Aborted))
                    && canary_gone
            }
            Step::Retried => {
                good == v("life:4")
                    && failed.is_none()
                    && revision == good
                    && canary == Some((good.clone(), CanaryPhase::Promoted))
                    && canary_gone
            }
            Step::RollbackTo => revision == v("life:3") && failed == Some(v("life:4")),
            Step::Promoted => {
                good == v("life:5")
                    && revision == good
                    && canary == Some((good.clone(), CanaryPhase::Promoted))
                    && canary_gone
            }
        }
    }

    /// Waits until `step` is done, restarting a crashed operator meanwhile;
    /// what it left. Without `expected` (the reference), done and the same
    /// over three looks; with it, done and equal to it.
    async fn converge(
        &mut self,
        step: Step,
        expected: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let deadline = Instant::now() + DEADLINE;
        let mut same = 0;
        let mut last: Option<Snapshot> = None;
        loop {
            self.supervise().await;
            self.midway(step).await?;
            let (gs, snapshot) = snapshot::take(&self.ns, NAME).await;
            let snapshot = rollout_view(snapshot);
            let done = match &gs {
                Some(gs) => self.done(step, gs).await,
                None => false,
            };
            match expected {
                Some(expected) if done && &snapshot == expected => return Ok(snapshot),
                Some(_) => {}
                None if done && last.as_ref() == Some(&snapshot) => {
                    same += 1;
                    if same == 2 {
                        return Ok(snapshot);
                    }
                }
                None => same = 0,
            }
            if Instant::now() >= deadline {
                let seen = match expected {
                    Some(expected) if done => format!(
                        "it ended differently: {}",
                        snapshot::difference(expected, &snapshot)
                    ),
                    _ => format!("it did not finish; last seen: {snapshot:#?}"),
                };
                return Err(format!(
                    "step {step:?} in {} (crash at {:?}), {DEADLINE:?}: {seen}",
                    self.ns.name, self.point
                ));
            }
            last = Some(snapshot);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The writes the (reference) operator has logged so far.
    fn writes(&self) -> Vec<String> {
        self.operator
            .as_ref()
            .map(|o| {
                o.log()
                    .iter()
                    .filter(|l| l["message"] == "write")
                    .filter_map(|l| l["what"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drives the whole life; `reference` gives each step's expected end.
    async fn run(mut self, reference: Option<&Outcome>) -> Result<Outcome, String> {
        let mut snapshots = Vec::new();
        let mut writes = Vec::new();
        for (k, step) in LIFE.into_iter().enumerate() {
            if self.point.as_ref().is_some_and(|p| p.step == k) && self.crashed.is_none() {
                std::fs::write(&self.armed, b"").expect("arming the crash point");
            }
            let before = self.writes().len();
            self.act(step).await;
            let expected = reference.map(|r| &r.snapshots[k]);
            snapshots.push(self.converge(step, expected).await?);
            let all = self.writes();
            let mut distinct: Vec<String> = Vec::new();
            for what in &all[before.min(all.len())..] {
                if !distinct.contains(what) {
                    distinct.push(what.clone());
                }
            }
            writes.push(distinct);
        }
        let events = decision_events(&self.ns).await;
        let delivered = self
            .receiver
            .delivered()
            .iter()
            .map(|c| {
                let (event, revision) = c.decision();
                (event, revision, c.id())
            })
            .collect();
        let churn = self.churn.lock().expect("the churn").summary();
        Ok(Outcome {
            snapshots,
            churn,
            events,
            delivered,
            writes,
            crashed: self.crashed.is_some(),
        })
    }
}

/// Whether no canary Deployment exists.
async fn snapshot_lacks_canary(ns: &TestNamespace) -> bool {
    ns.api::<Deployment>()
        .get_opt(&format!("{NAME}-canary"))
        .await
        .ok()
        .flatten()
        .is_none()
}

/// The snapshot without what depends on the moment of each sample (how
/// many samples a window held, each's value): what the operator decided
/// stays.
fn rollout_view(mut snapshot: Snapshot) -> Snapshot {
    if let Some(gs) = snapshot.get_mut(snapshot::GOSERVER) {
        let status = &mut gs["status"];
        if let Some(v) = status
            .get_mut("verification")
            .and_then(Value::as_object_mut)
        {
            v.remove("metrics");
        }
        for entry in status["history"].as_array_mut().into_iter().flatten() {
            if let Some(entry) = entry.as_object_mut() {
                entry.remove("metrics");
            }
        }
        for verdict in status["canary"]["verdicts"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if let Some(verdict) = verdict.as_object_mut() {
                verdict.remove("metrics");
            }
        }
    }
    snapshot
}

/// `(reason, revision)` of every decision Event about the `GoServer`.
async fn decision_events(ns: &TestNamespace) -> Vec<(String, String)> {
    let mut events = Vec::new();
    for reason in ["Verified", "Failed", "RolledBack"] {
        for event in events_about(ns, NAME, reason).await {
            let revision = event
                .related
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_default();
            events.push((reason.to_owned(), revision));
        }
    }
    events.sort();
    events
}

/// The decisions a run told, checked against the reference's: each by
/// exactly one Event, each delivered at least once; the repeated
/// deliveries (a crash between delivering and recording it), counted.
fn check_decisions(got: &Outcome, reference: &Outcome) -> Result<usize, String> {
    if got.events != reference.events {
        return Err(format!(
            "decision Events {:?}, the reference told {:?}",
            got.events, reference.events
        ));
    }
    let decisions: BTreeSet<(String, String)> = reference
        .delivered
        .iter()
        .map(|(e, r, _)| (e.clone(), r.clone()))
        .collect();
    let mut repeats = 0;
    for decision in &decisions {
        let ids: Vec<&String> = got
            .delivered
            .iter()
            .filter(|(e, r, _)| (e, r) == (&decision.0, &decision.1))
            .map(|(_, _, id)| id)
            .collect();
        let distinct: BTreeSet<&&String> = ids.iter().collect();
        let expected = reference
            .delivered
            .iter()
            .filter(|(e, r, _)| (e, r) == (&decision.0, &decision.1))
            .count();
        if distinct.len() != expected {
            return Err(format!(
                "decision {decision:?} delivered under {} ids, the reference under {expected}",
                distinct.len()
            ));
        }
        repeats += ids.len() - distinct.len();
    }
    Ok(repeats)
}

/// The reference run, and the crash points it names.
async fn reference() -> (Outcome, Vec<Point>) {
    let life = Life::start(None).await;
    let outcome = life
        .run(None)
        .await
        .unwrap_or_else(|e| panic!("the reference run: {e}"));
    let points: Vec<Point> = outcome
        .writes
        .iter()
        .enumerate()
        .flat_map(|(step, writes)| {
            writes.iter().map(move |what| Point {
                step,
                what: what.clone(),
            })
        })
        .collect();
    (outcome, points)
}

/// One crash run: how it diverged, if it did, and whether it crashed.
async fn crash_run(point: Point, reference: &Outcome) -> (Point, Result<usize, String>, bool) {
    let life = Life::start(Some(point.clone())).await;
    match life.run(Some(reference)).await {
        Err(failure) => (point, Err(failure), true),
        Ok(outcome) => {
            let crashed = outcome.crashed;
            let result = if outcome.churn == reference.churn {
                check_decisions(&outcome, reference)
            } else {
                Err(format!(
                    "children created and deleted {:?}, the reference {:?}",
                    outcome.churn, reference.churn
                ))
            };
            (point, result, crashed)
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_any_rollout_write_ends_where_the_reference_did() {
    let (reference, points) = reference().await;
    assert!(!points.is_empty(), "the reference run named no write");
    println!(
        "the reference life named {} crash points over {} steps; decisions told: {:?}",
        points.len(),
        LIFE.len(),
        reference.events
    );
    let picked: Vec<Point> = if full() {
        points.clone()
    } else {
        let count = u64::try_from(points.len()).unwrap_or(u64::MAX);
        pick(count, SAMPLED)
            .into_iter()
            .filter_map(|i| points.get(usize::try_from(i).ok()? - 1).cloned())
            .collect()
    };
    println!("crashing at {picked:#?}");
    let results: Vec<(Point, Result<usize, String>, bool)> = futures::stream::iter(picked)
        .map(|point| {
            let reference = &reference;
            async move { crash_run(point, reference).await }
        })
        .buffer_unordered(CONCURRENT)
        .collect()
        .await;
    let crashed = results.iter().filter(|(_, _, crashed)| *crashed).count();
    let repeats: usize = results.iter().filter_map(|(_, r, _)| r.as_ref().ok()).sum();
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(point, r, _)| r.as_ref().err().map(|e| format!("{point:?}: {e}")))
        .collect();
    let unreached: Vec<&Point> = results
        .iter()
        .filter(|(_, _, crashed)| !crashed)
        .map(|(p, _, _)| p)
        .collect();
    let repeated: Vec<String> = results
        .iter()
        .filter(|(_, r, _)| r.as_ref().is_ok_and(|n| *n > 0))
        .map(|(point, r, _)| {
            format!(
                "{} at step {}: {}",
                point.what,
                point.step + 1,
                r.as_ref().unwrap_or(&0)
            )
        })
        .collect();
    println!(
        "{} crash runs, {crashed} reached their point, {} diverged, {repeats} repeated deliveries ({repeated:?}); not reached: {unreached:?}",
        results.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    // A write the reference made may not come in another run (a status
    // write folded into one, a retry that was not needed); most must.
    assert!(
        crashed * 3 >= results.len() * 2,
        "only {crashed} of {} runs crashed",
        results.len()
    );
}
