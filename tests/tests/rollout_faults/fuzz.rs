//! The live Acto fuzz on the rollout: a `GoServer` with verification and
//! the Canary strategy (a scripted Prometheus, a stand-in Gateway) whose
//! `spec.rollout` is edited, by mutations drawn from the CRD's own schema,
//! while a revision is being judged.
//!
//! For each admitted mutation: a new revision starts under the seed's
//! analysis and the edit lands mid-window; then another revision runs
//! under the edited spec; then the seed comes back with a third. Oracles:
//! the verification running when the edit landed judges by the analysis it
//! began with (the record in status), whatever the edit; every revision
//! ends in a state that tells itself (verified and promoted, failed and
//! rolled back or held, or held past its deadline and saying so), with
//! every decision told; a revision once rolled back never runs again
//! while held off; and the seed, back, verifies again.
//!
//! `cargo xtask test` applies a sample of the mutations; `--faults` more.

use std::sync::{Arc, Mutex};

use crate::operator_support::{DEADLINE, Operator, deployed};
use futures::StreamExt;
use gantry_e2e::gateway_standin::GatewayStandIn;
use gantry_e2e::mutate::{Mutation, mutations};
use gantry_e2e::scripted_prometheus::{Answer, ScriptedPrometheus};
use gantry_e2e::{TestNamespace, gateway_crds, wait_until};
use gantry_operator::crd::{Analysis, GoServer, VerificationPhase};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::{Api, CustomResourceExt};
use serde_json::{Value, json};

const NAME: &str = "fuzzed";
/// Mutations applied in the default suite, and with `--faults`.
const SAMPLED: usize = 1;
const FULL: usize = 16;

/// What every revision measures: inside the seed's bound, outside a
/// tightened one.
const VALUE: f64 = 0.01;

fn seed() -> Value {
    json!({
        "image": "fuzz:0",
        "replicas": 2,
        "route": {"parentRefs": [{"name": "public"}]},
        "rollout": {
            "strategy": "Canary",
            "steps": [{"weight": 20, "pause": "3s"}, {"weight": 50, "pause": "3s"}],
            "gateway": {"drain": "1s", "timeout": "20s"},
            "verification": {
                "warmup": "1s", "interval": "1s", "window": "2s",
                "minSamples": 2, "failureLimit": 0, "deadline": "6s",
                "metrics": [{"name": "error-rate", "max": 0.05,
                             "query": r#"errors{namespace="${namespace}",revision="${revision}"}"#}],
            },
        },
    })
}

fn spec_schema() -> Value {
    let crd = serde_json::to_value(GoServer::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

/// The Deployment's revisions, in the order it ran them.
fn watch_deployed(ns: &TestNamespace) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&seen);
    let api: Api<Deployment> = ns.api();
    let stream = watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={NAME}")),
    );
    let task = tokio::spawn(async move {
        let mut stream = stream.boxed();
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) = event {
                let revision = d
                    .spec
                    .and_then(|s| s.template.metadata)
                    .and_then(|m| m.labels)
                    .and_then(|l| l.get("gantry.dev/revision").cloned())
                    .unwrap_or_default();
                let mut seen = sink.lock().unwrap();
                if seen.last() != Some(&revision) {
                    seen.push(revision);
                }
            }
        }
    });
    (seen, task)
}

/// Whether the rollout of `gs`'s spec has ended in a state that tells
/// itself; `None` while it goes on, else a word for it.
fn ended(gs: &GoServer) -> Option<&'static str> {
    let status = gs.status.as_ref()?;
    if status.observed_generation != gs.metadata.generation || !status.outbox.is_empty() {
        return None;
    }
    let canary_running = status.canary.as_ref().is_some_and(|c| {
        c.drain_until.is_none() || c.phase == gantry_operator::crd::CanaryPhase::Progressing
    });
    let verifying = gs
        .spec
        .rollout
        .as_ref()
        .is_some_and(|r| r.verification.is_some());
    if !verifying {
        // Every available revision is good.
        let good = status.revision.is_some() && status.revision == status.last_good_revision;
        return (good && !canary_running).then_some("unverified");
    }
    let v = status.verification.as_ref()?;
    let degraded = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Degraded" && c.status == "True" && !c.message.is_empty());
    match v.phase {
        VerificationPhase::Passed if !canary_running => Some("verified"),
        VerificationPhase::Failed if degraded && !canary_running => Some("failed"),
        VerificationPhase::Pending | VerificationPhase::Measuring
            if degraded && (v.overdue_at.is_some() || v.reason == "InvalidQuery") =>
        {
            Some("held")
        }
        _ => None,
    }
}

/// How long a rollout of `spec` may take by its own timing: every step's
/// pause (or the window), the warm-up, the deadline for a verdict and the
/// drain.
fn rollout_time(spec: &gantry_operator::crd::GoServerSpec) -> std::time::Duration {
    use gantry_operator::rollout::duration;
    let read = |text: &str| duration::parse(text).unwrap_or_default();
    let Some(rollout) = &spec.rollout else {
        return std::time::Duration::ZERO;
    };
    let steps: std::time::Duration = rollout.steps.iter().map(|s| read(&s.pause)).sum();
    let verification = rollout
        .verification
        .as_ref()
        .map_or(std::time::Duration::ZERO, |v| {
            read(&v.warmup) + read(&v.window) + read(&v.deadline)
        });
    let gateway = rollout
        .gateway
        .as_ref()
        .map_or(std::time::Duration::from_secs(30), |g| read(&g.drain));
    steps.max(verification) + verification + gateway
}

struct Fuzzed {
    ns: TestNamespace,
    api: Api<GoServer>,
    image: u32,
}

impl Fuzzed {
    /// Sets the spec (with a new image, so a new revision) and returns
    /// the generation written.
    async fn set(&mut self, spec: &Value) -> i64 {
        self.image += 1;
        let mut spec = spec.clone();
        spec["image"] = json!(format!("fuzz:{}", self.image));
        self.replace(&spec).await
    }

    /// Replaces the spec as it is (the image of the revision under way).
    async fn replace(&self, spec: &Value) -> i64 {
        loop {
            let mut gs = self.api.get(NAME).await.expect("the GoServer");
            gs.spec = serde_json::from_value(spec.clone()).expect("a spec");
            match self.api.replace(NAME, &PostParams::default(), &gs).await {
                Ok(gs) => return gs.metadata.generation.unwrap_or_default(),
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(e) => panic!("replacing the spec: {e}"),
            }
        }
    }

    /// Waits until the rollout ends; the `GoServer` then.
    async fn end(&self, what: &str) -> GoServer {
        // The spec's own timing may be long (a mutation can make a step
        // last minutes): the wait grows with it.
        let spec = self.api.get(NAME).await.expect("the GoServer").spec;
        let timeout = (DEADLINE + 2 * rollout_time(&spec)).min(std::time::Duration::from_secs(600));
        wait_until(what, timeout, || async {
            let gs = self.api.get(NAME).await.map_err(|e| e.to_string())?;
            match ended(&gs) {
                Some(_) => Ok(Some(gs)),
                None => Err(format!("{:?}", gs.status)),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn image_spec(&self, spec: &Value) -> Value {
        let mut spec = spec.clone();
        spec["image"] = json!(format!("fuzz:{}", self.image));
        spec
    }
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // one story per mutation, told in order
async fn rollout_edits_mid_window_end_in_states_that_tell_themselves() {
    let ns = TestNamespace::new("rollout-fuzz").await;
    gateway_crds::install(&ns.client).await.unwrap();
    let prometheus = ScriptedPrometheus::start().await;
    prometheus.answer_others(Answer::Value(VALUE));
    let url = prometheus.url();
    let _operator = Operator::start_with(&ns, &["--prometheus-url", &url]).await;
    let _gateway = GatewayStandIn::start(&ns);
    let api: Api<GoServer> = ns.api();
    let seed = seed();
    let gs: GoServer = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": NAME}, "spec": seed,
    }))
    .unwrap();
    api.create(&PostParams::default(), &gs).await.unwrap();
    let mut fuzzed = Fuzzed {
        ns,
        api: api.clone(),
        image: 0,
    };
    let (deployments, _watch) = watch_deployed(&fuzzed.ns);
    let first = fuzzed.end("the seed verified").await;
    assert_eq!(ended(&first), Some("verified"));
    let seed_analysis =
        Analysis::of(&serde_json::from_value(seed["rollout"]["verification"].clone()).unwrap());

    // Edits of the rollout the apiserver admits.
    let mut admitted: Vec<Mutation> = Vec::new();
    for m in mutations(&spec_schema(), &seed)
        .into_iter()
        .filter(|m| m.valid && m.path.starts_with("spec.rollout"))
    {
        let probe: GoServer = serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
            "metadata": {"name": "fuzz-probe"}, "spec": m.spec,
        }))
        .unwrap();
        let params = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        if api.create(&params, &probe).await.is_ok() {
            admitted.push(m);
        }
    }
    let count = if gantry_e2e::faults::full() {
        FULL
    } else {
        SAMPLED
    };
    let picked: Vec<&Mutation> = gantry_e2e::faults::pick(admitted.len() as u64, count)
        .into_iter()
        .map(|i| &admitted[usize::try_from(i - 1).unwrap()])
        .collect();
    println!(
        "{} rollout edits admitted; applying {:?}",
        admitted.len(),
        picked
            .iter()
            .map(|m| format!("{} {}", m.path, m.what))
            .collect::<Vec<_>>()
    );

    let mut findings = Vec::new();
    for m in picked {
        let edit = format!("{} {}", m.path, m.what);
        // A new revision under the seed's analysis; the edit lands while
        // it is judged.
        fuzzed.set(&seed).await;
        wait_until("the new revision measured", DEADLINE, || async {
            let gs = api.get(NAME).await.map_err(|e| e.to_string())?;
            let measured = gs
                .status
                .as_ref()
                .and_then(|s| s.verification.as_ref())
                .is_some_and(|v| {
                    v.last_measured_at.is_some()
                        && v.phase == VerificationPhase::Measuring
                        && Some(v.revision.as_str())
                            != first.status.as_ref().and_then(|s| s.revision.as_deref())
                });
            Ok::<_, String>(measured.then_some(()))
        })
        .await
        .ok();
        let running = api
            .get(NAME)
            .await
            .unwrap()
            .status
            .and_then(|s| s.verification);
        fuzzed.replace(&fuzzed.image_spec(&m.spec)).await;
        let after = fuzzed
            .end(&format!("{edit}: the revision judged mid-edit ended"))
            .await;
        if let (Some(running), Some(v)) = (
            &running,
            after.status.as_ref().and_then(|s| s.verification.as_ref()),
        ) && v.revision == running.revision
            && v.reason != "InvalidQuery"
            && v.analysis.as_ref() != Some(&seed_analysis)
        {
            findings.push(format!(
                "{edit}: the verification under way took the edited analysis: {:?}",
                v.analysis
            ));
        }
        // A revision under the edited spec, then the seed again.
        fuzzed.set(&m.spec).await;
        let edited = fuzzed
            .end(&format!("{edit}: a revision under the edit ended"))
            .await;
        println!("{edit}: ended {:?}", ended(&edited));
        fuzzed.set(&seed).await;
        let back = fuzzed.end(&format!("{edit}: the seed again")).await;
        if ended(&back) != Some("verified") {
            findings.push(format!(
                "{edit}: the seed, back, ended {:?}: {:?}",
                ended(&back),
                back.status
            ));
        }
    }
    // A revision once rolled back never ran again while held off.
    let ran = deployments.lock().unwrap().clone();
    let status = api.get(NAME).await.unwrap().status.unwrap();
    for entry in status
        .history
        .iter()
        .filter(|h| format!("{:?}", h.verdict) == "RolledBack")
    {
        let runs = ran.iter().filter(|r| **r == entry.revision).count();
        if runs > 1 {
            findings.push(format!("{} ran {runs} times: {ran:?}", entry.revision));
        }
    }
    assert_eq!(
        deployed(&fuzzed.ns, NAME).await,
        status.revision.clone().unwrap()
    );
    assert!(findings.is_empty(), "{findings:#?}");
}
