//! `cargo xtask crds`: regenerate crds/ from the operator's Rust types.
//!
//! The schema comes from `gantry-operator crd`, so xtask does not compile
//! the operator's dependencies itself. `--check` only compares, for CI and
//! hooks; the operator crate also has a test that fails when crds/ is stale.

use std::fs;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

use crate::{proc, workspace};

/// The file the `GoServer` CRD lives in, relative to the workspace root.
const CRD_FILE: &str = "crds/goservers.gantry.dev.yaml";

#[derive(clap::Args)]
pub struct Args {
    /// Do not write: fail when the committed CRD differs from the types.
    #[arg(long)]
    check: bool,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let root = workspace::root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let yaml = proc::output(
        "generating the CRD with `gantry-operator crd`",
        Command::new(cargo).current_dir(&root).args([
            "run",
            "--quiet",
            "--package",
            "gantry-operator",
            "--",
            "crd",
        ]),
    )?;
    let path = root.join(CRD_FILE);
    let current = fs::read_to_string(&path).unwrap_or_default();
    if args.check {
        if current == yaml {
            eprintln!("{CRD_FILE} is up to date");
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("{CRD_FILE} is stale: run `cargo xtask crds`");
        return Ok(ExitCode::FAILURE);
    }
    if current == yaml {
        eprintln!("{CRD_FILE} is up to date");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {CRD_FILE}");
    Ok(ExitCode::SUCCESS)
}
