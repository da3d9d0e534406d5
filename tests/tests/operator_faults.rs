//! The operator under faults: a restart with nothing to do, a SIGTERM
//! while the apiserver cannot be reached, and other managers writing the
//! fields of its children.

mod operator_support;

use std::time::Duration;

use gantry_e2e::faults::ApiProxy;
use gantry_e2e::operator::OperatorProcess;
use gantry_e2e::{TestNamespace, wait_for, wait_until};
use gantry_operator::crd::GoServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use operator_support::{DEADLINE, Operator, create_ready, install_crd, lease_holder};
use serde_json::json;

/// GoServers of the restart test.
const GOSERVERS: usize = 5;

fn goserver(name: &str) -> GoServer {
    serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": name},
        "spec": {
            "image": "registry.example.com/steady:1",
            "resources": {"requests": {"cpu": "10m"}},
            "config": {"data": {"GREETING": "hello"}},
            "ingress": {"host": format!("{name}.example.com")},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
        },
    }))
    .expect("a valid GoServer")
}

/// An operator killed with SIGKILL and started again over GoServers in
/// steady state writes nothing: no child created, patched or deleted, no
/// status written, no Event (the zero-churn rule of Kubernetes' own
/// daemon-restart tests).
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_with_nothing_to_do_writes_nothing() {
    let ns = TestNamespace::new("op-restart").await;
    let first = Operator::start(&ns).await;
    let names: Vec<String> = (0..GOSERVERS).map(|i| format!("steady-{i}")).collect();
    for name in &names {
        create_ready(&ns, &goserver(name)).await;
    }
    first.kill();

    let second = Operator::start(&ns).await;
    for name in &names {
        wait_until("the restarted operator to reconcile", DEADLINE, || {
            let done = second.count(name, "reconcile finished") > 0;
            async move { Ok::<_, String>(done.then_some(())) }
        })
        .await
        .expect("every GoServer reconciled after the restart");
    }
    let writes: Vec<_> = second
        .requests()
        .into_iter()
        .filter(|((_, verb), count)| {
            matches!(verb.as_str(), "create" | "patch" | "update" | "delete") && *count > 0
        })
        .collect();
    assert!(
        writes.is_empty(),
        "the restarted operator wrote: {writes:?}"
    );
}

/// SIGTERM while the apiserver cannot be reached: the operator, leading,
/// stops within its grace period and exits 0, instead of waiting for
/// requests that will never be answered. Before the grace period it took
/// 55 s here, and in a pod the kubelet's SIGKILL came first.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_the_apiserver_is_unreachable_exits() {
    let ns = TestNamespace::new("op-partition").await;
    install_crd(&ns.client).await;
    let proxy = ApiProxy::start(ApiProxy::upstream()).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    proxy.kubeconfig(&kubeconfig);
    let mut operator = OperatorProcess::start_with_env(
        "partitioned",
        &[
            "--namespace",
            &ns.name,
            "--log-level",
            "info,gantry_operator=debug",
            "--leader-elect",
            "--leader-election-namespace",
            &ns.name,
            "--leader-election-id",
            "gantry-partition",
        ],
        Some(&kubeconfig),
        &[("POD_NAME", "partitioned")],
    );
    let leases: Api<Lease> = ns.api();
    wait_until("the operator to lead", DEADLINE, || async {
        Ok::<_, String>(
            (lease_holder(&leases, "gantry-partition").await?.as_deref() == Some("partitioned"))
                .then_some(()),
        )
    })
    .await
    .expect("the operator took the Lease");
    create_ready(&ns, &goserver("cut-off")).await;

    proxy.partition();
    // Let the operator notice: its watches and any request in flight hang.
    tokio::time::sleep(Duration::from_secs(2)).await;
    operator.terminate();
    let status = tokio::task::spawn_blocking(move || {
        // Reconciles get 5 s, the Lease release 2 s; 20 s leaves room for a
        // busy machine and none for the old behaviour.
        let status = operator.wait_exit(Duration::from_secs(20));
        (status, operator)
    })
    .await
    .expect("waiting for the operator");
    let (status, operator) = status;
    let status = status.unwrap_or_else(|| {
        panic!(
            "the operator still ran 20 s after SIGTERM; its log:\n{}",
            operator.lines().join("\n")
        )
    });
    assert!(
        status.success(),
        "the operator exited with {status}; its log:\n{}",
        operator.lines().join("\n")
    );
}

/// Conflicting managers on one Deployment: a person server-side-applies a
/// field gantry owns (restored) and labels and annotations of their own
/// (kept), and the HPA sets `replicas` through the scale subresource
/// (gantry, having handed the field over, never writes it).
#[tokio::test(flavor = "multi_thread")]
async fn other_managers_keep_their_fields_and_lose_gantrys() {
    let ns = TestNamespace::new("op-managers").await;
    let operator = Operator::start(&ns).await;
    let goservers: Api<GoServer> = ns.api();
    create_ready(&ns, &goserver("shared")).await;
    let deployments: Api<Deployment> = ns.api();

    // The HPA's way of scaling.
    deployments
        .patch_scale(
            "shared",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scaling through the scale subresource");
    // A person's apply, forced over gantry's ownership of the image.
    let theirs = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": "shared",
            "labels": {"team": "payments"},
            "annotations": {"example.com/ticket": "OPS-1"},
        },
        "spec": {"template": {"spec": {"containers": [{"name": "server", "image": "registry.example.com/hotfix:9"}]}}},
    });
    deployments
        .patch(
            "shared",
            &PatchParams::apply("a-person").force(),
            &Patch::Apply(&theirs),
        )
        .await
        .expect("a person's server-side apply");

    let image = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
    };
    let restored = wait_for(
        &deployments,
        "shared",
        "gantry's image again",
        DEADLINE,
        |d| image(d).as_deref() == Some("registry.example.com/steady:1"),
    )
    .await
    .expect("the image restored");
    // A reconcile after the restore: poke the GoServer and wait for it.
    let finished = operator.count("shared", "reconcile finished");
    goservers
        .patch(
            "shared",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"e2e/poke": "1"}}})),
        )
        .await
        .expect("poking the GoServer");
    wait_until("another reconcile", DEADLINE, || {
        let done = operator.count("shared", "reconcile finished") > finished;
        async move { Ok::<_, String>(done.then_some(())) }
    })
    .await
    .expect("the poked GoServer reconciled");

    let live = deployments.get("shared").await.expect("the Deployment");
    assert_eq!(image(&live), image(&restored));
    assert_eq!(
        live.labels().get("team").map(String::as_str),
        Some("payments"),
        "a foreign label was removed: {:?}",
        live.labels()
    );
    assert_eq!(
        live.annotations()
            .get("example.com/ticket")
            .map(String::as_str),
        Some("OPS-1"),
        "a foreign annotation was removed: {:?}",
        live.annotations()
    );
    assert_eq!(
        live.spec.as_ref().and_then(|s| s.replicas),
        Some(3),
        "the replicas the HPA set were changed"
    );
    let gantry_owns_replicas = live
        .managed_fields()
        .iter()
        .filter(|e| e.manager.as_deref() == Some("gantry"))
        .filter_map(|e| e.fields_v1.as_ref())
        .any(|f| f.0.pointer("/f:spec/f:replicas").is_some());
    assert!(!gantry_owns_replicas, "gantry owns spec.replicas again");
}
