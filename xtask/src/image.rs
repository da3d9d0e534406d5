//! `cargo xtask image server|operator`: OCI images built with buildah.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Which image to build.
    #[arg(value_parser = ["server", "operator"])]
    target: String,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`cargo xtask image {}` is not available yet", args.target)
}
