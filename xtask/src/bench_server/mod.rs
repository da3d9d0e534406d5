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
mod pgo;
mod report;
mod stats;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

use crate::deps::{self, Package};
use crate::loopback::{Running, TOKEN, create_user};
use crate::{proc, workspace};
use load::{Counted, LogCursor, Pinning, Report};
use report::{About, print_tables, to_json};

/// What `cargo xtask bench server` was asked.
pub struct Options<'a> {
    pub quick: bool,
    pub runs: Option<usize>,
    pub json: Option<&'a Path>,
    pub pgo: bool,
}

const PEER_USER_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";
const ROUTES: [&str; 2] = ["/", "/api/v1/users/{id}"];
/// The peer the goals are set against, and the one kept from before.
const TUNED: &str = "gin-tuned";
const PLAIN: &str = "gin-full";
/// gin-tuned's garbage collector: collect when the heap has grown to five
/// times what survived the last collection (its live heap is a few MiB),
/// and harder as it nears 256 MiB.
const GIN_TUNED_GC: [(&str, &str); 2] = [("GOGC", "400"), ("GOMEMLIMIT", "256MiB")];

/// A server to measure.
struct Peer {
    name: &'static str,
    program: PathBuf,
    env: Vec<(&'static str, String)>,
    /// Does gantry-server's work (logs, metrics, the database): measured at
    /// the fixed rate too, and its own counts checked.
    same_work: bool,
}

/// One route of one server in one run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    run: usize,
    server: &'static str,
    route: &'static str,
    saturation: Report,
    saturation_cpu_us: f64,
    fixed: Option<(Report, f64)>,
    peak_rss_mib: f64,
}

/// What every measurement shares.
struct Settings {
    out: PathBuf,
    duration: u32,
    rate: u32,
    pinning: Pinning,
    clock_ticks: f64,
    vegeta: PathBuf,
    /// gin-tuned built with its PGO profile.
    pgo: bool,
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

/// vegeta, built from its module (`bench/loadgen`).
fn build_vegeta(root: &Path, out: &Path) -> Result<PathBuf> {
    let program = out.join("vegeta");
    proc::run(
        "go build vegeta",
        Command::new("go")
            .current_dir(root.join("bench/loadgen"))
            .args(["build", "-o"])
            .arg(&program)
            .arg("github.com/tsenart/vegeta/v12"),
    )?;
    Ok(program)
}

/// Builds every server; returns them in table order. Published figures
/// come from the `dist` profile (LTO, one codegen unit), as the images do;
/// `--quick` takes the plain release profile, which builds much faster.
/// gin-tuned is built with `bench/gintuned/default.pgo` (Go's `-pgo=auto`),
/// except by `--quick`.
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
    // `--quick` builds gin-tuned without its profile too: a PGO build
    // compiles every package it imports again (SQLite's C included), and a
    // quick run publishes nothing.
    let pgo = if quick { "off" } else { "auto" };
    for peer in ["nethttp", "gin", "ginfull", "gintuned"] {
        go_build(root, peer, &out.join(peer), pgo)?;
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
    let mut tuned_env = one_go_thread();
    tuned_env.extend(GIN_TUNED_GC.map(|(k, v)| (k, v.to_owned())));
    let peer = |name, program, env, same_work| Peer {
        name,
        program,
        env,
        same_work,
    };
    let one_tokio_thread = || vec![("TOKIO_WORKER_THREADS", "1".to_owned())];
    Ok(vec![
        peer(
            "gantry-server",
            rust_out.join("gantry-server"),
            one_tokio_thread(),
            true,
        ),
        peer(TUNED, out.join("gintuned"), tuned_env, true),
        peer(PLAIN, out.join("ginfull"), one_go_thread(), true),
        peer("gin", out.join("gin"), one_go_thread(), false),
        peer("net/http", out.join("nethttp"), one_go_thread(), false),
        peer(
            "axum-hello",
            rust_out.join("examples/axum_hello"),
            one_tokio_thread(),
            false,
        ),
    ])
}

/// `go build` of a peer in bench/, with `-pgo` as given.
fn go_build(root: &Path, peer: &str, output: &Path, pgo: &str) -> Result<()> {
    proc::run(
        &format!("go build bench/{peer}"),
        Command::new("go")
            .current_dir(root.join("bench").join(peer))
            .env("CGO_ENABLED", "1")
            .arg("build")
            .arg(format!("-pgo={pgo}"))
            .arg("-o")
            .arg(output)
            .arg("."),
    )
}

/// Starts `peer`, measures both routes, stops it.
fn measure_peer(run: usize, peer: &Peer, settings: &Settings) -> Result<Vec<Sample>> {
    let started = start_peer(peer, &settings.out, settings.pinning, &[])?;
    let mut out = Vec::new();
    let mut cursor = LogCursor::default();
    for route in ROUTES {
        let path = route.replace("{id}", &started.user_id);
        let url = format!("http://{}{path}", started.server.addr);
        let script = settings.out.join("run/mix.lua");
        fs::write(&script, load::wrk_script(&path))?;
        let duration = settings.duration;
        eprintln!("{} {route}: saturation, {duration} s", peer.name);
        load::wrk(settings.pinning, &url, &script, 1)?;
        let pid = started.server.pid();
        let before = own_count(peer, &started, route, &mut cursor)?;
        let cpu = load::cpu_ticks(pid)?;
        let saturation = load::wrk(settings.pinning, &url, &script, duration)?;
        let saturation_cpu = load::cpu_ticks(pid)? - cpu;
        let after = own_count(peer, &started, route, &mut cursor)?;
        if peer.same_work {
            load::check_accounting(
                peer.name,
                route,
                saturation.requests,
                // wrk's requests in flight when the warm-up and the run ended.
                2 * u64::from(load::CONNECTIONS),
                before,
                after,
            )?;
        }
        let fixed = if peer.same_work {
            let targets = settings.out.join("run/targets.txt");
            fs::write(&targets, load::vegeta_targets(&url))?;
            let rate = settings.rate;
            eprintln!("{} {route}: {rate} requests/s, {duration} s", peer.name);
            let work = settings.out.join("run");
            load::vegeta(
                settings.pinning,
                &settings.vegeta,
                &targets,
                (rate, 1),
                &work,
                false,
            )?;
            let before = own_count(peer, &started, route, &mut cursor)?;
            let cpu = load::cpu_ticks(pid)?;
            let report = load::vegeta(
                settings.pinning,
                &settings.vegeta,
                &targets,
                (rate, duration),
                &work,
                true,
            )?;
            let cpu = load::cpu_ticks(pid)? - cpu;
            let after = own_count(peer, &started, route, &mut cursor)?;
            load::check_accounting(peer.name, route, report.requests, 0, before, after)?;
            Some((report, per_request_us(cpu, report.requests, settings)))
        } else {
            None
        };
        out.push(Sample {
            run,
            server: peer.name,
            route,
            saturation,
            saturation_cpu_us: per_request_us(saturation_cpu, saturation.requests, settings),
            fixed,
            peak_rss_mib: 0.0,
        });
    }
    let rss = load::peak_rss_mib(started.server.pid())?;
    for sample in &mut out {
        sample.peak_rss_mib = rss;
    }
    started.server.stop();
    Ok(out)
}

fn per_request_us(ticks: u64, requests: u64, settings: &Settings) -> f64 {
    count(ticks) * 1e6 / settings.clock_ticks / count(requests.max(1))
}

/// The server's own count of its work on `route`, when it does the same
/// work as gantry-server (the others keep no count).
fn own_count(
    peer: &Peer,
    started: &Started,
    route: &str,
    cursor: &mut LogCursor,
) -> Result<Counted> {
    if !peer.same_work {
        return Ok(Counted::default());
    }
    load::counted(started.server.addr, route, &started.log, cursor)
}

/// A started server, the user it serves and the file its output goes to.
struct Started {
    server: Running,
    user_id: String,
    log: PathBuf,
}

/// Starts `peer` in a fresh working directory, on core 0.
fn start_peer(
    peer: &Peer,
    out: &Path,
    pinning: Pinning,
    extra_env: &[(&str, String)],
) -> Result<Started> {
    let file_name: String = peer
        .name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    // Beside, not over, the peers' binaries in `out`.
    let work = out.join("run").join(&file_name);
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let port = proc::free_port()?;
    let log_path = out.join(format!("{file_name}.log"));
    let log = fs::File::create(&log_path)?;
    let mut cmd = pinning.command(0, &peer.program);
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
    for (name, value) in peer.env.iter().chain(extra_env) {
        cmd.env(name, value);
    }
    let probe = if peer.name.starts_with("gantry-server") {
        "/readyz"
    } else {
        "/"
    };
    let server = Running::start(peer.name, &mut cmd, port, probe)?;
    // gantry-server's user is made through its API, in a fresh database;
    // the Go peers with a database seed the same id, the others hold it in
    // memory.
    let user_id = if peer.name.starts_with("gantry-server") {
        create_user(server.addr)?
    } else {
        PEER_USER_ID.to_owned()
    };
    Ok(Started {
        server,
        user_id,
        log: log_path,
    })
}

/// Heap allocations per request of gantry-server on each route: the
/// `counting_allocations` build (the same server on an instrumented
/// allocator) under the same load, its `gantry_server_allocations_total`
/// read before and after, divided by the requests wrk completed.
fn allocations_per_request(
    program: &Path,
    settings: &Settings,
) -> Result<Vec<(&'static str, f64)>> {
    let peer = Peer {
        name: "gantry-server (counting allocations)",
        program: program.to_owned(),
        env: vec![("TOKIO_WORKER_THREADS", "1".to_owned())],
        same_work: true,
    };
    let started = start_peer(&peer, &settings.out, settings.pinning, &[])?;
    let addr = started.server.addr;
    let allocations = || -> Result<u64> {
        let (status, body) = crate::loopback::http(addr, "GET", "/metrics", &[], "")?;
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
        let path = route.replace("{id}", &started.user_id);
        let url = format!("http://{addr}{path}");
        let script = settings.out.join("run/mix.lua");
        fs::write(&script, load::wrk_script(&path))?;
        let seconds = settings.duration.min(5);
        eprintln!("{} {route}: allocations over {seconds} s", peer.name);
        load::wrk(settings.pinning, &url, &script, 1)?;
        let before = allocations()?;
        let report = load::wrk(settings.pinning, &url, &script, seconds)?;
        let after = allocations()?;
        out.push((
            route,
            count(after.saturating_sub(before)) / count(report.requests.max(1)),
        ));
    }
    started.server.stop();
    Ok(out)
}

/// A count as a float; counts here stay far below 2^52.
#[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
fn count(n: u64) -> f64 {
    n as f64
}
