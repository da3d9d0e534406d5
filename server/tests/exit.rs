//! How the process ends, as far as its log is concerned: a panic that
//! unwinds out of the server (as opposed to one in a request, which the
//! panic guard turns into a 500) must still leave the panic's message, and
//! every line logged before it, where they can be read; and the log is
//! written out however the logging's owner goes away. Each scenario runs
//! in a child copy of this test binary, a process of its own that ends
//! right after, as the server's does; the parent reads what it left.

mod common;

use std::process::{Command, ExitCode, Output};

use common::TestResult;
use gantry_server::config::Config;
use gantry_server::{process, server, telemetry};
use serde_json::Value;

/// Set in a child's environment to the name of the scenario it runs.
const CHILD: &str = "GANTRY_SERVER_EXIT_CHILD";

/// Whether this process is the child started for `scenario`.
fn is_child(scenario: &str) -> bool {
    std::env::var_os(CHILD).is_some_and(|s| s == scenario)
}

/// Runs the child test `scenario` and returns what it left.
fn run_child(scenario: &str) -> TestResult<(Output, Vec<Value>, String)> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--exact", scenario, "--nocapture"])
        .env(CHILD, scenario)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    Ok((out, lines, context))
}

/// The defaults, on loopback.
fn config() -> TestResult<Config> {
    Ok(Config::from_lookup(&|name| match name {
        "HOST" => Some("127.0.0.1".to_owned()),
        "PORT" => Some("0".to_owned()),
        _ => None,
    })?)
}

/// A child: what `gantry-server`'s `main` does ([`process::run`]), with a
/// server that panics once it has bound its port. The real server offers
/// no way to panic outside a request. Run by itself it does nothing.
#[test]
fn child_panics_after_start_up() -> TestResult {
    if !is_child("child_panics_after_start_up") {
        return Ok(());
    }
    let code = process::run(config()?, |config, _tracing| async move {
        let listener = server::bind(&config).await?;
        let addr = listener.local_addr().map_err(server::ServeError::Serve)?;
        tracing::info!(%addr, "the last line before the panic");
        panic!("deliberate panic after start-up");
    });
    // What the binary's `main` does with the status: end the process.
    assert_eq!(code, ExitCode::FAILURE);
    std::process::exit(1);
}

#[test]
fn a_panic_out_of_the_server_reaches_the_log_and_stderr() -> TestResult {
    let (out, lines, context) = run_child("child_panics_after_start_up")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        lines
            .iter()
            .any(|v| v["message"] == "the last line before the panic"),
        "the line logged before the panic is lost; {context}"
    );
    assert!(
        lines.iter().any(|v| v["message"] == "panic"
            && v["level"] == "ERROR"
            && v["panic"]
                .as_str()
                .is_some_and(|p| p.contains("deliberate panic after start-up"))),
        "the panic is not in the log; {context}"
    );
    assert!(
        lines.iter().any(|v| v["message"] == "gantry-server stopped"
            && v["error"] == "panicked: deliberate panic after start-up"),
        "no line for the end of the process; {context}"
    );
    assert!(
        stderr.contains("gantry-server: panicked: deliberate panic after start-up"),
        "the panic is not on stderr; {context}"
    );
    assert_eq!(out.status.code(), Some(1), "{context}");
    Ok(())
}

/// A child: sets up logging, logs, and lets the logging's owner go without
/// [`telemetry::Telemetry::shutdown`], as an early return would, then
/// ends the process at once. Run by itself it does nothing.
#[test]
fn child_drops_its_telemetry() -> TestResult {
    if !is_child("child_drops_its_telemetry") {
        return Ok(());
    }
    let telemetry = telemetry::init(&config()?)?;
    tracing::info!("logged just before the end");
    drop(telemetry);
    std::process::exit(0);
}

#[test]
fn dropping_the_telemetry_writes_the_log() -> TestResult {
    let (out, lines, context) = run_child("child_drops_its_telemetry")?;
    assert!(
        lines
            .iter()
            .any(|v| v["message"] == "logged just before the end"),
        "the last line is lost; {context}"
    );
    assert_eq!(out.status.code(), Some(0), "{context}");
    Ok(())
}
