//! The operator binary as a real process, for every test file that needs
//! one: built once per test process with cargo, started with the arguments
//! and the kubeconfig a test chooses (the admin's by default, or one
//! carrying a ServiceAccount token to prove that account's RBAC), its JSON
//! log captured line by line, stopped with SIGTERM when a test asks and
//! killed on drop. Its health and metrics port is on a free loopback port,
//! so operators of tests running in parallel never contend for one.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// Builds the operator binary once per test process and returns its path.
pub fn operator_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| build_binary("gantry-operator"))
}

/// Builds the binary of the workspace package `package` (named like it)
/// with cargo and returns its path, as cargo reports it.
pub fn build_binary(package: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    // What cargo sets for the running test describes the test's package;
    // passed on, it reads as a changed environment to build scripts that
    // watch it (ring's watches CARGO_MANIFEST_DIR), and cargo would rebuild
    // them and everything above them, here and again in the next build.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
            )
        {
            command.env_remove(name);
        }
    }
    let out = command
        .current_dir(root())
        .args(["build", "--package", package, "--bin", package])
        .arg("--message-format=json")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running cargo build for {package}: {e}"));
    assert!(out.status.success(), "building {package} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|msg| msg.get("executable")?.as_str().map(PathBuf::from))
        .next_back()
        .unwrap_or_else(|| panic!("cargo reported no {package} executable"))
}

/// A running `gantry-operator`. Killed on drop.
pub struct OperatorProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl OperatorProcess {
    /// Starts the operator with `args`. With `kubeconfig`, the process uses
    /// that file (`--kubeconfig`) instead of the `KUBECONFIG` of the tests.
    /// `label` prefixes its log lines in the test output.
    pub fn start(label: &str, args: &[&str], kubeconfig: Option<&Path>) -> Self {
        Self::start_with_env(label, args, kubeconfig, &[])
    }

    /// The same, with extra environment variables (`POD_NAME` gives the
    /// process a known leader-election identity).
    pub fn start_with_env(
        label: &str,
        args: &[&str],
        kubeconfig: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_binary(operator_binary(), label, args, kubeconfig, env)
    }

    /// The same with another build of the operator (the one taken out of
    /// its image, say).
    pub fn start_binary(
        binary: &Path,
        label: &str,
        args: &[&str],
        kubeconfig: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new(binary);
        if let Some(path) = kubeconfig {
            command.arg("--kubeconfig").arg(path);
        }
        if !args.iter().any(|a| a.starts_with("--http-address")) {
            command.arg("--http-address=127.0.0.1:0");
        }
        let mut child = command
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let prefix = label.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                crate::echo(&format!("[operator {prefix}]"), &line);
                sink.lock().expect("log lock").push(line);
            }
        });
        Self { child, lines }
    }

    /// The log lines so far, as written.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("log lock").clone()
    }

    /// The log lines so far, parsed (the operator logs JSON by default).
    pub fn log(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM, as the kubelet does when a pod is deleted.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The address of the health and metrics port, from the log line the
    /// operator writes when it binds; waits up to `timeout` for that line.
    pub fn http_address(&self, timeout: Duration) -> SocketAddr {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.log().iter().find_map(|l| {
                l["address"]
                    .as_str()
                    .filter(|_| l["message"] == "serving /healthz, /readyz and /metrics")
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            });
            if let Some(address) = found {
                assert!(
                    address.ip().is_loopback(),
                    "the tests only dial loopback, the operator bound {address}"
                );
                return address;
            }
            assert!(
                Instant::now() < deadline,
                "the operator logged no HTTP address within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits up to `timeout` for `GET path` on the health and metrics port
    /// to answer 200 (failing at once if the process exits); the body.
    pub fn wait_ok(&mut self, path: &str, timeout: Duration) -> String {
        let address = self.http_address(timeout);
        wait_http_ok(address, path, timeout, || {
            self.child.try_wait().ok().flatten().map(|s| s.to_string())
        })
    }

    /// `GET path` on the operator's health and metrics port: the status
    /// code and the body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let address = self.http_address(Duration::from_secs(30));
        http_get(address, path).unwrap_or_else(|e| panic!("GET {path} on {address}: {e}"))
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on a loopback `address`: the status code and the body, or why
/// there was no answer.
pub fn http_get(address: SocketAddr, path: &str) -> Result<(u16, String), String> {
    assert!(
        address.ip().is_loopback(),
        "the tests only dial loopback, not {address}"
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent
        .get(format!("http://{address}{path}"))
        .call()
        .map_err(|e| format!("GET {path}: {e}"))?;
    let code = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("reading the response: {e}"))?;
    Ok((code, body))
}

/// Polls `GET path` on a loopback `address` until it answers 200, for at
/// most `timeout`, and returns the body. `exited` says how the serving
/// process ended (`Some`), which fails the wait at once.
pub fn wait_http_ok(
    address: SocketAddr,
    path: &str,
    timeout: Duration,
    mut exited: impl FnMut() -> Option<String>,
) -> String {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Some(status) = exited() {
            panic!("the process exited ({status}) before GET {path} answered 200; last: {last}");
        }
        match http_get(address, path) {
            Ok((200, body)) => return body,
            Ok((code, body)) => last = format!("{code} {body}"),
            Err(e) => last = e,
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} on {address} did not answer 200 within {timeout:?}; last: {last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
