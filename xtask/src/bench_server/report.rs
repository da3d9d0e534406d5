//! The published form of `bench server`: its tables, its JSON, and what
//! they say about how they were made.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use super::load::{self, Report};
use super::measure::{Sample, Settings};
use super::peers::{GIN_TUNED_GC, PLAIN, Peer, ROUTES, TUNED};
use super::stats::{Ratio, median, paired_ratio};
use crate::proc;

/// What a published table says about how it was made.
pub(super) struct About {
    date: String,
    machine: serde_json::Value,
    commit: String,
    toolchains: serde_json::Value,
    runs: usize,
    duration: u32,
    rate: u32,
    pinned: bool,
    pgo: bool,
}

impl About {
    pub(super) fn collect(root: &Path, settings: &Settings, runs: usize) -> Result<Self> {
        let text = |step: &str, cmd: &mut Command| {
            proc::output(step, cmd).map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned())
        };
        let mut commit = text(
            "git rev-parse",
            Command::new("git")
                .current_dir(root)
                .args(["rev-parse", "HEAD"]),
        );
        let dirty = text(
            "git status",
            Command::new("git")
                .current_dir(root)
                .args(["status", "--porcelain"]),
        );
        if !dirty.is_empty() {
            commit.push_str(" (with uncommitted changes)");
        }
        let wrk_version = Command::new("wrk")
            .arg("-v")
            .output()
            .map(|o| {
                let all = [o.stdout, o.stderr].concat();
                String::from_utf8_lossy(&all)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .unwrap_or_default();
        Ok(Self {
            date: proc::output("date", Command::new("date").args(["-u", "+%Y-%m-%d"]))?
                .trim()
                .to_owned(),
            machine: crate::machine::describe(),
            commit,
            toolchains: serde_json::json!({
                "rustc": text("rustc -V", Command::new("rustc").arg("-V")),
                "go": text("go version", Command::new("go").arg("version")),
                "wrk": wrk_version,
                "vegeta": "v12.13.0 (bench/loadgen/go.mod)",
            }),
            runs,
            duration: settings.duration,
            rate: settings.rate,
            pinned: settings.pinning.pinned,
            pgo: settings.pgo,
        })
    }
}

/// One figure of every run of a server and route, in run order.
fn series(
    samples: &[Sample],
    server: &str,
    route: &str,
    figure: impl Fn(&Sample) -> Option<f64>,
) -> Vec<f64> {
    let mut of: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.server == server && s.route == route)
        .collect();
    of.sort_by_key(|s| s.run);
    of.iter().filter_map(|s| figure(s)).collect()
}

#[allow(clippy::unnecessary_wraps, reason = "one shape for every figure")]
fn rps(s: &Sample) -> Option<f64> {
    Some(s.saturation.requests_per_sec)
}
fn fixed_cpu(s: &Sample) -> Option<f64> {
    s.fixed.map(|(_, cpu)| cpu)
}
fn fixed_p99(s: &Sample) -> Option<f64> {
    s.fixed.map(|(r, _)| r.p99_ms)
}
#[allow(clippy::unnecessary_wraps, reason = "one shape for every figure")]
fn saturation_p99(s: &Sample) -> Option<f64> {
    Some(s.saturation.p99_ms)
}

/// gantry-server's ratios to `reference` on `route`.
struct Comparison {
    reference: &'static str,
    route: &'static str,
    rps: Option<Ratio>,
    fixed_cpu: Option<Ratio>,
    fixed_p99: Option<Ratio>,
    saturation_p99: Option<Ratio>,
}

fn comparisons(samples: &[Sample]) -> Vec<Comparison> {
    let mut out = Vec::new();
    for reference in [TUNED, PLAIN] {
        for route in ROUTES {
            let ratio = |figure: fn(&Sample) -> Option<f64>| {
                paired_ratio(
                    &series(samples, "gantry-server", route, figure),
                    &series(samples, reference, route, figure),
                )
            };
            out.push(Comparison {
                reference,
                route,
                rps: ratio(rps),
                fixed_cpu: ratio(fixed_cpu),
                fixed_p99: ratio(fixed_p99),
                saturation_p99: ratio(saturation_p99),
            });
        }
    }
    out
}

pub(super) fn print_tables(samples: &[Sample], peers: &[Peer], about: &About) {
    let pinning = if about.pinned {
        "server on core 0 with one worker, load on core 1"
    } else {
        "not pinned"
    };
    println!(
        "\n{}, {} ({} cores), Linux {}; commit {}; {pinning}; {} run(s), medians",
        about.date,
        about.machine["cpu"].as_str().unwrap_or_default(),
        about.machine["cores"],
        about.machine["kernel"].as_str().unwrap_or_default(),
        about.commit,
        about.runs,
    );
    println!(
        "\nSaturation: wrk -t1 -c{} -d{}s with the header mix; {TUNED} {} PGO, {}\n",
        load::CONNECTIONS,
        about.duration,
        if about.pgo { "with" } else { "without" },
        GIN_TUNED_GC.map(|(k, v)| format!("{k}={v}")).join(" "),
    );
    println!(
        "| server | route | requests/s | p50 | p99 | CPU µs/request | peak RSS | vs {TUNED} | vs {PLAIN} |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for peer in peers {
        for route in ROUTES {
            let m =
                |f: fn(&Sample) -> f64| median(&series(samples, peer.name, route, |s| Some(f(s))));
            let vs = |reference: &str| {
                paired_ratio(
                    &series(samples, peer.name, route, rps),
                    &series(samples, reference, route, rps),
                )
                .map_or_else(|| "-".to_owned(), |r| format!("{:.2}x", r.median))
            };
            println!(
                "| {} | `{route}` | {:.0} | {:.2} ms | {:.2} ms | {:.1} | {:.1} MiB | {} | {} |",
                peer.name,
                m(|s| s.saturation.requests_per_sec),
                m(|s| s.saturation.p50_ms),
                m(|s| s.saturation.p99_ms),
                m(|s| s.saturation_cpu_us),
                m(|s| s.peak_rss_mib),
                vs(TUNED),
                vs(PLAIN),
            );
        }
    }
    print_fixed(samples, peers, about);
    print_comparisons(samples);
}

fn print_fixed(samples: &[Sample], peers: &[Peer], about: &About) {
    println!(
        "\nFixed rate: vegeta, {} requests/s from {} source addresses, {} s, the same mix\n",
        about.rate,
        load::SOURCES.len(),
        about.duration
    );
    println!("| server | route | p50 | p99 | CPU µs/request |");
    println!("|---|---|---:|---:|---:|");
    for peer in peers.iter().filter(|p| p.same_work) {
        for route in ROUTES {
            let m = |f: fn(&(Report, f64)) -> f64| {
                median(&series(samples, peer.name, route, |s| {
                    s.fixed.map(|x| f(&x))
                }))
            };
            println!(
                "| {} | `{route}` | {:.3} ms | {:.3} ms | {:.1} |",
                peer.name,
                m(|(r, _)| r.p50_ms),
                m(|(r, _)| r.p99_ms),
                m(|(_, cpu)| *cpu),
            );
        }
    }
}

fn print_comparisons(samples: &[Sample]) {
    println!(
        "\ngantry-server against each Go peer: median of paired runs [95 % bootstrap interval]\n"
    );
    println!(
        "| against | route | requests/s | CPU/request at the fixed rate | p99 at the fixed rate | p99 at saturation |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    let show = |r: Option<Ratio>| {
        r.map_or_else(
            || "-".to_owned(),
            |r| format!("{:.2}x [{:.2}, {:.2}]", r.median, r.low, r.high),
        )
    };
    for c in comparisons(samples) {
        println!(
            "| {} | `{}` | {} | {} | {} | {} |",
            c.reference,
            c.route,
            show(c.rps),
            show(c.fixed_cpu),
            show(c.fixed_p99),
            show(c.saturation_p99)
        );
    }
    println!("\nGoals against {TUNED}:");
    for c in comparisons(samples).iter().filter(|c| c.reference == TUNED) {
        let met = |ok: bool| if ok { "met" } else { "not met" };
        let throughput = c.rps.is_some_and(|r| r.median >= 2.0 && r.low > 1.8);
        let cpu = c.fixed_cpu.is_some_and(|r| r.median <= 0.5);
        let p99 = c.fixed_p99.is_some_and(|r| r.median <= 1.0);
        println!(
            "- `{}`: requests/s at least 2.0x with the interval above 1.8x: {}; CPU per request at most 0.5x: {}; p99 no worse: {}",
            c.route,
            met(throughput),
            met(cpu),
            met(p99)
        );
    }
}

pub(super) fn to_json(
    samples: &[Sample],
    peers: &[Peer],
    about: &About,
    allocations: &[(&str, f64)],
) -> serde_json::Value {
    let ratio = |r: Option<Ratio>| {
        r.map(|r| serde_json::json!({"median": r.median, "low95": r.low, "high95": r.high}))
    };
    serde_json::json!({
        "date": about.date,
        "machine": about.machine,
        "commit": about.commit,
        "toolchains": about.toolchains,
        "pinned": about.pinned,
        "runs": about.runs,
        "durationSeconds": about.duration,
        "saturation": {"tool": "wrk", "threads": 1, "connections": load::CONNECTIONS},
        "fixedRate": {"tool": "vegeta", "requestsPerSecond": about.rate, "sources": load::SOURCES},
        "headerMix": load::mix_shares(),
        "ginTuned": {"pgo": about.pgo, "env": GIN_TUNED_GC.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()},
        "gantryServerAllocationsPerRequest": allocations
            .iter()
            .map(|(route, n)| ((*route).to_owned(), serde_json::json!(n)))
            .collect::<serde_json::Map<_, _>>(),
        "servers": peers.iter().map(|p| serde_json::json!({"name": p.name, "sameWork": p.same_work})).collect::<Vec<_>>(),
        "comparisons": comparisons(samples).iter().map(|c| serde_json::json!({
            "against": c.reference,
            "route": c.route,
            "requestsPerSec": ratio(c.rps),
            "cpuPerRequestAtFixedRate": ratio(c.fixed_cpu),
            "p99AtFixedRate": ratio(c.fixed_p99),
            "p99AtSaturation": ratio(c.saturation_p99),
        })).collect::<Vec<_>>(),
        "samples": samples.iter().map(|s| serde_json::json!({
            "run": s.run,
            "server": s.server,
            "route": s.route,
            "requestsPerSec": s.saturation.requests_per_sec,
            "p50Ms": s.saturation.p50_ms,
            "p99Ms": s.saturation.p99_ms,
            "cpuUsPerRequest": s.saturation_cpu_us,
            "peakRssMiB": s.peak_rss_mib,
            "fixedRate": s.fixed.map(|(r, cpu)| serde_json::json!({
                "requests": r.requests,
                "p50Ms": r.p50_ms,
                "p99Ms": r.p99_ms,
                "cpuUsPerRequest": cpu,
            })),
        })).collect::<Vec<_>>(),
    })
}
