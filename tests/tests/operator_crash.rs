//! A crash after every write, as Sieve tests controllers: a reference run
//! takes a `GoServer` through its life (created with every child, its
//! config changed, its Ingress and autoscaling switched off, deleted) and
//! counts the operator's writes; then, for a write `i`, the same life runs
//! again with an operator that kills itself (SIGKILL, no destructor, no
//! Lease release) as soon as the answer to its `i`-th write arrives, before
//! it can act on it (`GANTRY_CRASH_AT=after-write:<i>`). It is started
//! again without the crash point and must end every step where the
//! reference did: the same children with the same specs and owner, the
//! same status, nothing duplicated, nothing orphaned, within the usual
//! deadline.
//!
//! `cargo xtask test` runs a sample of the writes (the seed is printed);
//! `cargo xtask test --faults` runs every one.

mod operator_support;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gantry_e2e::TestNamespace;
use gantry_e2e::faults::sample;
use gantry_e2e::snapshot::{self, Snapshot};
use gantry_operator::crd::GoServer;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use operator_support::{DEADLINE, Operator, has_condition};
use serde_json::{Value, json};

const NAME: &str = "crashy";

/// Crash runs in the default suite; `--faults` runs one per write.
const SAMPLED: usize = 6;

/// Crash runs at once, each in a namespace of its own with an operator of
/// its own.
const CONCURRENT: usize = 3;

/// The life of the `GoServer`, step by step.
#[derive(Clone, Copy, Debug)]
enum Step {
    Create,
    ChangeConfig,
    SwitchOff,
    Delete,
}

const LIFE: [Step; 4] = [
    Step::Create,
    Step::ChangeConfig,
    Step::SwitchOff,
    Step::Delete,
];

fn goserver() -> GoServer {
    serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": NAME},
        "spec": {
            "image": "registry.example.com/crashy:1",
            "replicas": 2,
            "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}},
            "config": {"data": {"GREETING": "hello"}},
            "ingress": {"host": "crashy.example.com", "tls": {"secretName": "crashy-tls"}},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
        },
    }))
    .expect("a valid GoServer")
}

/// One run of the life, under an operator that may crash.
struct Run {
    ns: TestNamespace,
    operator: Option<Operator>,
    /// The write after which the first operator kills itself.
    crash_at: Option<u64>,
    /// How the first operator ended, once it has.
    crashed: Option<String>,
}

impl Run {
    async fn start(crash_at: Option<u64>) -> Self {
        let ns = TestNamespace::new("op-crash").await;
        let point = crash_at.map(|i| format!("after-write:{i}"));
        let env: Vec<(&str, &str)> = point
            .as_deref()
            .map(|p| ("GANTRY_CRASH_AT", p))
            .into_iter()
            .collect();
        let operator = Operator::start_with_env(&ns, &[], &env).await;
        Self {
            ns,
            operator: Some(operator),
            crash_at,
            crashed: None,
        }
    }

    /// Starts a new operator, without the crash point, once the first one
    /// has died at it.
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
            "the operator with GANTRY_CRASH_AT=after-write:{:?} ended with {status}, not at the crash point",
            self.crash_at
        );
        self.crashed = Some(status.to_string());
        self.operator = Some(Operator::start(&self.ns).await);
    }

    async fn act(&self, step: Step) {
        let api: Api<GoServer> = self.ns.api();
        let merge = |patch: Value| {
            let api = api.clone();
            async move {
                api.patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("patching the GoServer");
            }
        };
        match step {
            Step::Create => {
                api.create(&PostParams::default(), &goserver())
                    .await
                    .expect("creating the GoServer");
            }
            Step::ChangeConfig => {
                merge(json!({"spec": {"config": {"data": {"GREETING": "hi"}}}})).await;
            }
            Step::SwitchOff => {
                merge(json!({"spec": {"ingress": null, "autoscaling": null}})).await;
            }
            Step::Delete => {
                api.delete(NAME, &DeleteParams::default())
                    .await
                    .expect("deleting the GoServer");
            }
        }
    }

    /// Waits until `step` is done, restarting a crashed operator meanwhile,
    /// and returns what it left behind. With `expected` (a crash run), done
    /// means ended where the reference did; without (the reference run),
    /// done and unchanged over three looks, so no write was still on its
    /// way.
    async fn converge(
        &mut self,
        step: Step,
        before: Option<&Snapshot>,
        expected: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let deadline = Instant::now() + DEADLINE;
        let mut same = 0;
        let mut last: Option<Snapshot> = None;
        loop {
            self.supervise().await;
            let (done, snapshot) = self.observe(step, before).await;
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
                    Some(expected) if done => {
                        format!(
                            "it ended differently: {}",
                            snapshot::difference(expected, &snapshot)
                        )
                    }
                    _ => format!("it did not finish; last seen: {snapshot:#?}"),
                };
                return Err(format!(
                    "step {step:?} in {} (crash after write {:?}), {DEADLINE:?}: {seen}",
                    self.ns.name, self.crash_at
                ));
            }
            last = Some(snapshot);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Whether `step` is done, and the snapshot.
    async fn observe(&self, step: Step, before: Option<&Snapshot>) -> (bool, Snapshot) {
        let (gs, snapshot) = snapshot::take(&self.ns, NAME).await;
        let Some(gs) = gs else {
            // Deleted: done when the garbage collector took every child.
            let done = matches!(step, Step::Delete) && snapshot.is_empty();
            return (done, snapshot);
        };
        let count = |kind: &str| snapshot::count(&snapshot, kind);
        let revision = |s: &Snapshot| {
            s.get(snapshot::GOSERVER)?
                .pointer("/status/revision")
                .cloned()
        };
        let done = has_condition(&gs, "Ready", "True")
            && match step {
                Step::Create => count("Ingress") == 1 && count("HorizontalPodAutoscaler") == 1,
                // The old revision and its ConfigMap stay, as history.
                Step::ChangeConfig => before.and_then(revision) != revision(&snapshot),
                Step::SwitchOff => count("Ingress") == 0 && count("HorizontalPodAutoscaler") == 0,
                Step::Delete => false,
            };
        (done, snapshot)
    }
}

/// The reference run: every step's snapshot, and how many writes the
/// operator made.
async fn reference() -> (Vec<Snapshot>, u64) {
    let mut run = Run::start(None).await;
    let mut snapshots: Vec<Snapshot> = Vec::new();
    for step in LIFE {
        run.act(step).await;
        let snapshot = run
            .converge(step, snapshots.last(), None)
            .await
            .unwrap_or_else(|e| panic!("the reference run: {e}"));
        snapshots.push(snapshot);
    }
    let writes = run
        .operator
        .as_ref()
        .expect("the reference operator runs")
        .requests()
        .into_iter()
        .filter(|((_, verb), _)| matches!(verb.as_str(), "create" | "patch" | "update" | "delete"))
        .map(|(_, count)| count)
        .sum();
    (snapshots, writes)
}

/// The life again with a crash after write `i`: how it diverged from the
/// reference, if it did, and whether the crash happened.
async fn crash_run(i: u64, reference: &[Snapshot]) -> (Option<String>, bool) {
    let mut run = Run::start(Some(i)).await;
    let mut before: Option<Snapshot> = None;
    for (step, expected) in LIFE.into_iter().zip(reference) {
        run.act(step).await;
        match run.converge(step, before.as_ref(), Some(expected)).await {
            Ok(snapshot) => before = Some(snapshot),
            Err(failure) => return (Some(failure), run.crashed.is_some()),
        }
    }
    (None, run.crashed.is_some())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_any_write_converges_to_the_reference() {
    let (reference, writes) = reference().await;
    assert!(writes > 0, "the reference run made no write");
    let picked = sample(writes, SAMPLED);
    println!("the reference run made {writes} writes; crashing after writes {picked:?}");
    let results: Vec<(u64, (Option<String>, bool))> = futures::stream::iter(picked)
        .map(|i| {
            let reference = &reference;
            async move { (i, crash_run(i, reference).await) }
        })
        .buffer_unordered(CONCURRENT)
        .collect()
        .await;
    let crashed = results.iter().filter(|(_, (_, crashed))| *crashed).count();
    let failures: Vec<&String> = results
        .iter()
        .filter_map(|(_, (failure, _))| failure.as_ref())
        .collect();
    println!(
        "{} crash runs, {crashed} reached their crash point, {} diverged",
        results.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    // A run whose operator made fewer writes than the reference may end
    // before its crash point; most must reach it, or nothing was tested.
    assert!(
        crashed * 2 >= results.len(),
        "only {crashed} of {} runs crashed",
        results.len()
    );
}
