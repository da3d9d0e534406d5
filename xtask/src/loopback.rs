//! A server on loopback for the benchmarks: started, waited for, asked,
//! and stopped; the bearer token both benchmarks configure, and the user
//! they read.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::proc;

/// The bearer token the benchmarked servers accept.
pub(crate) const TOKEN: &str = "bench-token";

/// A server under test; stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct Running {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Running {
    pub(crate) fn start(name: &str, cmd: &mut Command, port: u16, probe: &str) -> Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let mut running = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http(running.addr, "GET", probe, &[], "") {
                return Ok(running);
            }
            if let Some(status) = running.child.try_wait()? {
                bail!("{name} exited with {status} before answering {probe}");
            }
            if Instant::now() > deadline {
                bail!("{name} did not answer {probe} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's process id (`taskset` execs the server, keeping its pid).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn stop(self) {
        drop(self);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = i32::try_from(self.child.id()).unwrap_or(i32::MAX);
        let _ = proc::terminate(&[pid], Duration::from_secs(10));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange on loopback: status and body, whatever the status.
pub(crate) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(2)))
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = agent.run(request.body(body.to_owned())?)?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .context("reading the body")?;
    Ok((status, body))
}

/// Creates the user the benchmark reads from gantry-server; returns its id.
pub(crate) fn create_user(addr: SocketAddr) -> Result<String> {
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = http(
        addr,
        "POST",
        "/api/v1/users",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        r#"{"name":"Ada Lovelace","email":"ada@example.com"}"#,
    )?;
    if status != 201 {
        bail!("creating the benchmark user: {status} {body}");
    }
    let user: serde_json::Value = serde_json::from_str(&body).context("parsing the new user")?;
    user["id"]
        .as_str()
        .map(str::to_owned)
        .context("the new user has no id")
}
