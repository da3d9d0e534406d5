//! The operator binary as a real process, for every test file that needs
//! one: built once per test process with cargo, started with the arguments
//! and the kubeconfig a test chooses (the admin's by default, or one
//! carrying a ServiceAccount token to prove that account's RBAC), its JSON
//! log captured line by line, killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

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
        let mut command = Command::new(operator_binary());
        if let Some(path) = kubeconfig {
            command.arg("--kubeconfig").arg(path);
        }
        let mut child = command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .spawn()
            .expect("starting gantry-operator");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let prefix = label.to_owned();
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
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
