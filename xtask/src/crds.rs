//! `cargo xtask crds`: regenerate crds/, the Helm chart's copy of the CRD
//! and docs/reference.md from the operator's Rust types, and the chart's
//! copy of the alerting rules from deploy/monitoring/rules.yaml (a chart
//! cannot read files outside its directory).
//!
//! Both come from the operator binary (`gantry-operator crd` and
//! `gantry-operator reference`), so xtask does not compile the operator's
//! dependencies itself. `--check` only compares, for CI and hooks; the
//! operator crate also has a test that fails when either file is stale.

use std::fs;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::{proc, workspace};

/// Generated files, relative to the workspace root, and the operator
/// subcommand that prints each.
const OUTPUTS: [(&str, &str); 3] = [
    ("crds/goservers.gantry.dev.yaml", "crd"),
    (
        "charts/gantry-operator/crds/goservers.gantry.dev.yaml",
        "crd",
    ),
    ("docs/reference.md", "reference"),
];

/// Files the chart carries copies of: the source, and the copy.
const COPIES: [(&str, &str); 1] = [(
    "deploy/monitoring/rules.yaml",
    "charts/gantry-operator/files/rules.yaml",
)];

#[derive(clap::Args)]
pub struct Args {
    /// Do not write: fail when a committed file differs from the types.
    #[arg(long)]
    check: bool,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let root = workspace::root();
    let mut stale = false;
    let generated = OUTPUTS.into_iter().map(|(file, subcommand)| {
        let text = proc::output(
            &format!("generating {file} with `gantry-operator {subcommand}`"),
            workspace::cargo().args([
                "run",
                "--quiet",
                "--package",
                "gantry-operator",
                "--",
                subcommand,
            ]),
        );
        (file, text)
    });
    let copied = COPIES.into_iter().map(|(source, file)| {
        let text =
            fs::read_to_string(root.join(source)).with_context(|| format!("reading {source}"));
        (file, text)
    });
    for (file, generated) in generated.chain(copied) {
        let generated = generated?;
        let path = root.join(file);
        let current = fs::read_to_string(&path).unwrap_or_default();
        if current == generated {
            eprintln!("{file} is up to date");
        } else if args.check {
            eprintln!("{file} is stale: run `cargo xtask crds`");
            stale = true;
        } else {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            fs::write(&path, generated).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {file}");
        }
    }
    Ok(if stale {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
