//! `cargo xtask demo`: the quick start, from nothing to a Ready `GoServer`.
//!
//! ```text
//! cluster up (built once, cached)
//!   -> helm upgrade --install charts/gantry-operator   (CRD, ServiceAccount, RBAC, Deployment)
//!   -> cargo build gantry-operator, run it as a local process with a token
//!      of the chart's ServiceAccount (so it has exactly the chart's RBAC)
//!   -> kubectl apply examples/minimal.yaml in namespace `demo`
//!   -> kubectl get gs,deploy,svc,cm until the GoServer is Ready
//!   -> how to look around, how to stop
//! ```
//!
//! The fake nodes of the local cluster run no containers, so the chart's
//! operator Deployment has pods that are Running but do nothing; the work
//! is done by the operator process, whose log is `logs/gantry-operator.log`
//! in the cluster's state directory and whose PID file lets `cargo xtask
//! cluster down` stop it (its kubeconfig lives in the state directory too,
//! so `down` finds it by command line as well). Running the demo again
//! restarts that process and re-applies everything; it is idempotent.
//!
//! `cargo xtask demo rollback` first tells the rollout story with
//! `demo-rollback` of the e2e crate (it owns the Prometheus and server
//! harness): Prometheus on loopback, an operator pointed at it, real
//! gantry-server processes standing in for each revision's pods under real
//! traffic, `examples/rollback-demo.yaml` verified, a bad image rolled back,
//! and what `kubectl get` and `kubectl describe` say. Those processes stop
//! with the story (the operator's log stays in
//! `logs/gantry-operator-rollback.log`); the demo then goes on as above.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::proc::{self, Daemon};
use crate::toolchain::{self, Binaries};
use crate::workspace;

/// Release and namespace of the chart.
const RELEASE: &str = "gantry";
const OPERATOR_NAMESPACE: &str = "gantry-system";
/// The chart's ServiceAccount: `<release>-<chart>`.
const SERVICE_ACCOUNT: &str = "gantry-gantry-operator";
/// Where the sample `GoServer` goes.
const DEMO_NAMESPACE: &str = "demo";
const EXAMPLE: &str = "examples/minimal.yaml";
const GOSERVER: &str = "hello";
/// The name of the operator process in `logs/` and `pids/`.
const OPERATOR: &str = "gantry-operator";
const READY_DEADLINE: Duration = Duration::from_secs(180);

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    story: Option<Story>,
}

#[derive(clap::Subcommand, Clone, Copy)]
enum Story {
    /// A good release verified and a bad one rolled back, judged by a real
    /// Prometheus on loopback scraping real servers under real traffic.
    Rollback,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let dir = workspace::cluster_dir();
    let cluster = Cluster::at(dir.clone());
    step("starting the local control plane (the first run builds it: that takes a while)");
    cluster.up(3)?;
    let bins = toolchain::ensure()?;
    let kubectl = Kubectl {
        bin: bins.path("kubectl"),
        kubeconfig: cluster.kubeconfig(),
    };

    step("installing the Helm chart charts/gantry-operator");
    install_chart(&bins, &cluster, &kubectl)?;

    step("building the operator");
    let binary = workspace::build_operator(false)?;
    let operator_kubeconfig = dir.join("gantry-operator.kubeconfig");
    write_token_kubeconfig(&kubectl, &operator_kubeconfig)?;
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEMO_NAMESPACE}});
    kubectl.run_with_input(&["apply", "-f", "-"], &namespace.to_string())?;

    if let Some(Story::Rollback) = args.story {
        // The story runs an operator of its own, with --prometheus-url.
        stop_earlier_operator(&dir);
        step("running the rollback story");
        rollback_story(&bins, &cluster, &binary, &operator_kubeconfig, &dir)?;
    }

    step("starting the operator");
    let mut daemons = vec![start_operator(&dir, &binary, &operator_kubeconfig)?];

    step(&format!("applying {EXAMPLE} in namespace {DEMO_NAMESPACE}"));
    let example = workspace::root().join(EXAMPLE);
    kubectl.run(&[
        "apply",
        "-n",
        DEMO_NAMESPACE,
        "-f",
        &example.display().to_string(),
    ])?;

    step("waiting for the GoServer to be Ready");
    wait_ready(&kubectl, &mut daemons)?;

    explain(&cluster, &dir)?;
    Ok(ExitCode::SUCCESS)
}

/// `demo-rollback` of the e2e crate, which owns the Prometheus and server
/// harness: it starts Prometheus, an operator pointed at it and the
/// revisions' stand-ins, tells the story and stops them again.
fn rollback_story(
    bins: &Binaries,
    cluster: &Cluster,
    operator: &Path,
    operator_kubeconfig: &Path,
    dir: &Path,
) -> Result<()> {
    proc::run(
        "the rollback story",
        workspace::cargo()
            .args([
                "run",
                "--quiet",
                "--package",
                "gantry-e2e",
                "--bin",
                "demo-rollback",
                "--",
            ])
            .arg(operator)
            .arg(operator_kubeconfig)
            .arg(dir.join("logs"))
            .env("KUBECONFIG", cluster.kubeconfig())
            .env("GANTRY_BIN_DIR", &bins.dir),
    )
}

fn step(what: &str) {
    eprintln!("\n==> {what}");
}

/// kubectl against the demo cluster.
struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--request-timeout", "20s"])
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        proc::output(
            &format!("kubectl {}", args.join(" ")),
            &mut self.command(args),
        )
    }

    fn run_with_input(&self, args: &[&str], input: &str) -> Result<String> {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting kubectl")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// `helm upgrade --install` of the chart, then the chart's CRDs applied
/// server-side: Helm installs `crds/` on first install only, so a cluster
/// left by an earlier demo would otherwise keep an older schema.
fn install_chart(bins: &Binaries, cluster: &Cluster, kubectl: &Kubectl) -> Result<()> {
    let chart = workspace::root().join("charts").join("gantry-operator");
    proc::run(
        "helm upgrade --install",
        Command::new(bins.path("helm"))
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .args(["upgrade", "--install", RELEASE])
            .arg(&chart)
            .args(["--namespace", OPERATOR_NAMESPACE, "--create-namespace"]),
    )?;
    kubectl.run(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &chart.join("crds").display().to_string(),
    ])?;
    kubectl.run(&[
        "wait",
        "--for=condition=Established",
        "--timeout=120s",
        "customresourcedefinition/goservers.gantry.dev",
    ])?;
    Ok(())
}

/// A kubeconfig for the cluster with a token of the chart's ServiceAccount
/// (`TokenRequest` API, valid 24 h): the local operator then has exactly the
/// permissions the chart grants its pods.
fn write_token_kubeconfig(kubectl: &Kubectl, path: &Path) -> Result<()> {
    let token = kubectl.run(&[
        "create",
        "token",
        SERVICE_ACCOUNT,
        "--namespace",
        OPERATOR_NAMESPACE,
        "--duration",
        "24h",
    ])?;
    let admin: Value =
        serde_json::from_str(&kubectl.run(&["config", "view", "--raw", "--minify", "-o", "json"])?)
            .context("parsing `kubectl config view`")?;
    let cluster = admin["clusters"]
        .get(0)
        .cloned()
        .context("the admin kubeconfig names no cluster")?;
    let cluster_name = cluster["name"].clone();
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token.trim()}}],
        "contexts": [{"name": SERVICE_ACCOUNT, "context": {"cluster": cluster_name, "user": SERVICE_ACCOUNT}}],
        "current-context": SERVICE_ACCOUNT,
    });
    fs::write(path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Stops an operator left by an earlier demo, then starts a new one with
/// its output in `logs/gantry-operator.log` and its PID in `pids/`.
fn start_operator(dir: &Path, binary: &Path, kubeconfig: &Path) -> Result<Daemon> {
    stop_earlier_operator(dir);
    let daemon = Daemon::spawn(
        OPERATOR,
        dir,
        Command::new(binary)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--log-format", "text"])
            // Plain text in the log file, without terminal colours.
            .env("NO_COLOR", "1"),
    )?;
    eprintln!(
        "gantry-operator is running; its log: {}",
        daemon.log.display()
    );
    Ok(daemon)
}

/// Stops the operator an earlier demo left running, if any: two operators
/// without leader election would fight over the same objects.
fn stop_earlier_operator(dir: &Path) {
    let pid_file = dir.join("pids").join(format!("{OPERATOR}.pid"));
    if let Some(pid) = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|p| proc::alive(*p))
    {
        eprintln!("stopping the operator of an earlier demo (PID {pid})");
        proc::terminate(&[pid], Duration::from_secs(15));
    }
}

/// Shows the `GoServer` and its children whenever they change, until the
/// `GoServer` is Ready; fails when the operator dies or at the deadline.
fn wait_ready(kubectl: &Kubectl, daemons: &mut [Daemon]) -> Result<()> {
    let deadline = Instant::now() + READY_DEADLINE;
    let mut shown = String::new();
    loop {
        for daemon in daemons.iter_mut() {
            daemon.check()?;
        }
        // Readiness first: a table read after it shows at least that state.
        let ready = kubectl.run(&[
            "get",
            "goserver",
            GOSERVER,
            "-n",
            DEMO_NAMESPACE,
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
        ])?;
        let table = kubectl.run(&[
            "get",
            "goservers,deployments,services,configmaps",
            "-n",
            DEMO_NAMESPACE,
            "-o",
            "wide",
        ])?;
        // Shown again only when something other than an age changed.
        if without_ages(&table) != shown {
            println!("{table}");
            shown = without_ages(&table);
        }
        if ready.trim() == "True" {
            eprintln!("GoServer {DEMO_NAMESPACE}/{GOSERVER} is Ready");
            return Ok(());
        }
        if Instant::now() >= deadline {
            let status = kubectl
                .run(&["describe", "goserver", GOSERVER, "-n", DEMO_NAMESPACE])
                .unwrap_or_default();
            bail!(
                "GoServer {DEMO_NAMESPACE}/{GOSERVER} was not Ready within {READY_DEADLINE:?}; \
                 the operator's log is in logs/{OPERATOR}.log of the cluster state directory.\n{status}"
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A `kubectl get` table without its AGE values (`7s`, `5m30s`, `2d`).
fn without_ages(table: &str) -> String {
    let is_age = |token: &str| {
        !token.is_empty()
            && token.split_inclusive(['s', 'm', 'h', 'd']).all(|part| {
                part.len() > 1
                    && part.ends_with(['s', 'm', 'h', 'd'])
                    && part[..part.len() - 1].bytes().all(|b| b.is_ascii_digit())
            })
    };
    table
        .lines()
        .map(|line| {
            line.split_whitespace()
                .filter(|token| !is_age(token))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn explain(cluster: &Cluster, dir: &Path) -> Result<()> {
    let env = cluster.env_line()?;
    let log = dir.join("logs").join(format!("{OPERATOR}.log"));
    let log = log.display();
    let patch = r#"'{"spec":{"replicas":3}}'"#;
    let look_around = [
        (env, String::new()),
        (
            "kubectl get gs -A".to_owned(),
            "Ready, replicas, revision".to_owned(),
        ),
        (
            format!("kubectl describe gs {GOSERVER} -n {DEMO_NAMESPACE}"),
            "conditions and events".to_owned(),
        ),
        (
            format!("kubectl get deploy,rs,pods,svc,cm -n {DEMO_NAMESPACE}"),
            "the children".to_owned(),
        ),
        (
            format!("kubectl patch gs {GOSERVER} -n {DEMO_NAMESPACE} --type merge -p {patch}"),
            "scale to 3".to_owned(),
        ),
        (
            format!("kubectl delete deploy {GOSERVER} -n {DEMO_NAMESPACE}"),
            "the operator puts it back".to_owned(),
        ),
        (format!("tail -f {log}"), "the operator's log".to_owned()),
    ];
    println!(
        "
The demo is running: a local control plane, the chart `{RELEASE}` in namespace
{OPERATOR_NAMESPACE}, the operator as a local process with the chart's RBAC, and the
GoServer {GOSERVER} in namespace {DEMO_NAMESPACE}. The fake nodes run no containers:
pods become Running and Ready, but nothing listens on their addresses.

Look around:"
    );
    for (command, comment) in look_around {
        if comment.is_empty() {
            println!("  {command}");
        } else {
            println!("  {command:<64} # {comment}");
        }
    }
    println!(
        "
Stop everything (control plane, operator, state):
  cargo xtask cluster down"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::without_ages;

    #[test]
    fn ages_are_ignored() {
        assert_eq!(
            without_ages("NAME READY AGE\nhello 1/1 5m30s\nsvc 80/TCP 2d"),
            "NAME READY AGE\nhello 1/1\nsvc 80/TCP"
        );
        assert_eq!(without_ages("a 7s"), without_ages("a 8s"));
        assert_ne!(without_ages("a 0/1"), without_ages("a 1/1"));
    }
}
