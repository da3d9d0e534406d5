//! `cargo xtask demo`: the quick start.

use std::process::ExitCode;

pub fn run() -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "`cargo xtask demo` needs the operator, which is not built yet; \
         `cargo xtask cluster up` starts the control plane on its own"
    )
}
