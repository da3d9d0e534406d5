//! `cargo xtask crds`: regenerate crds/ from the operator's Rust types.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`cargo xtask crds` is not available yet: the GoServer types do not exist")
}
