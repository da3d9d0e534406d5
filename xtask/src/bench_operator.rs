//! `cargo xtask bench operator`: the operator on the local control plane,
//! side by side with the floor (the same children applied as plain objects,
//! with no operator), in one run.
//!
//! The operator is built in release mode and runs as a process watching one
//! namespace; `bench-operator` of the e2e crate drives the run and reports
//! every figure as JSON (see its documentation for what each one is). This
//! side brings the cluster up, builds, prints the table with the ratios to
//! the floor and writes `--json`.
//!
//! Sizes: 100 objects at 5/s for latency, 1,000 at once for throughput,
//! 100 image changes; `--quick` takes 10, 100 and 10 (the form `cargo xtask
//! test` runs, without thresholds).

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::{proc, toolchain, workspace};

/// Figures per run size: (latency count, throughput count, churn).
const FULL: (usize, usize, usize) = (100, 1000, 100);
const QUICK: (usize, usize, usize) = (10, 100, 10);
/// Objects applied per second in the latency phase.
const RATE: f64 = 5.0;

pub fn run(quick: bool, json_file: Option<&Path>) -> Result<ExitCode> {
    let cluster = Cluster::at(workspace::cluster_dir());
    cluster.up(3)?;
    let report = measure(&cluster, quick)?;
    print_table(&report);
    if let Some(path) = json_file {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds the release operator, runs `bench-operator` against `cluster`
/// and returns its report with the date and the machine added.
pub fn measure(cluster: &Cluster, quick: bool) -> Result<Value> {
    let (latency, goservers, churn) = if quick { QUICK } else { FULL };
    let operator = workspace::build_operator(true)?;
    let log = cluster.dir().join("logs").join("bench-operator.log");
    let bin_dir = toolchain::bin_dir()?;
    eprintln!(
        "benchmark: {latency} at {RATE}/s, {goservers} at once, {churn} image changes; \
         the operator's log: {}",
        log.display()
    );
    let out = workspace::cargo()
        .args([
            "run",
            "--quiet",
            "--locked",
            "-p",
            "gantry-e2e",
            "--bin",
            "bench-operator",
            "--",
        ])
        .arg(&operator)
        .args([
            goservers.to_string(),
            latency.to_string(),
            RATE.to_string(),
            churn.to_string(),
        ])
        .arg(&log)
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("GANTRY_BIN_DIR", bin_dir)
        .stderr(Stdio::inherit())
        .output()
        .context("running bench-operator")?;
    if !out.status.success() {
        bail!("bench-operator failed ({})", out.status);
    }
    let mut report: Value =
        serde_json::from_slice(&out.stdout).context("reading bench-operator's report")?;
    let date = proc::output("date", Command::new("date").args(["-u", "+%Y-%m-%d"]))?;
    report["date"] = json!(date.trim());
    report["machine"] = crate::machine::describe();
    report["quick"] = json!(quick);
    Ok(report)
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

fn print_table(report: &Value) {
    let latency = &report["latency"];
    let throughput = &report["throughput"];
    let operator = &report["operator"];
    let noop = &report["noop"];
    println!(
        "\nOperator benchmark, {} ({} cores), {}\n",
        report["date"].as_str().unwrap_or_default(),
        report["machine"]["cores"],
        report["machine"]["cpu"].as_str().unwrap_or_default()
    );
    println!("| figure | gantry | floor | gantry / floor |");
    println!("|---|---|---|---|");
    for p in ["p50", "p95", "p99"] {
        let g = number(&latency["gantry"][p]);
        let f = number(&latency["floor"][p]);
        println!(
            "| apply → Ready {p}, {} at {}/s | {g:.2} s | {f:.2} s | {:.2}x |",
            latency["count"],
            latency["ratePerSecond"],
            g / f
        );
    }
    let g = number(&throughput["gantrySeconds"]);
    let f = number(&throughput["floorSeconds"]);
    println!(
        "| {} at once, all Ready | {g:.1} s | {f:.1} s | {:.2}x |",
        throughput["count"],
        g / f
    );
    println!(
        "| operator CPU for those | {:.1} s | | |",
        number(&operator["cpuSeconds"])
    );
    println!(
        "| operator peak RSS | {:.1} MiB | | |",
        number(&operator["peakRssMiB"])
    );
    println!(
        "| apiserver requests per GoServer created (writes) | {:.1} ({:.1}) | | |",
        number(&operator["requestsPerGoServer"]),
        number(&operator["writesPerGoServer"])
    );
    println!(
        "| requests per no-op reconcile (writes) | {:.2} ({:.2}) | | |",
        number(&noop["requestsPerReconcile"]),
        number(&noop["writesPerReconcile"])
    );
    println!(
        "| {} image changes, all Ready | {:.1} s | | |",
        report["churn"]["count"],
        number(&report["churn"]["gantrySeconds"])
    );
}
