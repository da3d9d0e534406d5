//! `cargo xtask previews`: PNG previews of the Grafana dashboards in
//! `deploy/monitoring/dashboards/`, written to `docs/previews/`, from real
//! data. Grafana itself is not involved; each image says so.
//!
//! ```text
//! cluster up (the developer's cluster; reused when it runs)
//!   -> cargo test -p gantry-e2e --test monitoring -- --ignored dashboard_preview_data
//!        a real Prometheus scraping a real operator and gantry-server
//!        processes under traffic, a second revision deployed; every panel
//!        and annotation query of each dashboard sent as Grafana sends it,
//!        written with the dashboard to target/gantry/previews/data/<name>.json
//!   -> page::render: each data file as a static HTML page (Rust, no
//!        JavaScript: panels laid out by gridPos, SVG line charts, stats, tables)
//!   -> chromium --headless --screenshot: docs/previews/<name>.png
//! ```
//!
//! The data takes about five minutes to gather, most of it the scene's
//! time passing so that the charts have something to show. `--reuse-data`
//! renders the last data again, for work on the renderer. Prometheus and
//! Chromium come from Debian's packages, installed when missing.

mod chart;
mod format;
mod page;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cluster::Cluster;
use crate::deps::{self, Package};
use crate::{proc, toolchain, workspace};

/// The browser that takes the screenshots.
const CHROMIUM: Package = Package {
    command: "chromium",
    package: "chromium",
};

/// Where the previews go, relative to the workspace root.
const OUTPUT: &str = "docs/previews";

/// The ignored test that writes the data, in tests/tests/monitoring.rs.
const DATA_TEST: &str = "dashboard_preview_data";

#[derive(clap::Args)]
pub struct Args {
    /// Render the data of the last run again instead of gathering new data
    /// (no cluster, no test).
    #[arg(long)]
    reuse_data: bool,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let started = Instant::now();
    let work = workspace::root().join("target/gantry/previews");
    let data_dir = work.join("data");
    if args.reuse_data {
        deps::ensure(&[CHROMIUM])?;
    } else {
        deps::ensure(&[deps::PROMETHEUS, CHROMIUM])?;
        gather(&data_dir)?;
    }
    let mut files: Vec<PathBuf> = fs::read_dir(&data_dir)
        .with_context(|| format!("reading {}: no data yet", data_dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|f| f.extension().is_some_and(|e| e == "json"));
    files.sort();
    if files.is_empty() {
        bail!("{} holds no data", data_dir.display());
    }
    let output = workspace::root().join(OUTPUT);
    fs::create_dir_all(&output)?;
    fs::create_dir_all(&work)?;
    for file in files {
        let stem = file
            .file_stem()
            .context("a data file without a name")?
            .to_string_lossy()
            .into_owned();
        let data: Value = serde_json::from_slice(&fs::read(&file)?)
            .with_context(|| format!("reading {}", file.display()))?;
        let page = page::render(&data).with_context(|| format!("rendering {}", file.display()))?;
        let html = work.join(format!("{stem}.html"));
        fs::write(&html, &page.html)?;
        let png = output.join(format!("{stem}.png"));
        screenshot(&html, &png, &page, &work)?;
        let size = fs::metadata(&png)?.len();
        eprintln!("wrote {OUTPUT}/{stem}.png ({} KiB)", size / 1024);
    }
    eprintln!("previews done in {:.0}s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

/// Runs the data test against the developer's cluster (started if it is
/// not running; it stays up, as after `cargo xtask demo`).
fn gather(data_dir: &Path) -> Result<()> {
    // Old data must not pass for new if the test fails half-way.
    if data_dir.exists() {
        fs::remove_dir_all(data_dir)?;
    }
    let cluster = Cluster::at(workspace::cluster_dir());
    cluster.up(3)?;
    eprintln!("gathering the data: a real Prometheus, operator and servers for about five minutes");
    proc::run(
        "the dashboard preview data",
        workspace::cargo()
            .args(["test", "-p", "gantry-e2e", "--test", "monitoring", "--"])
            .args(["--ignored", "--exact", DATA_TEST])
            .env("KUBECONFIG", cluster.kubeconfig())
            .env("GANTRY_BIN_DIR", toolchain::bin_dir()?)
            .env("GANTRY_PREVIEW_DATA", data_dir),
    )
}

/// Chromium, headless, shooting `html` at the page's size into `png`.
fn screenshot(html: &Path, png: &Path, page: &page::Page, work: &Path) -> Result<()> {
    let html = html
        .canonicalize()
        .with_context(|| format!("finding {}", html.display()))?;
    let Some(path) = html.to_str().filter(|p| {
        p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    }) else {
        bail!(
            "{} needs escaping in a file: URL; render from a plainer path",
            html.display()
        );
    };
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-sync",
        "--disable-background-networking",
        "--disable-component-update",
    ])
    .arg(format!(
        "--user-data-dir={}",
        work.join("chromium").display()
    ))
    .arg(format!("--window-size={},{}", page.width, page.height))
    .arg(format!("--screenshot={}", png.display()))
    .arg(format!("file://{path}"));
    if nix::unistd::geteuid().is_root() {
        // Chromium refuses to run its sandbox as root.
        cmd.arg("--no-sandbox");
    }
    proc::run_logged(
        &format!("chromium --screenshot {}", png.display()),
        &mut cmd,
        &work.join("chromium.log"),
    )?;
    if !png.exists() {
        bail!(
            "chromium wrote no {}; its log: {}",
            png.display(),
            work.join("chromium.log").display()
        );
    }
    Ok(())
}
