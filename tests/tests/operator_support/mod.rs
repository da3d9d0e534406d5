//! Shared by the operator's end-to-end tests: the CRD installed from the
//! Rust types (what crds/ holds), the operator running as a real process
//! scoped to one test namespace (through the harness's `OperatorProcess`),
//! and `kubectl apply` of the examples.

// Each test crate uses a part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use gantry_e2e::operator::{OperatorProcess, root};
use gantry_e2e::{TestNamespace, bin_dir, wait_for};
use gantry_operator::crd::GoServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, CustomResourceExt};

pub const DEADLINE: Duration = Duration::from_secs(90);

/// Installs (or updates) the GoServer CRD and waits until it is served.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "goservers.gantry.dev",
        &PatchParams::apply("gantry-e2e").force(),
        &Patch::Apply(GoServer::crd()),
    )
    .await
    .expect("applying the GoServer CRD");
    gantry_e2e::wait_for_crd(client, "goservers.gantry.dev", DEADLINE)
        .await
        .expect("CRD established");
}

/// The operator as a real process, watching one namespace. Killed on drop.
pub struct Operator {
    process: OperatorProcess,
}

impl Operator {
    pub async fn start(ns: &TestNamespace) -> Self {
        Self::start_with(ns, &[]).await
    }

    /// The same, with extra arguments (`--prometheus-url`, say).
    pub async fn start_with(ns: &TestNamespace, extra: &[&str]) -> Self {
        Self::start_with_env(ns, extra, &[]).await
    }

    /// The same, with extra environment variables (`GANTRY_CRASH_AT`, say).
    pub async fn start_with_env(ns: &TestNamespace, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_through(ns, None, extra, env).await
    }

    /// The same, talking to the apiserver the way `kubeconfig` says (a
    /// proxy in front of it, say) instead of `KUBECONFIG`.
    pub async fn start_through(
        ns: &TestNamespace,
        kubeconfig: Option<&std::path::Path>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        install_crd(&ns.client).await;
        let mut args = vec![
            "--namespace",
            &ns.name,
            "--log-level",
            "info,gantry_operator=debug",
        ];
        args.extend_from_slice(extra);
        let mut process = OperatorProcess::start_with_env(&ns.name, &args, kubeconfig, env);
        // Ready once its watches have listed everything (without leader
        // election, readiness is the controller's own).
        process.wait_ok("/readyz", DEADLINE);
        Self { process }
    }

    /// Waits for the process to end by itself (at a crash point, say);
    /// how it ended, or `None` if it still runs after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// Kills the process at once (SIGKILL), as a crashed node would.
    pub fn kill(self) {
        drop(self.process);
    }

    /// Where its `/metrics` is served (loopback).
    pub fn http_address(&self) -> std::net::SocketAddr {
        self.process.http_address(DEADLINE)
    }

    /// The operator's log lines so far, parsed.
    pub fn log(&self) -> Vec<serde_json::Value> {
        self.process.log()
    }

    /// The operator's `/metrics` text.
    pub fn metrics(&self) -> String {
        let (code, body) = self.process.http_get("/metrics");
        assert_eq!(code, 200, "GET /metrics: {body}");
        body
    }

    /// `gantry_kubernetes_requests_total` from the operator's `/metrics`:
    /// (resource, verb) -> requests sent so far.
    pub fn requests(&self) -> BTreeMap<(String, String), u64> {
        let mut counts = BTreeMap::new();
        for line in self.metrics().lines() {
            let Some(rest) = line.strip_prefix("gantry_kubernetes_requests_total{") else {
                continue;
            };
            let (labels, value) = rest.split_once("} ").expect("a sample line");
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|pair| pair.strip_prefix(&format!("{name}=\"")))
                    .map(|v| v.trim_end_matches('"').to_owned())
                    .expect("the label is present")
            };
            let value: f64 = value.trim().parse().expect("a number");
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            counts.insert((label("kind"), label("verb")), value as u64);
        }
        counts
    }

    /// Log lines of reconciles of `goserver` with the given message.
    pub fn count(&self, goserver: &str, message: &str) -> usize {
        self.log()
            .iter()
            .filter(|l| l["message"] == message && l["span"]["goserver"] == goserver)
            .count()
    }
}

/// Who holds the Lease `name`, if anyone.
pub async fn lease_holder(leases: &Api<Lease>, name: &str) -> Result<Option<String>, String> {
    match leases.get_opt(name).await {
        Ok(lease) => Ok(lease
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty())),
        Err(err) => Err(err.to_string()),
    }
}

/// Creates `gs` and waits until it is Ready.
pub async fn create_ready(ns: &TestNamespace, gs: &GoServer) -> GoServer {
    ns.api::<GoServer>()
        .create(&kube::api::PostParams::default(), gs)
        .await
        .expect("creating a GoServer");
    wait_ready(ns, &gs.metadata.name.clone().unwrap_or_default()).await
}

/// `kubectl apply -f` of a file of the repository into the namespace.
pub fn kubectl_apply(ns: &TestNamespace, file: &str) {
    let path = root().join(file);
    let out = Command::new(bin_dir().join("kubectl"))
        .args(["apply", "--namespace", &ns.name, "-f"])
        .arg(&path)
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl apply -f {file} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `ConfigMap` the Deployment `name` loads: one per config, named by
/// its hash, so tests read the name where the pods do.
pub async fn config_map_name(ns: &TestNamespace, name: &str) -> String {
    let deployment: Deployment = ns.api().get(name).await.expect("the Deployment");
    deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.env_from)
        .and_then(|e| e.into_iter().next())
        .and_then(|e| e.config_map_ref)
        .map(|r| r.name)
        .expect("the server container loads a ConfigMap")
}

/// Whether the GoServer reports `type_` with `status` for its current generation.
pub fn has_condition(gs: &GoServer, type_: &str, status: &str) -> bool {
    gs.status.as_ref().is_some_and(|s| {
        s.observed_generation == gs.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == status)
    })
}

/// Waits for `name` to be Ready for its current generation.
pub async fn wait_ready(ns: &TestNamespace, name: &str) -> GoServer {
    let api: Api<GoServer> = ns.api();
    wait_for(
        &api,
        name,
        "Ready=True for the current generation",
        DEADLINE,
        |gs| has_condition(gs, "Ready", "True"),
    )
    .await
    .unwrap()
}

/// The revision the Deployment `name`'s pods carry (`gantry.dev/revision`).
pub async fn deployed(ns: &TestNamespace, name: &str) -> String {
    let deployment: Deployment = ns.api().get(name).await.unwrap();
    deployment
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.labels)
        .and_then(|l| l.get("gantry.dev/revision").cloned())
        .unwrap()
}

/// Waits until the Deployment `name`'s pods carry `revision`.
pub async fn wait_deployed(ns: &TestNamespace, name: &str, revision: &str) {
    gantry_e2e::wait_until(
        &format!("the Deployment on {revision}"),
        DEADLINE,
        || async move { Ok::<_, String>((deployed(ns, name).await == revision).then_some(())) },
    )
    .await
    .unwrap();
}

/// The Events with `reason` about the GoServer `name` (repeats of one are
/// counted in its `series`).
pub async fn events_about(ns: &TestNamespace, name: &str, reason: &str) -> Vec<Event> {
    ns.api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// Triggers a reconcile of `name` that changes nothing of its spec (an
/// annotation), waits until the operator finished it, and checks that no
/// `kind` child was applied meanwhile (and that one was before: its
/// creation is logged, so the count means something).
pub async fn assert_not_reapplied(ns: &TestNamespace, operator: &Operator, name: &str, kind: &str) {
    let applied = || {
        operator
            .log()
            .iter()
            .filter(|l| l["message"] == "child applied" && l["kind"] == kind)
            .count()
    };
    let applied_before = applied();
    assert!(applied_before > 0, "no {kind} was ever applied");
    let before = operator.count(name, "reconcile finished");
    ns.api::<GoServer>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {"gantry.dev/e2e-touched": "yes"}}}),
            ),
        )
        .await
        .expect("annotating the GoServer");
    gantry_e2e::wait_until(&format!("another reconcile of {name}"), DEADLINE, || {
        let seen = operator.count(name, "reconcile finished");
        async move { Ok::<_, String>((seen > before).then_some(())) }
    })
    .await
    .unwrap();
    assert_eq!(
        applied(),
        applied_before,
        "a reconcile that changed nothing applied the {kind} again"
    );
}

/// Waits until the revision under verification is none of `not`; its name.
pub async fn verifying_none_of(api: &Api<GoServer>, name: &str, not: &[&str]) -> String {
    let gs = wait_for(
        api,
        name,
        "another revision under verification",
        DEADLINE,
        |gs| {
            gs.status
                .as_ref()
                .and_then(|s| s.verification.as_ref())
                .is_some_and(|v| !not.contains(&v.revision.as_str()))
        },
    )
    .await
    .unwrap();
    gs.status.unwrap().verification.unwrap().revision
}

/// Brings `count` reconciles of `name` by an annotation on its Deployment
/// (someone else's, which the operator leaves alone), each waited for.
pub async fn poke_reconciles(ns: &TestNamespace, operator: &Operator, name: &str, count: usize) {
    let deployments: Api<Deployment> = ns.api();
    for touch in 0..count {
        let before = operator.count(name, "reconcile finished");
        deployments
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"e2e.gantry.dev/touch": touch.to_string()}}})),
            )
            .await
            .expect("touching the Deployment");
        gantry_e2e::wait_until("another reconcile", DEADLINE, || {
            let done = operator.count(name, "reconcile finished");
            async move { Ok::<_, String>((done > before).then_some(())) }
        })
        .await
        .unwrap();
    }
}

/// A `gantry-operator` with `--leader-elect` on the Lease `lease` in the
/// namespace, named `identity`; `extra` arguments after.
pub fn start_leader_elect(
    ns: &TestNamespace,
    identity: &str,
    lease: &str,
    extra: &[&str],
) -> OperatorProcess {
    let mut args = vec![
        "--namespace",
        &ns.name,
        "--log-level",
        "info,gantry_operator=debug",
        "--leader-elect",
        "--leader-election-namespace",
        &ns.name,
        "--leader-election-id",
        lease,
    ];
    args.extend_from_slice(extra);
    OperatorProcess::start_with_env(identity, &args, None, &[("POD_NAME", identity)])
}
