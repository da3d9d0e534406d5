//! `cargo xtask bench server|operator|judge`: side-by-side benchmarks
//! (`server`: see `bench_server`; `operator`: `bench_operator.rs`;
//! `judge`: `bench_judge.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Args {
    /// What to measure.
    #[arg(value_parser = ["server", "operator", "judge"])]
    target: String,
    /// A shorter run, for a quick look rather than a published figure.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// `server` only: runs of every server (default 10; `--quick`: 1).
    #[arg(long)]
    runs: Option<usize>,
    /// `server` only: profile gin-tuned under the benchmark's load and
    /// write `bench/gintuned/default.pgo` (its PGO profile) instead of
    /// measuring.
    #[arg(long)]
    pgo: bool,
    /// `judge` only: record samples of real gantry-server runs into
    /// `operator/examples/judge_recorded.json` (which the benchmark reads)
    /// instead of judging.
    #[arg(long)]
    record: bool,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    match args.target.as_str() {
        "server" => crate::bench_server::run(&crate::bench_server::Options {
            quick: args.quick,
            runs: args.runs,
            json: args.json.as_deref(),
            pgo: args.pgo,
        }),
        "operator" => crate::bench_operator::run(args.quick, args.json.as_deref()),
        "judge" if args.record => crate::judge_record::run(),
        "judge" => crate::bench_judge::run(args.quick, args.json.as_deref()),
        other => bail!("`cargo xtask bench {other}` is not available yet"),
    }
}
