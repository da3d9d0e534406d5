//! `cargo xtask bench server`: gantry-server side by side with Go and Rust
//! peers on the same two routes (`GET /` and `GET /api/v1/users/{id}`), on
//! loopback (docs/server.md, "Benchmark", says what each peer is given).
//!
//! - `gantry-server`, `dist` build (LTO), every middleware on, JSON logs to a
//!   file, the user read from `SQLite` through auth and the rate limiter;
//! - `gin-tuned` (`bench/gintuned`): the same features, each stage written
//!   for speed, built with PGO from a profile of this benchmark, with a
//!   stated `GOGC` and `GOMEMLIMIT`: the peer every goal is set against;
//! - `gin-full` (`bench/ginfull`): the same work written plainly;
//! - `gin`, `net/http`, `axum-hello`: frameworks with little or no
//!   middleware, serving from memory, for scale.
//!
//! Every server is pinned to core 0 with one worker; the load to core 1.
//! Each run loads every server in turn (the order rotating between runs):
//! wrk at saturation (64 connections), then, for the three servers doing
//! the same work, vegeta at a fixed rate below every server's saturation
//! from four source addresses. Both send the same mix of headers
//! (`load::mix_headers`). After each load the server's own count of
//! responses and access lines must match what the generator saw. Ratios are
//! medians of paired runs with a bootstrap 95 % interval (`stats`).
//! `--quick` makes one short run, for CI; `--pgo` profiles gin-tuned under
//! this load and writes `bench/gintuned/default.pgo`.

mod load;
mod measure;
mod peers;
mod pgo;
mod report;
mod stats;

use std::fs;
use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

use crate::deps::{self, Package};
use crate::{proc, workspace};
use load::Pinning;
use measure::{Settings, allocations_per_request, measure_peer};
use peers::{build, build_vegeta};
use report::{About, print_tables, to_json};

pub struct Options<'a> {
    pub quick: bool,
    pub runs: Option<usize>,
    pub json: Option<&'a Path>,
    pub pgo: bool,
}

pub fn run(options: &Options<'_>) -> Result<ExitCode> {
    deps::ensure(&[Package {
        command: "wrk",
        package: "wrk",
    }])?;
    if !deps::on_path("go") {
        bail!("`go` is not on PATH; the Go peers are built from their modules in bench/");
    }
    let root = workspace::root();
    let out = root.join("bench/out");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let pinning = Pinning::detect();
    let clock_ticks: f64 = proc::output("getconf CLK_TCK", Command::new("getconf").arg("CLK_TCK"))?
        .trim()
        .parse()
        .context("reading CLK_TCK")?;
    let vegeta = build_vegeta(&root, &out)?;
    if options.pgo {
        return pgo::profile(&root, &out, pinning).map(|()| ExitCode::SUCCESS);
    }
    let (duration, runs, rate) = if options.quick {
        (2, 1, 1000)
    } else {
        (5, options.runs.unwrap_or(10), 5000)
    };
    let peers = build(&root, &out, options.quick)?;
    let settings = Settings {
        out,
        duration,
        rate,
        pinning,
        clock_ticks,
        vegeta,
        pgo: !options.quick && root.join("bench/gintuned/default.pgo").is_file(),
    };

    let mut samples = Vec::new();
    for run in 0..runs {
        eprintln!("\n=== run {} of {runs}", run + 1);
        // Rotate, so that no server is always measured first or last.
        for i in 0..peers.len() {
            let peer = &peers[(i + run) % peers.len()];
            samples.extend(measure_peer(run, peer, &settings)?);
        }
    }
    let counting = peers
        .first()
        .and_then(|p| p.program.parent())
        .map(|dir| dir.join("examples/counting_allocations"))
        .context("no gantry-server build")?;
    let allocations = allocations_per_request(&counting, &settings)?;

    let about = About::collect(&root, &settings, runs)?;
    print_tables(&samples, &peers, &about);
    println!(
        "\ngantry-server heap allocations per request: {}",
        allocations
            .iter()
            .map(|(route, n)| format!("`{route}` {n:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(path) = options.json {
        let json = to_json(&samples, &peers, &about, &allocations);
        fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask bench server --quick`, as `cargo xtask test` runs it: no
/// thresholds; an error when a server could not be built or measured, or
/// dropped work.
pub fn quick() -> Result<()> {
    run(&Options {
        quick: true,
        runs: None,
        json: None,
        pgo: false,
    })
    .map(drop)
}
