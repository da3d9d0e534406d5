//! Shared by the operator's end-to-end tests: the CRD installed from the
//! generated file, the operator running as a real process scoped to one test
//! namespace (its JSON log captured), and `kubectl apply` of the examples.

// Each test crate uses a part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use gantry_e2e::{TestNamespace, bin_dir, wait_for};
use gantry_operator::crd::GoServer;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, CustomResourceExt};

pub const DEADLINE: Duration = Duration::from_secs(90);

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

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
    wait_for(
        &crds,
        "goservers.gantry.dev",
        "the CRD to be Established",
        DEADLINE,
        |crd| {
            crd.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        },
    )
    .await
    .expect("CRD established");
}

/// Builds the operator binary once per test process and returns its path.
fn operator_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let out = Command::new(cargo)
            .current_dir(root())
            .args([
                "build",
                "--package",
                "gantry-operator",
                "--bin",
                "gantry-operator",
                "--message-format=json",
            ])
            .stderr(Stdio::inherit())
            .output()
            .expect("running cargo build for the operator");
        assert!(out.status.success(), "building gantry-operator failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|msg| msg.get("executable")?.as_str().map(PathBuf::from))
            .next_back()
            .expect("cargo reported the gantry-operator executable")
    })
}

/// The operator as a real process, watching one namespace. Killed on drop.
pub struct Operator {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Operator {
    pub async fn start(ns: &TestNamespace) -> Self {
        install_crd(&ns.client).await;
        let mut child = Command::new(operator_binary())
            .args([
                "--namespace",
                &ns.name,
                "--log-level",
                "info,gantry_operator=debug",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .spawn()
            .expect("starting gantry-operator");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let prefix = ns.name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Shown with the test's output when it fails.
                println!("[operator {prefix}] {line}");
                sink.lock().expect("log lock").push(line);
            }
        });
        Self { child, lines }
    }

    /// The operator's log lines so far, parsed.
    pub fn log(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .expect("log lock")
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Log lines of reconciles of `goserver` with the given message.
    pub fn count(&self, goserver: &str, message: &str) -> usize {
        self.log()
            .iter()
            .filter(|l| l["message"] == message && l["span"]["goserver"] == goserver)
            .count()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
