//! `cargo xtask bench server|operator`: side-by-side benchmarks.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// What to measure.
    #[arg(value_parser = ["server", "operator"])]
    target: String,
    /// A shorter run, for a quick look rather than a published figure.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let _ = (args.quick, &args.json);
    anyhow::bail!("`cargo xtask bench {}` is not available yet", args.target)
}
