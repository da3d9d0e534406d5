//! `cargo xtask bench judge`: how often the fixed-bound and the
//! comparative judge are wrong, on generated releases whose truth is known
//! (`operator/examples/judge_bench.rs`; docs/rollout.md has the model).
//!
//! The full run (2,000 releases of each kind, in a release build) prints
//! the table and writes `--json`. `--quick` judges 100 of each in the
//! debug build `cargo test` already made, for `cargo xtask test`, without
//! thresholds. `--record` (see `judge_record.rs`) records the samples of a
//! real gantry-server the benchmark also judges.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::workspace;

pub fn run(quick: bool, json_file: Option<&Path>) -> Result<ExitCode> {
    let mut cmd = workspace::cargo();
    cmd.args(["run", "--quiet", "--locked"]);
    if !quick {
        cmd.arg("--release");
    }
    cmd.args(["-p", "gantry-operator", "--example", "judge_bench", "--"]);
    if quick {
        cmd.arg("--quick");
    }
    let out = json_file.map_or_else(
        || {
            workspace::root()
                .join("target")
                .join("gantry")
                .join("judge.json")
        },
        Path::to_path_buf,
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    cmd.arg("--out").arg(&out);
    let status = cmd.status().context("running the judge benchmark")?;
    if !status.success() {
        bail!("the judge benchmark failed: {status}");
    }
    eprintln!("judge benchmark written to {}", out.display());
    Ok(ExitCode::SUCCESS)
}
