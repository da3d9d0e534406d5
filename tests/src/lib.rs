//! The end-to-end harness: a client for the running local control plane, a
//! fresh namespace per test, and waits with a deadline whose failure says
//! what was expected and what was last seen.
//!
//! The cluster comes from `cargo xtask test` (or `cargo xtask cluster up`
//! with the printed `KUBECONFIG`). Pods and Services in it have addresses
//! that lead nowhere: tests talk to the apiserver on 127.0.0.1 only.
//!
//! [`operator`] runs the operator binary as a process, for the tests that
//! need one. [`prometheus`] and [`server`] run a real Prometheus and
//! gantry-server processes on loopback, for rollout verification; they need
//! no cluster. Neither does [`jaeger`], the trace backend of the trace tests.

pub mod chart;
pub mod faults;
pub mod gateway_crds;
pub mod gateway_standin;
pub mod go_module;
pub mod jaeger;
pub mod monitoring_crds;
pub mod mutate;
pub mod operator;
pub mod prometheus;
pub mod receiver;
pub mod scripted_prometheus;
pub mod server;
pub mod snapshot;
pub mod watch_proxy;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

/// The label every test namespace carries, so leftovers can be found.
pub const E2E_LABEL: &str = "gantry.dev/e2e";

static ECHO: AtomicBool = AtomicBool::new(true);

/// Whether the processes the harness runs (operator, servers, Prometheus)
/// have their log lines echoed to stdout, prefixed with their name. On by
/// default, so a failing test shows them; the demos turn it off and keep
/// only what they write to their own log files.
pub fn set_echo(on: bool) {
    ECHO.store(on, Ordering::Relaxed);
}

/// Echoes one log line of a harness process, unless [`set_echo`] said not to.
fn echo(prefix: &str, line: &str) {
    if ECHO.load(Ordering::Relaxed) {
        // Shown with the test's output when it fails.
        println!("{prefix} {line}");
    }
}

/// Collects the stdout and stderr lines of `child` (spawned with both
/// piped) as they come, each echoed with `prefix`.
pub fn capture_output(
    child: &mut std::process::Child,
    prefix: &str,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::{BufRead, BufReader, Read};
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let streams: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let sink = std::sync::Arc::clone(&lines);
        let prefix = prefix.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                echo(&prefix, &line);
                sink.lock().expect("log lock").push(line);
            }
        });
    }
    lines
}

/// Applies a CRD manifest with kubectl (server-side, so concurrent tests
/// agree) and waits until the CRD `name` is served.
pub async fn apply_crd_file(client: &Client, path: &std::path::Path, name: &str) -> Result<()> {
    let out = std::process::Command::new(bin_dir().join("kubectl"))
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(path)
        .output()?;
    if !out.status.success() {
        bail!(
            "kubectl apply -f {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_for_crd(client, name, Duration::from_secs(60)).await
}

/// A client for the cluster in `KUBECONFIG`, or a panic that says how to
/// get one.
pub async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: run the e2e suite with `cargo xtask test`, or start a \
         cluster with `cargo xtask cluster up` and export what it prints"
    );
    Client::try_default()
        .await
        .expect("a kube client from KUBECONFIG")
}

/// The directory holding kubectl, helm and the control-plane binaries.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("GANTRY_BIN_DIR")
        .map(PathBuf::from)
        .expect("GANTRY_BIN_DIR is set by `cargo xtask test`")
}

/// A namespace that lives as long as the test: created fresh with a unique
/// name, deleted when dropped (also when the test panics).
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
}

impl TestNamespace {
    /// A namespace named `e2e-<prefix>-<unique>`.
    pub async fn new(prefix: &str) -> Self {
        Self::with_labels(prefix, BTreeMap::new()).await
    }

    /// The same, with extra labels (for example Pod Security enforcement).
    pub async fn with_labels(prefix: &str, labels: BTreeMap<String, String>) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let client = client().await;
        let unique = format!(
            "{:x}{:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let name = format!("e2e-{prefix}-{unique}");
        let mut all_labels = labels;
        all_labels.insert(E2E_LABEL.to_owned(), "true".to_owned());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(all_labels),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|err| panic!("creating namespace {name}: {err}"));
        let ns = Self { client, name };
        // Pods are refused until the ServiceAccount controller has made
        // the namespace's default ServiceAccount.
        let accounts: Api<ServiceAccount> = ns.api();
        wait_for(
            &accounts,
            "default",
            "the default ServiceAccount to exist",
            Duration::from_secs(60),
            |_| true,
        )
        .await
        .expect("default ServiceAccount");
        ns
    }

    /// An API for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime is blocked in this very
        // call: delete from a thread with a runtime and a client of its own
        // (the test's client is bound to the test's runtime).
        let name = self.name.clone();
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| err.to_string())?;
            runtime.block_on(async {
                let client = Client::try_default().await.map_err(|err| err.to_string())?;
                Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await
                    .map(|_| ())
                    .map_err(|err| err.to_string())
            })
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("deleting namespace {}: {err}", self.name),
            Err(_) => eprintln!(
                "deleting namespace {}: the cleanup thread panicked",
                self.name
            ),
        }
    }
}

/// Polls `name` until `condition` holds, for at most `timeout`.
///
/// The error names the object, says what was expected (`expectation`) and
/// shows what was last seen: its `status`, or that it did not exist.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    expectation: &str,
    timeout: Duration,
    condition: impl Fn(&K) -> bool,
) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + serde::Serialize,
    <K as Resource>::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let what = format!("{kind} {name}: expected {expectation}");
    wait_until(&what, timeout, || async {
        match api.get_opt(name).await {
            Ok(Some(object)) if condition(&object) => Ok(Some(object)),
            Ok(Some(object)) => Err(describe(&object)),
            Ok(None) => Err("it does not exist".to_owned()),
            Err(err) => Err(format!("error: {err}")),
        }
    })
    .await
}

/// Polls until `name` no longer exists, for at most `timeout`.
pub async fn wait_for_deletion<K>(api: &Api<K>, name: &str, timeout: Duration) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + serde::Serialize,
    <K as Resource>::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let what = format!("{kind} {name} to be deleted");
    wait_until(&what, timeout, || async {
        match api.get_opt(name).await {
            Ok(None) => Ok(Some(())),
            Ok(Some(object)) => Err(describe(&object)),
            Err(err) => Err(format!("error: {err}")),
        }
    })
    .await
}

/// Waits until the custom resource definition `name` is Established, so its
/// resources can be created.
pub async fn wait_for_crd(client: &Client, name: &str, timeout: Duration) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    wait_for(&crds, name, "the CRD to be Established", timeout, |crd| {
        crd.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
    })
    .await
    .map(|_| ())
}

/// Polls `probe` until it returns `Ok(Some(value))`, for at most `timeout`;
/// for conditions that span several objects (a list, a count).
pub async fn wait_until<T, F, Fut>(expectation: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last_seen = match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "condition not met".to_owned(),
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {expectation}; last seen: {last_seen}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What an object looks like, for failure messages: its status if it has
/// one, else the whole object.
fn describe<K: serde::Serialize>(object: &K) -> String {
    let value = serde_json::to_value(object).unwrap_or_default();
    let shown = value.get("status").unwrap_or(&value);
    let text = shown.to_string();
    if text.len() > 2000 {
        format!("{}…", &text[..text.floor_char_boundary(2000)])
    } else {
        text
    }
}

/// An HTTP client for the servers the tests run on loopback: direct (a
/// proxy the environment names for package downloads must not see test
/// traffic) and with a timeout, so a hung server fails a test instead of
/// stalling it.
pub fn loopback_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client")
}
