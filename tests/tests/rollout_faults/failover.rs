//! A leader failover in the middle of a rollout: two operators with
//! `--leader-elect`, the leader killed (SIGKILL, no Lease released) while
//! a revision is measured, and again while a canary step is; the standby
//! takes over once the Lease expires and resumes each where it stood (the
//! same availability time, the samples taken), telling each decision once.
//!
//! `cargo xtask test` kills the leader mid-step; `--faults` mid-verification
//! as well.

use crate::operator_support::{DEADLINE, events_about, install_crd, start_leader_elect};
use gantry_e2e::faults::full;
use gantry_e2e::gateway_standin::GatewayStandIn;
use gantry_e2e::operator::OperatorProcess;
use gantry_e2e::receiver::Receiver;
use gantry_e2e::scripted_prometheus::{Answer, ScriptedPrometheus};
use gantry_e2e::{TestNamespace, gateway_crds, wait_for};
use gantry_operator::crd::{CanaryPhase, GoServer, VerificationStatus};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

const LEASE: &str = "gantry-rollout-failover";

fn start(ns: &TestNamespace, identity: &str, prometheus: &str) -> OperatorProcess {
    start_leader_elect(ns, identity, LEASE, &["--prometheus-url", prometheus])
}

fn leads(process: &OperatorProcess) -> bool {
    let (_, body) = process.http_get("/metrics");
    body.lines().any(|l| l == "gantry_leader 1")
}

fn verification(gs: &GoServer) -> Option<&VerificationStatus> {
    gs.status.as_ref()?.verification.as_ref()
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // one story, told in order
async fn a_failover_mid_rollout_resumes_where_it_stood() {
    let ns = TestNamespace::new("failover").await;
    install_crd(&ns.client).await;
    gateway_crds::install(&ns.client).await.unwrap();
    let prometheus = ScriptedPrometheus::start().await;
    prometheus.answer_others(Answer::Value(0.0));
    let url = prometheus.url();
    let _gateway = GatewayStandIn::start(&ns);
    let (receiver, hook) = Receiver::start().await;
    let mut a = start(&ns, "operator-a", &url);
    a.wait_ok("/readyz", DEADLINE);
    gantry_e2e::wait_until("operator-a to lead", DEADLINE, || async {
        Ok::<_, String>(leads(&a).then_some(()))
    })
    .await
    .unwrap();
    let mut b = start(&ns, "operator-b", &url);
    b.wait_ok("/readyz", DEADLINE);
    let api: Api<GoServer> = ns.api();
    // Samples 2 s apart, three needed, so a failover lands inside.
    let gs: GoServer = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "web"},
        "spec": {
            "image": "web:1",
            "replicas": 2,
            "route": {"parentRefs": [{"name": "public"}]},
            "rollout": {
                "gateway": {"drain": "1s"},
                "verification": {
                    "warmup": "1s", "interval": "2s", "window": "4s",
                    "minSamples": 3, "failureLimit": 0,
                    "receivers": [{"name": "ci", "url": hook}],
                    "metrics": [{"name": "error-rate", "max": 0.05,
                                 "query": r#"errors{revision="${revision}"}"#}],
                },
            },
        },
    }))
    .unwrap();
    api.create(&PostParams::default(), &gs).await.unwrap();

    let measured_once = |gs: &GoServer| {
        verification(gs).is_some_and(|v| v.metrics.first().is_some_and(|m| m.passed == 1))
    };
    if full() {
        // Mid-verification: the leader dies after the first sample.
        let mid = wait_for(&api, "web", "v1's first sample", DEADLINE, measured_once)
            .await
            .unwrap();
        let available = verification(&mid).unwrap().available_at.clone();
        drop(a);
        a = start(&ns, "operator-c", &url);
        let done = wait_for(&api, "web", "v1 verified by the standby", DEADLINE, |gs| {
            gs.status
                .as_ref()
                .is_some_and(|s| s.last_good_revision.is_some() && s.outbox.is_empty())
        })
        .await
        .unwrap();
        assert_eq!(verification(&done).unwrap().available_at, available);
        assert!(leads(&b), "the standby leads");
        std::mem::swap(&mut a, &mut b);
    } else {
        wait_for(&api, "web", "v1 verified", DEADLINE, |gs| {
            gs.status
                .as_ref()
                .is_some_and(|s| s.last_good_revision.is_some() && s.outbox.is_empty())
        })
        .await
        .unwrap();
    }

    // Mid-step: the leader dies while the canary's first step is measured.
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "web:2", "rollout": {
            "strategy": "Canary",
            "steps": [{"weight": 20, "pause": "7s"}, {"weight": 50, "pause": "7s"}],
        }}})),
    )
    .await
    .unwrap();
    let mid = wait_for(
        &api,
        "web",
        "the first step's first sample",
        DEADLINE,
        |gs| gs.status.as_ref().is_some_and(|s| s.canary.is_some()) && measured_once(gs),
    )
    .await
    .unwrap();
    let started = mid.status.unwrap().canary.unwrap().step_started_at;
    let leader = if leads(&a) { a } else { b };
    drop(leader);
    let _successor = start(&ns, "operator-d", &url);
    let done = wait_for(
        &api,
        "web",
        "v2 promoted after the failover",
        DEADLINE,
        |gs| {
            gs.status.as_ref().is_some_and(|s| {
                s.outbox.is_empty()
                    && s.canary.as_ref().is_some_and(|c| {
                        c.phase == CanaryPhase::Promoted && c.drain_until.is_some()
                    })
            })
        },
    )
    .await
    .unwrap();
    let canary = done.status.unwrap().canary.unwrap();
    assert_eq!(
        canary
            .verdicts
            .first()
            .and_then(|v| v.metrics.first())
            .map(|m| m.passed >= 3),
        Some(true),
        "{canary:?}"
    );
    assert!(canary.verdicts[0].decided_at.0 > started.unwrap().0);
    // Each decision told once, and delivered.
    let verified = events_about(&ns, "web", "Verified").await;
    assert_eq!(verified.len(), 2, "{verified:#?}");
    let decisions: std::collections::BTreeSet<String> = receiver
        .delivered()
        .iter()
        .map(gantry_e2e::receiver::Call::id)
        .collect();
    assert_eq!(decisions.len(), 2, "{:?}", receiver.delivered());
}
