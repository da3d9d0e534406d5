//! `cargo xtask bench server|operator|judge`: side-by-side benchmarks
//! (`judge`: see `bench_judge.rs`).
//!
//! `bench server` builds five servers with the same two routes (`GET /` and
//! `GET /api/v1/users/{id}`) and loads each in turn, on loopback, with one
//! load generator (wrk) and the same connection count:
//!
//! - `gantry-server`, `dist` build (LTO), every middleware on, logging JSON to a
//!   file, the user read from its `SQLite` database through auth and the rate
//!   limiter (set high enough never to refuse);
//! - `gin-full` (`bench/ginfull`): Gin doing the same work, the reference
//!   every ratio is computed against;
//! - `gin` (`bench/gin`): `gin.Default()`, the user from memory;
//! - `net/http` (`bench/nethttp`): the Go standard library, from memory;
//! - `axum-hello` (`server/examples/axum_hello.rs`): axum, no middleware,
//!   from memory.
//!
//! Fairness: on a machine with two cores or more, every server runs pinned
//! to core 0 with one worker (`GOMAXPROCS=1`, `TOKIO_WORKER_THREADS=1`) and
//! wrk pinned to core 1 with one thread, so no server gets more CPU than
//! another and wrk never competes with the server it loads. Each figure is
//! the median of three runs, the servers taken in a rotating order so that
//! none is always measured first or last. Besides requests per second and
//! latency percentiles, the server process's CPU time (user + system, all
//! threads) over the timed run, divided by the requests completed, gives
//! `cpuUsPerRequest`: what a request costs, whatever the load generator
//! could reach. `--quick` makes one short run, for CI.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

use crate::deps::{self, Package};
use crate::loopback::{Running, TOKEN, create_user, http};
use crate::{proc, workspace};

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
    /// `judge` only: record samples of real gantry-server runs into
    /// `operator/examples/judge_recorded.json` (which the benchmark reads)
    /// instead of judging.
    #[arg(long)]
    record: bool,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    match args.target.as_str() {
        "server" => server(args),
        "operator" => crate::bench_operator::run(args.quick, args.json.as_deref()),
        "judge" if args.record => crate::judge_record::run(),
        "judge" => crate::bench_judge::run(args.quick, args.json.as_deref()),
        other => bail!("`cargo xtask bench {other}` is not available yet"),
    }
}

/// `cargo xtask bench server --quick`, as `cargo xtask test` runs it: no
/// thresholds, an error only when a server could not be built or measured.
pub fn server_quick() -> Result<()> {
    server(&Args {
        target: "server".to_owned(),
        quick: true,
        json: None,
        record: false,
    })
    .map(drop)
}

/// Connections wrk keeps open, the same for every server.
const CONNECTIONS: u32 = 64;
/// wrk threads: one, on its own core.
const THREADS: u32 = 1;
const PEER_USER_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";
/// The server every ratio is computed against.
const REFERENCE: &str = "gin-full";

#[derive(Clone)]
struct Measurement {
    server: &'static str,
    route: &'static str,
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_request: f64,
}

/// A server to measure: its name, program and environment.
struct Peer {
    name: &'static str,
    program: PathBuf,
    env: Vec<(&'static str, String)>,
}

/// Core pinning, when the machine has a core to spare for wrk.
#[derive(Clone, Copy)]
struct Pinning {
    pinned: bool,
}

impl Pinning {
    fn detect() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            pinned: cores >= 2 && deps::on_path("taskset"),
        }
    }

    /// `program` as a command, on `core` when pinned.
    fn command(self, core: u32, program: &Path) -> Command {
        if self.pinned {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", &core.to_string()]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }
}

fn server(args: &Args) -> Result<ExitCode> {
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
    let (duration, runs) = if args.quick { (2, 1) } else { (10, 3) };

    let peers = build(&root, &out, args.quick)?;
    let pinning = Pinning::detect();
    let clock_ticks: f64 = proc::output("getconf CLK_TCK", Command::new("getconf").arg("CLK_TCK"))?
        .trim()
        .parse()
        .context("reading CLK_TCK")?;
    let settings = Settings {
        out: &out,
        duration,
        pinning,
        clock_ticks,
    };

    let mut all = Vec::new();
    for run in 0..runs {
        eprintln!("\n=== run {} of {runs}", run + 1);
        // Rotate, so that no server is always measured first or last.
        for i in 0..peers.len() {
            let peer = &peers[(i + run) % peers.len()];
            all.extend(measure_peer(peer, &settings)?);
        }
    }
    let results = medians(&all, &peers);
    let counting = peers
        .first()
        .and_then(|p| p.program.parent())
        .map(|dir| dir.join("examples/counting_allocations"))
        .context("no gantry-server build")?;
    let allocations = allocations_per_request(&counting, &settings)?;

    let date = proc::output("date", Command::new("date").args(["-u", "+%Y-%m-%d"]))?
        .trim()
        .to_owned();
    let machine = crate::machine::describe();
    print_table(&results, &date, &machine, &settings, runs);
    println!(
        "\ngantry-server heap allocations per request: {}",
        allocations
            .iter()
            .map(|(route, n)| format!("`{route}` {n:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "date": date,
            "machine": machine,
            "tool": "wrk",
            "connections": CONNECTIONS,
            "threads": THREADS,
            "durationSeconds": duration,
            "runs": runs,
            "pinned": pinning.pinned,
            "reference": REFERENCE,
            "gantryServerAllocationsPerRequest": allocations
                .iter()
                .map(|(route, n)| ((*route).to_owned(), serde_json::json!(n)))
                .collect::<serde_json::Map<_, _>>(),
            "results": results.iter().map(|m| serde_json::json!({
                "server": m.server,
                "route": m.route,
                "requestsPerSec": m.requests_per_sec,
                "p50Ms": m.p50_ms,
                "p99Ms": m.p99_ms,
                "cpuUsPerRequest": m.cpu_us_per_request,
                "ratioToGin": ratio_to_reference(&results, m),
            })).collect::<Vec<_>>(),
        });
        fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds every server; returns them in table order. Published figures
/// come from the `dist` profile (LTO, one codegen unit), as the images do;
/// `--quick` takes the plain release profile, which builds much faster.
fn build(root: &Path, out: &Path, quick: bool) -> Result<Vec<Peer>> {
    let profile = if quick { "release" } else { "dist" };
    eprintln!("building the servers (profile {profile})");
    proc::run(
        &format!("cargo build --profile {profile}"),
        workspace::cargo().args([
            "build",
            "--profile",
            profile,
            "-p",
            "gantry-server",
            "--bin",
            "gantry-server",
            "--example",
            "axum_hello",
            "--example",
            "counting_allocations",
        ]),
    )?;
    for peer in ["nethttp", "gin", "ginfull"] {
        proc::run(
            &format!("go build bench/{peer}"),
            Command::new("go")
                .current_dir(root.join("bench").join(peer))
                .env("CGO_ENABLED", "1")
                .args(["build", "-o"])
                .arg(out.join(peer))
                .arg("."),
        )?;
    }
    let target = workspace::non_empty_env("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from);
    let rust_out = target.join(profile);
    let one_go_thread = || {
        vec![
            ("GOMAXPROCS", "1".to_owned()),
            ("GIN_MODE", "release".to_owned()),
        ]
    };
    Ok(vec![
        Peer {
            name: "gantry-server",
            program: rust_out.join("gantry-server"),
            env: vec![("TOKIO_WORKER_THREADS", "1".to_owned())],
        },
        Peer {
            name: "gin-full",
            program: out.join("ginfull"),
            env: one_go_thread(),
        },
        Peer {
            name: "gin",
            program: out.join("gin"),
            env: one_go_thread(),
        },
        Peer {
            name: "net/http",
            program: out.join("nethttp"),
            env: one_go_thread(),
        },
        Peer {
            name: "axum-hello",
            program: rust_out.join("examples/axum_hello"),
            env: vec![("TOKIO_WORKER_THREADS", "1".to_owned())],
        },
    ])
}

/// What every measurement shares.
struct Settings<'a> {
    out: &'a Path,
    duration: u32,
    pinning: Pinning,
    clock_ticks: f64,
}

/// Starts `peer` in a fresh working directory, measures both routes, stops it.
fn measure_peer(peer: &Peer, settings: &Settings<'_>) -> Result<Vec<Measurement>> {
    let (server, id) = start_peer(peer, settings)?;
    let results = measure(&server, peer.name, &id, settings)?;
    server.stop();
    Ok(results)
}

/// Starts `peer` in a fresh working directory; it and the id of the user
/// to read.
fn start_peer(peer: &Peer, settings: &Settings<'_>) -> Result<(Running, String)> {
    let file_name: String = peer
        .name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    // Beside, not over, the peers' binaries in `out`.
    let work = settings.out.join("run").join(&file_name);
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let port = proc::free_port()?;
    let log = fs::File::create(settings.out.join(format!("{file_name}.log")))?;
    let mut cmd = settings.pinning.command(0, &peer.program);
    cmd.current_dir(&work)
        .env("ADDR", format!("127.0.0.1:{port}"))
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATABASE_URL", "sqlite://bench.db")
        .env("DATABASE", "bench.db")
        .env("API_TOKENS", TOKEN)
        .env("RATE_LIMIT_PER_SECOND", "1000000000")
        .env("RATE_LIMIT_BURST", "1000000000")
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "info")
        .env("SHUTDOWN_DELAY", "0s")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(log.try_clone()?)
        .stderr(log);
    for (name, value) in &peer.env {
        cmd.env(name, value);
    }
    let probe = if peer.name.starts_with("gantry-server") {
        "/readyz"
    } else {
        "/"
    };
    let server = Running::start(peer.name, &mut cmd, port, probe)?;
    // gantry-server's user is made through its API, in a fresh database;
    // gin-full seeds the same id, the other peers hold it in memory.
    let id = if peer.name.starts_with("gantry-server") {
        create_user(server.addr)?
    } else {
        PEER_USER_ID.to_owned()
    };
    Ok((server, id))
}

/// Heap allocations per request of gantry-server on each route: the
/// `counting_allocations` build (the same server on an instrumented
/// allocator) under the same load, its `gantry_server_allocations_total`
/// read before and after, divided by the requests wrk completed. The one
/// scrape in between adds a few hundred allocations to hundreds of
/// thousands of requests' worth.
fn allocations_per_request(
    program: &Path,
    settings: &Settings<'_>,
) -> Result<Vec<(&'static str, f64)>> {
    let peer = Peer {
        name: "gantry-server (counting allocations)",
        program: program.to_owned(),
        env: vec![("TOKIO_WORKER_THREADS", "1".to_owned())],
    };
    let (server, id) = start_peer(&peer, settings)?;
    let allocations = || -> Result<u64> {
        let (status, body) = http(server.addr, "GET", "/metrics", &[], "")?;
        if status != 200 {
            bail!("GET /metrics: {status}");
        }
        body.lines()
            .find_map(|l| l.strip_prefix("gantry_server_allocations_total "))
            .and_then(|v| v.trim().parse().ok())
            .context("no gantry_server_allocations_total on /metrics")
    };
    let mut out = Vec::new();
    for route in ROUTES {
        let url = format!("http://{}{}", server.addr, route.replace("{id}", &id));
        eprintln!(
            "{} {route}: allocations over {} s",
            peer.name,
            settings.duration.min(5)
        );
        wrk(settings.pinning, &url, 1)?;
        let before = allocations()?;
        let report = wrk(settings.pinning, &url, settings.duration.min(5))?;
        let after = allocations()?;
        let parsed =
            parse_wrk(&report).with_context(|| format!("reading wrk's report:\n{report}"))?;
        out.push((
            route,
            count(after.saturating_sub(before)) / count(parsed.requests.max(1)),
        ));
    }
    server.stop();
    Ok(out)
}

/// Per server and route, the median of each figure over the runs, in the
/// order of `peers`.
fn medians(all: &[Measurement], peers: &[Peer]) -> Vec<Measurement> {
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or_default()
    };
    let mut out = Vec::new();
    for peer in peers {
        for route in ROUTES {
            let runs: Vec<&Measurement> = all
                .iter()
                .filter(|m| m.server == peer.name && m.route == route)
                .collect();
            if runs.is_empty() {
                continue;
            }
            out.push(Measurement {
                server: peer.name,
                route,
                requests_per_sec: median(runs.iter().map(|m| m.requests_per_sec).collect()),
                p50_ms: median(runs.iter().map(|m| m.p50_ms).collect()),
                p99_ms: median(runs.iter().map(|m| m.p99_ms).collect()),
                cpu_us_per_request: median(runs.iter().map(|m| m.cpu_us_per_request).collect()),
            });
        }
    }
    out
}

const ROUTES: [&str; 2] = ["/", "/api/v1/users/{id}"];

/// Loads both routes of one server, reading its CPU time around each timed run.
fn measure(
    server: &Running,
    name: &'static str,
    user_id: &str,
    settings: &Settings<'_>,
) -> Result<Vec<Measurement>> {
    let mut out = Vec::new();
    for route in ROUTES {
        let path = route.replace("{id}", user_id);
        let url = format!("http://{}{path}", server.addr);
        let duration = settings.duration;
        eprintln!("{name} {route}: warm-up, then {duration} s with {CONNECTIONS} connections");
        wrk(settings.pinning, &url, 1)?;
        let before = cpu_ticks(server.pid())?;
        let report = wrk(settings.pinning, &url, duration)?;
        let after = cpu_ticks(server.pid())?;
        let parsed =
            parse_wrk(&report).with_context(|| format!("reading wrk's report:\n{report}"))?;
        if let Some(line) = report.lines().find(|l| l.contains("Non-2xx")) {
            bail!("{name} {route} answered errors under load: {}", line.trim());
        }
        let cpu_us = count(after.saturating_sub(before)) * 1e6 / settings.clock_ticks;
        out.push(Measurement {
            server: name,
            route,
            requests_per_sec: parsed.requests_per_sec,
            p50_ms: parsed.p50_ms,
            p99_ms: parsed.p99_ms,
            cpu_us_per_request: cpu_us / count(parsed.requests.max(1)),
        });
    }
    Ok(out)
}

/// A count as a float; counts here stay far below 2^52, where precision
/// would start to go.
#[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
fn count(n: u64) -> f64 {
    n as f64
}

/// User plus system time of every thread of `pid`, in clock ticks
/// (fields 14 and 15 of `/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).with_context(|| format!("no CPU times in /proc/{pid}/stat"))
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces; fields after it do not.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn wrk(pinning: Pinning, url: &str, seconds: u32) -> Result<String> {
    proc::output(
        "wrk",
        pinning
            .command(1, Path::new("wrk"))
            .arg(format!("-t{THREADS}"))
            .arg(format!("-c{CONNECTIONS}"))
            .arg(format!("-d{seconds}s"))
            .arg("--latency")
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .arg(url),
    )
}

/// What one wrk report says.
#[derive(Debug)]
struct WrkReport {
    requests: u64,
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn parse_wrk(report: &str) -> Result<WrkReport> {
    let mut requests = None;
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    for line in report.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => rps = v.parse().ok(),
            (Some("50%"), Some(v)) => p50 = duration_ms(v),
            (Some("99%"), Some(v)) => p99 = duration_ms(v),
            (Some(n), Some("requests")) => requests = n.parse().ok(),
            _ => {}
        }
    }
    match (requests, rps, p50, p99) {
        (Some(requests), Some(requests_per_sec), Some(p50_ms), Some(p99_ms)) => Ok(WrkReport {
            requests,
            requests_per_sec,
            p50_ms,
            p99_ms,
        }),
        _ => bail!("no request count, Requests/sec or latency percentiles"),
    }
}

/// wrk's `123.45us`, `1.20ms`, `2.00s` as milliseconds.
fn duration_ms(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().ok()?;
    match unit {
        "us" => Some(n / 1000.0),
        "ms" => Some(n),
        "s" => Some(n * 1000.0),
        "m" => Some(n * 60_000.0),
        _ => None,
    }
}

fn ratio_to_reference(results: &[Measurement], m: &Measurement) -> Option<f64> {
    results
        .iter()
        .find(|g| g.server == REFERENCE && g.route == m.route)
        .filter(|g| g.requests_per_sec > 0.0)
        .map(|g| m.requests_per_sec / g.requests_per_sec)
}

fn print_table(
    results: &[Measurement],
    date: &str,
    machine: &serde_json::Value,
    settings: &Settings<'_>,
    runs: usize,
) {
    let pinning = if settings.pinning.pinned {
        "server on core 0 with one worker, wrk on core 1"
    } else {
        "not pinned"
    };
    println!(
        "\n{date}, {} ({} cores), Linux {}; wrk -t{THREADS} -c{CONNECTIONS} -d{}s on loopback, {pinning}; median of {runs} run(s)\n",
        machine["cpu"].as_str().unwrap_or_default(),
        machine["cores"],
        machine["kernel"].as_str().unwrap_or_default(),
        settings.duration,
    );
    println!("| server | route | requests/s | p50 | p99 | CPU µs/request | vs {REFERENCE} |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for m in results {
        let ratio =
            ratio_to_reference(results, m).map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
        println!(
            "| {} | `{}` | {:.0} | {:.2} ms | {:.2} ms | {:.1} | {ratio} |",
            m.server, m.route, m.requests_per_sec, m.p50_ms, m.p99_ms, m.cpu_us_per_request
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_reports_are_read() {
        let report = "Running 3s test @ http://127.0.0.1:1/\n  2 threads and 64 connections\n  \
            Latency Distribution\n     50%  512.00us\n     75%    1.00ms\n     90%    2.00ms\n     \
            99%    3.50ms\n  100000 requests in 3.00s, 10.00MB read\nRequests/sec:  33333.33\n";
        let parsed = parse_wrk(report).unwrap();
        assert_eq!(parsed.requests, 100_000);
        assert!((parsed.requests_per_sec - 33_333.33).abs() < 1e-6);
        assert!((parsed.p50_ms - 0.512).abs() < 1e-9);
        assert!((parsed.p99_ms - 3.5).abs() < 1e-9);
        assert_eq!(duration_ms("2.00s"), Some(2000.0));
        assert_eq!(duration_ms("fast"), None);
    }

    #[test]
    fn cpu_times_are_read_past_a_name_with_spaces() {
        let stat = "4242 (gin full) S 1 4242 4242 0 -1 4194304 500 0 0 0 120 30 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(150));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn figures_are_medians_per_server_and_route() {
        let m = |rps: f64| Measurement {
            server: "gin-full",
            route: "/",
            requests_per_sec: rps,
            p50_ms: rps / 1000.0,
            p99_ms: 1.0,
            cpu_us_per_request: 10.0,
        };
        let peers = [Peer {
            name: "gin-full",
            program: PathBuf::new(),
            env: Vec::new(),
        }];
        let out = medians(&[m(3000.0), m(1000.0), m(2000.0)], &peers);
        assert_eq!(out.len(), 1);
        assert!((out[0].requests_per_sec - 2000.0).abs() < 1e-9);
        assert!((out[0].p50_ms - 2.0).abs() < 1e-9);
        assert!((ratio_to_reference(&out, &out[0]).unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn reports_without_figures_are_errors() {
        assert!(parse_wrk("unable to connect").is_err());
    }
}
