//! Two operator processes with `--leader-elect` against one Lease: only
//! the holder of the Lease writes, both serve health and metrics, and when
//! the leader is stopped with SIGTERM it hands the Lease over and the other
//! process takes up the work.

mod operator_support;

use std::time::Duration;

use gantry_e2e::operator::OperatorProcess;
use gantry_e2e::{TestNamespace, wait_for, wait_until};
use gantry_operator::crd::GoServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use operator_support::{DEADLINE, install_crd, kubectl_apply, lease_holder, wait_ready};
use serde_json::json;

const LEASE: &str = "gantry-operator-e2e";

fn start(ns: &TestNamespace, identity: &str) -> OperatorProcess {
    operator_support::start_leader_elect(ns, identity, LEASE, &[])
}

/// Log lines written inside a reconcile (they carry the `reconcile` span).
fn reconcile_lines(process: &OperatorProcess) -> usize {
    process
        .log()
        .iter()
        .filter(|l| l["span"]["goserver"].is_string())
        .count()
}

/// The value of the `gantry_leader` gauge in a `/metrics` body.
fn leader_gauge(process: &OperatorProcess) -> i64 {
    let (code, body) = process.http_get("/metrics");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix("gantry_leader "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no gantry_leader in /metrics: {body}"))
}

/// Both processes are alive and ready (a standby must be, or a rolling
/// update of the operator would never finish); only the leader says it
/// leads, and its metrics count the reconciles.
fn check_http(leader: &OperatorProcess, standby: &OperatorProcess) {
    for process in [leader, standby] {
        assert_eq!(process.http_get("/healthz").0, 200);
        assert_eq!(process.http_get("/readyz").0, 200);
    }
    assert_eq!(leader_gauge(leader), 1);
    assert_eq!(leader_gauge(standby), 0);
    let (_, metrics) = leader.http_get("/metrics");
    assert!(
        metrics.contains("gantry_reconciles_total{result=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gantry_reconcile_duration_seconds_count"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_writes_and_the_standby_takes_over() {
    let ns = TestNamespace::new("op-leader").await;
    install_crd(&ns.client).await;
    let a = start(&ns, "operator-a");
    let b = start(&ns, "operator-b");
    let leases: Api<Lease> = ns.api();

    let leader = wait_until("the Lease to name a holder", DEADLINE, || async {
        lease_holder(&leases, LEASE).await
    })
    .await
    .unwrap();
    let leader_name = leader.as_str();
    let (mut leader, mut standby, standby_name) = match leader_name {
        "operator-a" => (a, b, "operator-b"),
        "operator-b" => (b, a, "operator-a"),
        other => panic!("the Lease names an unknown holder {other:?}"),
    };

    kubectl_apply(&ns, "examples/minimal.yaml");
    wait_ready(&ns, "hello").await;
    assert!(
        reconcile_lines(&leader) > 0,
        "the leader reconciled nothing"
    );
    assert_eq!(
        reconcile_lines(&standby),
        0,
        "the standby reconciled: {:#?}",
        standby.lines()
    );
    // The standby saw the leader (its first attempt may have lost the
    // race to create the Lease; the next one, 2 s later, names the holder).
    wait_until("the standby to see the leader", DEADLINE, || async {
        Ok(standby
            .log()
            .iter()
            .any(|l| {
                l["message"] == "another replica leads; standing by" && l["leader"] == leader_name
            })
            .then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(reconcile_lines(&standby), 0);

    check_http(&leader, &standby);

    // SIGTERM: the leader stops cleanly and releases the Lease.
    leader.terminate();
    let status = leader
        .wait_exit(Duration::from_secs(30))
        .expect("the leader exits after SIGTERM");
    assert!(status.success(), "the leader exited with {status}");
    assert!(
        leader
            .log()
            .iter()
            .any(|l| l["message"] == "released the leader Lease"),
        "{:#?}",
        leader.lines()
    );
    wait_until("the standby to hold the Lease", DEADLINE, || async {
        Ok(lease_holder(&leases, LEASE)
            .await?
            .filter(|h| h == standby_name)
            .map(|_| ()))
    })
    .await
    .unwrap();

    // A change made after the handover is carried out by the new leader.
    let goservers: Api<GoServer> = ns.api();
    goservers
        .patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    wait_for(
        &ns.api::<Deployment>(),
        "hello",
        "2 replicas in the spec",
        DEADLINE,
        |d| d.spec.as_ref().and_then(|s| s.replicas) == Some(2),
    )
    .await
    .unwrap();
    wait_ready(&ns, "hello").await;
    assert!(
        reconcile_lines(&standby) > 0,
        "the new leader reconciled nothing"
    );
    assert_eq!(leader_gauge(&standby), 1);
    assert!(standby.running());
}
