//! The schema-driven fuzzer schemathesis against a live gantry-server.
//!
//! schemathesis reads `GET /api/v1/openapi.json` and sends requests built
//! from it: valid ones that must be accepted, invalid ones that must be
//! refused, sequences that create, read, update and delete a user, and it
//! checks every response against the document (status codes, content
//! types, headers, bodies). It runs twice with every check on, a fixed seed
//! and a bounded number of examples: with a token, where all of the API is
//! reached, and without one, where everything must be a documented 401.
//!
//! schemathesis comes from the Python package index, pinned, in a virtual
//! environment under `target/` that is made once and reused; the server is
//! the debug build, on 127.0.0.1 with its own `SQLite` database.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{proc, workspace};

/// The pinned fuzzer; a new version is a deliberate change.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
const SEED: &str = "1";
/// Examples per operation and phase: enough to reach every operation with
/// valid and invalid input, small enough to finish in well under a minute.
const MAX_EXAMPLES: &str = "50";
const TOKEN: &str = "schemathesis-token";

/// One schemathesis run and whether it found nothing.
pub struct Outcome {
    pub name: &'static str,
    pub passed: bool,
}

/// Builds the server with `build`, starts it, and runs schemathesis with
/// and without a token.
pub fn run(build: &mut Command) -> Result<Vec<Outcome>> {
    let dir = workspace::root().join("target/gantry/schemathesis");
    let venv = ensure_venv(&dir)?;
    proc::run("building gantry-server", build)?;
    let work = dir.join("run");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let server = Server::start(&work)?;
    let base = format!("http://127.0.0.1:{}", server.port);

    // The document needs a token too; the run without one reads it from a file.
    let schema = work.join("openapi.json");
    proc::run(
        "fetching the OpenAPI document",
        Command::new(venv.join("bin/python"))
            .args([
                "-c",
                "import sys, urllib.request\n\
                 request = urllib.request.Request(sys.argv[1], headers={'Authorization': 'Bearer ' + sys.argv[2]})\n\
                 open(sys.argv[3], 'wb').write(urllib.request.urlopen(request).read())",
            ])
            .arg(format!("{base}/api/v1/openapi.json"))
            .arg(TOKEN)
            .arg(&schema),
    )?;

    let mut outcomes = Vec::new();
    for (name, token) in [
        ("schemathesis with a token", Some(TOKEN)),
        ("schemathesis without a token", None),
    ] {
        eprintln!("\n=== {name}");
        let mut cmd = Command::new(venv.join("bin/schemathesis"));
        cmd.current_dir(&work)
            .arg("run")
            .arg(&schema)
            .args(["--url", &base])
            .args(["--checks", "all"])
            .args(["--seed", SEED])
            .args(["--max-examples", MAX_EXAMPLES])
            .args(["--generation-database", "none"])
            .arg("--no-color");
        if let Some(token) = token {
            cmd.args(["--header", &format!("Authorization: Bearer {token}")]);
        }
        let status = cmd
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("{name}: could not start schemathesis"))?;
        let mut passed = status.success();
        if token.is_some() {
            // No failure is only worth something if the API was reached.
            let missing = unreached(&work.join("gantry-server.log"));
            if !missing.is_empty() {
                eprintln!("{name}: never answered with 2xx: {}", missing.join(", "));
                passed = false;
            }
        }
        outcomes.push(Outcome { name, passed });
    }
    if outcomes.iter().any(|o| !o.passed) {
        eprintln!(
            "the server's log is {}",
            work.join("gantry-server.log").display()
        );
    }
    server.stop();
    Ok(outcomes)
}

/// The operations that the server's access log never shows answered with
/// a 2xx.
fn unreached(log: &Path) -> Vec<&'static str> {
    let text = fs::read_to_string(log).unwrap_or_default();
    let answered: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["message"] == "request finished")
        .filter(|v| {
            v["status"]
                .as_u64()
                .is_some_and(|s| (200..300).contains(&s))
        })
        .filter_map(|v| {
            let span = &v["spans"][0];
            Some((
                span["method"].as_str()?.to_owned(),
                span["route"].as_str()?.to_owned(),
            ))
        })
        .collect();
    [
        "POST /api/v1/users",
        "GET /api/v1/users",
        "GET /api/v1/users/{id}",
        "PATCH /api/v1/users/{id}",
        "DELETE /api/v1/users/{id}",
    ]
    .into_iter()
    .filter(|operation| {
        !answered
            .iter()
            .any(|(method, route)| *operation == format!("{method} {route}"))
    })
    .collect()
}

/// The virtual environment with schemathesis, made on first use.
fn ensure_venv(dir: &Path) -> Result<PathBuf> {
    let venv = dir.join("venv");
    let stamp = venv.join("gantry-installed");
    if fs::read_to_string(&stamp).is_ok_and(|s| s == SCHEMATHESIS) {
        return Ok(venv);
    }
    eprintln!("installing {SCHEMATHESIS} into {}", venv.display());
    let _ = fs::remove_dir_all(&venv);
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    proc::run(
        "python3 -m venv",
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
    )?;
    proc::run(
        "pip install schemathesis",
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            SCHEMATHESIS,
        ]),
    )?;
    fs::write(&stamp, SCHEMATHESIS)?;
    Ok(venv)
}

/// The debug gantry-server; stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(work: &Path) -> Result<Self> {
        let target = workspace::non_empty_env("CARGO_TARGET_DIR")
            .map_or_else(|| workspace::root().join("target"), PathBuf::from);
        let log_path = work.join("gantry-server.log");
        let log = fs::File::create(&log_path)?;
        let port = proc::free_port()?;
        let child = Command::new(target.join("debug/gantry-server"))
            .current_dir(work)
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATABASE_URL", "sqlite://fuzz.db")
            .env("API_TOKENS", TOKEN)
            // The fuzzer is one client sending as fast as it can; the limit
            // itself is tested elsewhere.
            .env("RATE_LIMIT_PER_SECOND", "1000000")
            .env("RATE_LIMIT_BURST", "1000000")
            .env("SHUTDOWN_DELAY", "0s")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting gantry-server")?;
        let mut server = Self { child, port };
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            let text = fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("database connected and migrated; ready") {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "gantry-server exited with {status} before it was ready:\n{}",
                    proc::tail(&log_path, 20)
                );
            }
            if Instant::now() > deadline {
                bail!("gantry-server was not ready within a minute");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(self) {
        drop(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = i32::try_from(self.child.id()).unwrap_or(i32::MAX);
        let _ = proc::terminate(&[pid], Duration::from_secs(10));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
