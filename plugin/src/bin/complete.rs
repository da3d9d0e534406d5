//! `kubectl_complete-gantry`: what kubectl (1.26 and later) runs to
//! complete `kubectl gantry ...` when this file is on the PATH. It hands
//! the words to `kubectl-gantry __complete`, installed beside it.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("kubectl-gantry")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "kubectl-gantry".into());
    match Command::new(beside)
        .arg("__complete")
        .args(std::env::args_os().skip(1))
        .status()
    {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
