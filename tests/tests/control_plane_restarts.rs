//! The apiserver and etcd killed (SIGKILL) while the operator has work in
//! hand, and started again, as a crashed control-plane node would be: the
//! operator must never exit or panic, must catch up once the apiserver
//! answers again, and must duplicate nothing.
//!
//! These tests stop the control plane every other test uses, so they are
//! `#[ignore]`d and `cargo xtask test` runs them on their own after the
//! rest of the end-to-end suite: two of each by default, twenty of each
//! component with `--faults`.

mod operator_support;

use std::fmt::Write;
use std::time::Duration;

use gantry_e2e::faults::{ControlPlane, full};
use gantry_e2e::snapshot;
use gantry_e2e::{TestNamespace, wait_until};
use gantry_operator::crd::GoServer;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use operator_support::{DEADLINE, Operator, create_ready, has_condition};
use serde_json::json;

const GOSERVERS: usize = 3;

fn goserver(name: &str) -> GoServer {
    serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": name},
        "spec": {
            "image": "registry.example.com/restart:1",
            "resources": {"requests": {"cpu": "10m"}},
            "config": {"data": {"ROUND": "start"}},
            "ingress": {"host": format!("{name}.example.com")},
        },
    }))
    .expect("a valid GoServer")
}

/// Waits until the apiserver answers again (its own clients retry; this
/// one only asks).
async fn wait_for_apiserver(ns: &TestNamespace) {
    wait_until(
        "the apiserver to answer again",
        Duration::from_secs(180),
        || async {
            ns.api::<GoServer>()
                .list(&kube::api::ListParams::default())
                .await
                .map(|_| Some(()))
                .map_err(|e| e.to_string())
        },
    )
    .await
    .expect("the apiserver came back");
}

/// Deletes the pods of `name` that were scheduled a while ago and are
/// still not Ready, so that their ReplicaSet makes new ones. kwok, which
/// plays the kubelet here, does not retry a pod status write that failed
/// while etcd was down: such a pod never becomes Ready and the rollout
/// stalls (seen once in the 40-round form: the operator rightly reported
/// `RolloutInProgress` until the deadline). A real kubelet retries.
async fn retry_stuck_pods(ns: &TestNamespace, name: &str) {
    let pods: Api<Pod> = ns.api();
    let selector = format!("app.kubernetes.io/instance={name}");
    let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await else {
        return;
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    for pod in list {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let scheduled = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
        let age = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| now.as_second() - t.0.as_second());
        if scheduled && !ready && pod.metadata.deletion_timestamp.is_none() && age > 15 {
            println!(
                "pod {} stuck unready for {age} s; deleting it",
                pod.name_any()
            );
            let _ = pods
                .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
                .await;
        }
    }
}

/// What the Deployment of `name` and its ReplicaSets show, to tell a
/// GoServer the operator left behind from a rollout the Deployment
/// controller has not finished.
async fn explain(ns: &TestNamespace, name: &str) -> String {
    let deployment = ns.api::<Deployment>().get(name).await;
    let mut text = match deployment {
        Ok(d) => format!(
            "Deployment {name}: generation {:?}, status {}",
            d.metadata.generation,
            serde_json::to_string(&d.status).unwrap_or_default()
        ),
        Err(e) => format!("Deployment {name}: {e}"),
    };
    let selector = format!("app.kubernetes.io/instance={name}");
    if let Ok(sets) = ns
        .api::<ReplicaSet>()
        .list(&ListParams::default().labels(&selector))
        .await
    {
        for rs in sets {
            let _ = write!(
                text,
                "\nReplicaSet {}: spec.replicas {:?}, status {}",
                rs.name_any(),
                rs.spec.as_ref().and_then(|s| s.replicas),
                serde_json::to_string(&rs.status).unwrap_or_default()
            );
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "kills the shared control plane: cargo xtask test runs it alone"]
async fn the_operator_rides_out_apiserver_and_etcd_restarts() {
    let ns = TestNamespace::new("op-restarts").await;
    let mut operator = Operator::start(&ns).await;
    let names: Vec<String> = (0..GOSERVERS).map(|i| format!("restart-{i}")).collect();
    for name in &names {
        create_ready(&ns, &goserver(name)).await;
    }
    let control_plane = ControlPlane::from_env();
    let api: Api<GoServer> = ns.api();
    let rounds = if full() { 40 } else { 4 };
    for round in 0..rounds {
        let component = if round % 2 == 0 {
            "kube-apiserver"
        } else {
            "etcd"
        };
        // Work in hand: every GoServer's config changes, then at once the
        // component dies, most likely mid-reconcile.
        for name in &names {
            api.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"config": {"data": {"ROUND": round.to_string()}}}})),
            )
            .await
            .expect("changing the config");
        }
        control_plane
            .kill_and_restart(component)
            .unwrap_or_else(|e| panic!("restarting {component}: {e}"));
        wait_for_apiserver(&ns).await;
        for name in &names {
            let gs = match wait_until("Ready=True", DEADLINE, || {
                let api = &api;
                let ns = &ns;
                async move {
                    let gs = api.get(name).await.map_err(|e| e.to_string())?;
                    if has_condition(&gs, "Ready", "True") {
                        return Ok(Some(gs));
                    }
                    retry_stuck_pods(ns, name).await;
                    Err(format!("{:?}", gs.status))
                }
            })
            .await
            {
                Ok(gs) => gs,
                Err(err) => panic!(
                    "round {round} ({component}): {err}\n{}",
                    explain(&ns, name).await
                ),
            };
            let (_, children) = snapshot::take(&ns, name).await;
            // One of each child per GoServer, owned by it alone (checked by
            // the snapshot); the config of this round in force.
            for kind in ["Deployment", "Service", "Ingress"] {
                assert_eq!(
                    snapshot::count(&children, kind),
                    1,
                    "round {round} ({component}): {kind}s of {name}: {:?}",
                    children.keys().collect::<Vec<_>>()
                );
            }
            let deployment = &children[&format!("Deployment/{name}")];
            let config = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]
                ["configMapRef"]["name"]
                .as_str()
                .expect("the pods load a ConfigMap");
            assert_eq!(
                children[&format!("ConfigMap/{config}")]["data"]["ROUND"],
                round.to_string(),
                "round {round} ({component}): {name} runs an old config; status {:?}",
                gs.status
            );
        }
        assert!(
            operator.wait_exit(Duration::ZERO).is_none(),
            "the operator exited after the {component} restart of round {round}"
        );
    }
    let panics: Vec<_> = operator
        .log()
        .into_iter()
        .filter(|l| l.to_string().contains("panicked"))
        .collect();
    assert!(panics.is_empty(), "the operator panicked: {panics:?}");
}

/// The apiserver killed (SIGKILL) and started again while a canary step is
/// measured (and, with `--faults`, while a first revision is): the
/// operator resumes each where it stood, and tells each decision once (the
/// scripted Prometheus of the rollout fault tests answers every revision
/// well).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "kills the shared control plane: cargo xtask test runs it alone"]
#[allow(clippy::too_many_lines)] // one story, told in order
async fn a_rollout_rides_out_apiserver_restarts_mid_verification_and_mid_step() {
    use gantry_e2e::gateway_standin::GatewayStandIn;
    use gantry_e2e::scripted_prometheus::{Answer, ScriptedPrometheus};
    use gantry_operator::crd::CanaryPhase;

    let ns = TestNamespace::new("rollout-restarts").await;
    gantry_e2e::gateway_crds::install(&ns.client)
        .await
        .expect("the Gateway API CRDs");
    let prometheus = ScriptedPrometheus::start().await;
    prometheus.answer_others(Answer::Value(0.0));
    let url = prometheus.url();
    let mut operator = Operator::start_with(&ns, &["--prometheus-url", &url]).await;
    let _gateway = GatewayStandIn::start(&ns);
    let control_plane = ControlPlane::from_env();
    let api: Api<GoServer> = ns.api();
    let gs: GoServer = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "judged"},
        "spec": {
            "image": "judged:1",
            "replicas": 2,
            "route": {"parentRefs": [{"name": "public"}]},
            "rollout": {
                "gateway": {"drain": "1s"},
                "verification": {
                    "warmup": "1s", "interval": "2s", "window": "6s",
                    "minSamples": 3, "failureLimit": 0,
                    "metrics": [{"name": "error-rate", "max": 0.05,
                                 "query": r#"errors{revision="${revision}"}"#}],
                },
            },
        },
    }))
    .expect("a valid GoServer");
    api.create(&kube::api::PostParams::default(), &gs)
        .await
        .expect("creating the GoServer");
    let sampled = |gs: &GoServer| {
        gs.status
            .as_ref()
            .and_then(|s| s.verification.as_ref())
            .is_some_and(|v| v.metrics.first().is_some_and(|m| m.passed == 1))
    };
    let wait = |what: &'static str, done: fn(&GoServer) -> bool| {
        let api = api.clone();
        async move {
            wait_until(what, Duration::from_secs(180), || {
                let api = api.clone();
                async move {
                    let gs = api.get("judged").await.map_err(|e| e.to_string())?;
                    Ok::<_, String>(done(&gs).then_some(gs))
                }
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
        }
    };

    // Mid-verification (with --faults; the default run restarts it
    // mid-step only).
    if full() {
        wait("v1's first sample", sampled).await;
        control_plane
            .kill_and_restart("kube-apiserver")
            .expect("restarting the apiserver");
        wait_for_apiserver(&ns).await;
    }
    wait("v1 verified", |gs| {
        gs.status
            .as_ref()
            .is_some_and(|s| s.last_good_revision.is_some() && s.outbox.is_empty())
    })
    .await;

    // Mid-step.
    api.patch(
        "judged",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "judged:2", "rollout": {
            "strategy": "Canary",
            "steps": [{"weight": 20, "pause": "7s"}, {"weight": 50, "pause": "7s"}],
        }}})),
    )
    .await
    .expect("a canary");
    wait("the canary's first sample", |gs| {
        gs.status.as_ref().is_some_and(|s| s.canary.is_some())
            && gs
                .status
                .as_ref()
                .and_then(|s| s.verification.as_ref())
                .is_some_and(|v| v.metrics.first().is_some_and(|m| m.passed == 1))
    })
    .await;
    control_plane
        .kill_and_restart("kube-apiserver")
        .expect("restarting the apiserver");
    wait_for_apiserver(&ns).await;
    let done = wait("v2 promoted", |gs| {
        gs.status.as_ref().is_some_and(|s| {
            s.outbox.is_empty()
                && s.canary
                    .as_ref()
                    .is_some_and(|c| c.phase == CanaryPhase::Promoted && c.drain_until.is_some())
        })
    })
    .await;
    let status = done.status.expect("a status");
    assert_eq!(status.history.len(), 2, "{:?}", status.history);
    assert!(
        status
            .history
            .iter()
            .all(|h| format!("{:?}", h.verdict) == "Passed"),
        "{:?}",
        status.history
    );
    let verified = operator_support::events_about(&ns, "judged", "Verified").await;
    assert_eq!(verified.len(), 2, "one Event per decision: {verified:#?}");
    assert!(
        operator.wait_exit(Duration::ZERO).is_none(),
        "the operator exited"
    );
}
