//! The story of `cargo xtask demo rollback`, run after the demo's cluster,
//! chart and namespace are in place: a good release is verified, a bad one
//! is rolled back, all judged by a real Prometheus on loopback.
//!
//! ```text
//! demo-rollback <operator binary> <operator kubeconfig> <log directory>
//! ```
//!
//! The fake nodes of the local cluster run no containers, so each revision's
//! pods are stood in for by a gantry-server process on loopback, scraped by
//! Prometheus with the revision the operator reports as a label (what a
//! `PodMonitor` keeping the pod label does in a cluster), and sent real
//! traffic: the good release gets plain requests, the bad one also
//! requests that make its panic guard answer 500. The operator decides from
//! Prometheus alone. Everything started here stops when the story ends; the
//! `GoServer` stays for a look around.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gantry_e2e::prometheus::Prometheus;
use gantry_e2e::server::{Revisions, Traffic};
use gantry_operator::crd::GoServer;
use kube::Api;

const NAMESPACE: &str = "demo";
const NAME: &str = "shop";
const EXAMPLE: &str = "examples/rollback-demo.yaml";
const BAD_IMAGE: &str = "registry.example.com/shop:1.1.0";
/// How long one step (verification, rollback) may take before the demo
/// gives up and says what it saw.
const STEP_DEADLINE: Duration = Duration::from_secs(180);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // The operator's, the servers' and Prometheus's lines would bury the
    // story; the operator's go to its log file.
    gantry_e2e::set_echo(false);
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [operator_binary, operator_kubeconfig, log_dir] = args.as_slice() else {
        bail!("usage: demo-rollback <operator binary> <operator kubeconfig> <log directory>");
    };
    let kubectl = Kubectl(gantry_e2e::bin_dir().join("kubectl"));
    let client = gantry_e2e::client().await;
    let api: Api<GoServer> = Api::namespaced(client, NAMESPACE);

    step("building gantry-server, whose processes stand in for the pods");
    gantry_e2e::server::server_binary();

    step("starting Prometheus on loopback");
    let prometheus = Prometheus::start();
    println!("Prometheus answers at {}", prometheus.url());

    step("starting the operator with --prometheus-url");
    let log = log_dir.join("gantry-operator-rollback.log");
    let _operator = Operator::start(operator_binary, operator_kubeconfig, &prometheus, &log)?;
    println!("its log: {}", log.display());

    step(&format!("applying {EXAMPLE}: a fresh GoServer {NAME}"));
    kubectl.run(&[
        "delete",
        "goserver",
        NAME,
        "-n",
        NAMESPACE,
        "--ignore-not-found",
        "--wait",
    ])?;
    let example = gantry_e2e::operator::root().join(EXAMPLE);
    kubectl.run(&[
        "apply",
        "-n",
        NAMESPACE,
        "-f",
        &example.display().to_string(),
    ])?;
    let mut pods = Revisions::new(&prometheus, NAMESPACE);
    let good = revision_under_test(&api, None).await?;
    println!("revision {good}: its stand-in answers every request");
    let good_address = pods.start(&good);
    let _good_traffic = Traffic::start(good_address, &[("/", 1)], 10);
    let mut timeline = Timeline::new();
    timeline
        .follow(&api, "the good release to be Verified", |gs| {
            condition(gs, "Verified") == Some(("True", "Passed"))
        })
        .await?;
    kubectl.show(&["get", "goserver", NAME, "-n", NAMESPACE])?;

    step(&format!(
        "releasing {BAD_IMAGE}, which fails one request in four"
    ));
    let patch = format!(r#"{{"spec":{{"image":"{BAD_IMAGE}"}}}}"#);
    println!("kubectl patch goserver {NAME} -n {NAMESPACE} --type merge -p '{patch}'");
    kubectl.run(&[
        "patch", "goserver", NAME, "-n", NAMESPACE, "--type", "merge", "-p", &patch,
    ])?;
    let bad = revision_under_test(&api, Some(&good)).await?;
    println!("revision {bad}: its stand-in answers 500 to /debug/panic");
    let bad_address = pods.start(&bad);
    let _bad_traffic = Traffic::start(bad_address, &[("/", 3), ("/debug/panic", 1)], 10);
    timeline
        .follow(&api, "the bad release to be rolled back", |gs| {
            condition(gs, "Degraded") == Some(("True", "RolledBack"))
                && condition(gs, "Ready") == Some(("True", "Ready"))
        })
        .await?;

    step("what kubectl says now");
    kubectl.show(&["get", "goserver", NAME, "-n", NAMESPACE])?;
    kubectl.show(&["describe", "goserver", NAME, "-n", NAMESPACE])?;
    kubectl.show(&[
        "get",
        "controllerrevisions",
        "-n",
        NAMESPACE,
        "-l",
        &format!("app.kubernetes.io/instance={NAME}"),
    ])?;
    println!(
        "The spec still asks for {BAD_IMAGE}; the operator holds {good} until the spec \
         names a revision other than {bad}."
    );
    Ok(())
}

fn step(what: &str) {
    println!("\n==> {what}");
}

/// kubectl with the admin kubeconfig of the environment.
struct Kubectl(PathBuf);

impl Kubectl {
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.0)
            .args(["--request-timeout", "20s"])
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.0.display()))?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs and prints the command and what it printed.
    fn show(&self, args: &[&str]) -> Result<()> {
        println!(
            "\n$ kubectl {}\n{}",
            args.join(" "),
            self.run(args)?.trim_end()
        );
        Ok(())
    }
}

/// The operator as a process with its output in a log file; killed on drop.
struct Operator(Child);

impl Operator {
    fn start(
        binary: &Path,
        kubeconfig: &Path,
        prometheus: &Prometheus,
        log: &Path,
    ) -> Result<Self> {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(binary)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--prometheus-url", &prometheus.url()])
            .args(["--log-format", "text", "--http-address", "127.0.0.1:0"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self(child))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The revision under verification once it is not `not`.
async fn revision_under_test(api: &Api<GoServer>, not: Option<&str>) -> Result<String> {
    let gs = gantry_e2e::wait_for(
        api,
        NAME,
        "a revision under verification",
        STEP_DEADLINE,
        |gs| verifying(gs).is_some_and(|r| Some(r) != not),
    )
    .await?;
    Ok(verifying(&gs).unwrap_or_default().to_owned())
}

fn verifying(gs: &GoServer) -> Option<&str> {
    gs.status
        .as_ref()?
        .verification
        .as_ref()
        .map(|v| v.revision.as_str())
}

fn condition<'a>(gs: &'a GoServer, type_: &str) -> Option<(&'a str, &'a str)> {
    gs.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// A line per change of what matters in the status, with the time since
/// the demo started.
struct Timeline {
    started: Instant,
    last: String,
}

impl Timeline {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last: String::new(),
        }
    }

    /// Prints the status whenever it changes until `done` holds.
    async fn follow(
        &mut self,
        api: &Api<GoServer>,
        what: &str,
        done: impl Fn(&GoServer) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            let gs = api.get(NAME).await.context("reading the GoServer")?;
            let line = summary(&gs);
            if line != self.last {
                println!("{:>4}s  {line}", self.started.elapsed().as_secs());
                self.last = line;
            }
            if done(&gs) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("gave up waiting for {what} after {STEP_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// `revision shop-… Ready=True Verified=Unknown/Measuring error-rate 2✓ 0✗ 0.000`
fn summary(gs: &GoServer) -> String {
    let Some(status) = &gs.status else {
        return "no status yet".to_owned();
    };
    let mut line = format!("revision {}", status.revision.as_deref().unwrap_or("-"));
    for type_ in ["Ready", "Verified", "Degraded"] {
        if let Some((value, reason)) = condition(gs, type_) {
            let _ = write!(line, "  {type_}={value}/{reason}");
        }
    }
    if let Some(v) = &status.verification {
        for m in &v.metrics {
            let value = m
                .last_value
                .map_or_else(|| "no data".to_owned(), |x| format!("{x:.3}"));
            let _ = write!(
                line,
                "  {}: {} passed, {} failed, last {value}",
                m.name, m.passed, m.failed
            );
        }
    }
    line
}
