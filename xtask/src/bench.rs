//! `cargo xtask bench server|operator`: side-by-side benchmarks.
//!
//! `bench server` builds four servers with the same two routes (`GET /` and
//! `GET /api/v1/users/{id}`) and loads each in turn, on loopback, with one
//! load generator (wrk) and the same connection count:
//!
//! - gantry-server, release build, every middleware on, logging JSON to a file,
//!   the user read from its `SQLite` database through auth and the rate limiter
//!   (set high enough never to refuse);
//! - a bare axum server (`server/examples/axum_hello.rs`), no middleware;
//! - a Go net/http server (`bench/nethttp`);
//! - a Gin server with `gin.Default()` (`bench/gin`), logging to a file.
//!
//! The peers serve the user from memory. Every figure is also given as a
//! ratio to Gin's requests per second. Runs are bounded: one warm-up second
//! and a fixed duration per server and route.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::deps::{self, Package};
use crate::{proc, workspace};

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
    json: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    match args.target.as_str() {
        "server" => server(args),
        other => bail!("`cargo xtask bench {other}` is not available yet"),
    }
}

/// Connections wrk keeps open, the same for every server.
const CONNECTIONS: u32 = 64;
/// wrk threads; the machine's other cores serve.
const THREADS: u32 = 2;
const TOKEN: &str = "bench-token";
const PEER_USER_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";

struct Measurement {
    server: &'static str,
    route: &'static str,
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
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
    let duration = if args.quick { 3 } else { 10 };

    eprintln!("building the servers (release)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    proc::run(
        "cargo build --release",
        Command::new(&cargo).current_dir(&root).args([
            "build",
            "--release",
            "-p",
            "gantry-server",
            "--bin",
            "gantry-server",
            "--example",
            "axum_hello",
        ]),
    )?;
    for peer in ["nethttp", "gin"] {
        proc::run(
            &format!("go build bench/{peer}"),
            Command::new("go")
                .current_dir(root.join("bench").join(peer))
                .args(["build", "-o"])
                .arg(out.join(peer))
                .arg("."),
        )?;
    }
    let release = root.join("target/release");

    let mut results = Vec::new();
    // gantry-server first: its user lives in a fresh database.
    results.extend(measure_gantry(&release, &out, duration)?);
    for (name, program) in [
        ("axum-hello", release.join("examples/axum_hello")),
        ("net/http", out.join("nethttp")),
        ("gin", out.join("gin")),
    ] {
        let port = proc::free_port()?;
        let log = fs::File::create(out.join(format!("{}.log", name.replace('/', ""))))?;
        let mut cmd = Command::new(program);
        cmd.env("ADDR", format!("127.0.0.1:{port}"))
            .env("GIN_MODE", "release")
            .stdout(log.try_clone()?)
            .stderr(log);
        let server = Running::start(name, &mut cmd, port, "/")?;
        results.extend(measure(&server, name, PEER_USER_ID, duration)?);
        server.stop();
    }

    let date = proc::output("date", Command::new("date").args(["-u", "+%Y-%m-%d"]))?
        .trim()
        .to_owned();
    let machine = machine();
    print_table(&results, &date, &machine, duration);
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "date": date,
            "machine": machine,
            "tool": "wrk",
            "connections": CONNECTIONS,
            "threads": THREADS,
            "durationSeconds": duration,
            "results": results.iter().map(|m| serde_json::json!({
                "server": m.server,
                "route": m.route,
                "requestsPerSec": m.requests_per_sec,
                "p50Ms": m.p50_ms,
                "p99Ms": m.p99_ms,
                "ratioToGin": ratio_to_gin(&results, m),
            })).collect::<Vec<_>>(),
        });
        fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// gantry-server with every middleware, logging to a file, its user in `SQLite`.
fn measure_gantry(release: &Path, out: &Path, duration: u32) -> Result<Vec<Measurement>> {
    let work = out.join("gantry-server");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let port = proc::free_port()?;
    let log = fs::File::create(out.join("gantry-server.log"))?;
    let mut cmd = Command::new(release.join("gantry-server"));
    cmd.current_dir(&work)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATABASE_URL", "sqlite://bench.db")
        .env("API_TOKENS", TOKEN)
        .env("RATE_LIMIT_PER_SECOND", "1000000000")
        .env("RATE_LIMIT_BURST", "1000000000")
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "info")
        .env("SHUTDOWN_DELAY", "0s")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(log.try_clone()?)
        .stderr(log);
    let server = Running::start("gantry-server", &mut cmd, port, "/readyz")?;
    let id = create_user(server.addr)?;
    let results = measure(&server, "gantry-server", &id, duration)?;
    server.stop();
    Ok(results)
}

/// A server under test; stopped (SIGTERM, then SIGKILL) when dropped.
struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Running {
    fn start(name: &str, cmd: &mut Command, port: u16, probe: &str) -> Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let mut running = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http(running.addr, "GET", probe, &[], "") {
                return Ok(running);
            }
            if let Some(status) = running.child.try_wait()? {
                bail!("{name} exited with {status} before answering {probe}");
            }
            if Instant::now() > deadline {
                bail!("{name} did not answer {probe} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(self) {
        drop(self);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = i32::try_from(self.child.id()).unwrap_or(i32::MAX);
        let _ = proc::terminate(&[pid], Duration::from_secs(10));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 exchange over a fresh connection: status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Creates the user the benchmark reads from gantry-server; returns its id.
fn create_user(addr: SocketAddr) -> Result<String> {
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = http(
        addr,
        "POST",
        "/api/v1/users",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        r#"{"name":"Ada Lovelace","email":"ada@example.com"}"#,
    )?;
    if status != 201 {
        bail!("creating the benchmark user: {status} {body}");
    }
    let user: serde_json::Value = serde_json::from_str(&body).context("parsing the new user")?;
    user["id"]
        .as_str()
        .map(str::to_owned)
        .context("the new user has no id")
}

/// Loads both routes of one server.
fn measure(
    server: &Running,
    name: &'static str,
    user_id: &str,
    duration: u32,
) -> Result<Vec<Measurement>> {
    let routes: [(&'static str, String); 2] = [
        ("/", "/".to_owned()),
        ("/api/v1/users/{id}", format!("/api/v1/users/{user_id}")),
    ];
    let mut out = Vec::new();
    for (route, path) in routes {
        let url = format!("http://{}{path}", server.addr);
        eprintln!("{name} {route}: warm-up, then {duration} s with {CONNECTIONS} connections");
        wrk(&url, 1)?;
        let report = wrk(&url, duration)?;
        let parsed =
            parse_wrk(&report).with_context(|| format!("reading wrk's report:\n{report}"))?;
        if let Some(line) = report.lines().find(|l| l.contains("Non-2xx")) {
            bail!("{name} {route} answered errors under load: {}", line.trim());
        }
        out.push(Measurement {
            server: name,
            route,
            requests_per_sec: parsed.0,
            p50_ms: parsed.1,
            p99_ms: parsed.2,
        });
    }
    Ok(out)
}

fn wrk(url: &str, seconds: u32) -> Result<String> {
    proc::output(
        "wrk",
        Command::new("wrk")
            .arg(format!("-t{THREADS}"))
            .arg(format!("-c{CONNECTIONS}"))
            .arg(format!("-d{seconds}s"))
            .arg("--latency")
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .arg(url),
    )
}

/// Requests per second, p50 and p99 in milliseconds.
fn parse_wrk(report: &str) -> Result<(f64, f64, f64)> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    for line in report.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => rps = v.parse().ok(),
            (Some("50%"), Some(v)) => p50 = duration_ms(v),
            (Some("99%"), Some(v)) => p99 = duration_ms(v),
            _ => {}
        }
    }
    match (rps, p50, p99) {
        (Some(r), Some(a), Some(b)) => Ok((r, a, b)),
        _ => bail!("no Requests/sec or latency percentiles"),
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

fn ratio_to_gin(results: &[Measurement], m: &Measurement) -> Option<f64> {
    results
        .iter()
        .find(|g| g.server == "gin" && g.route == m.route)
        .filter(|g| g.requests_per_sec > 0.0)
        .map(|g| m.requests_per_sec / g.requests_per_sec)
}

/// CPU model, core count and kernel, for the published table.
fn machine() -> serde_json::Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    serde_json::json!({ "cpu": cpu, "cores": cores, "kernel": kernel })
}

fn print_table(results: &[Measurement], date: &str, machine: &serde_json::Value, duration: u32) {
    println!(
        "\n{date}, {} ({} cores), Linux {}; wrk -t{THREADS} -c{CONNECTIONS} -d{duration}s on loopback\n",
        machine["cpu"].as_str().unwrap_or_default(),
        machine["cores"],
        machine["kernel"].as_str().unwrap_or_default(),
    );
    println!("| server | route | requests/s | p50 | p99 | vs Gin |");
    println!("|---|---|---:|---:|---:|---:|");
    for m in results {
        let ratio = ratio_to_gin(results, m).map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
        println!(
            "| {} | `{}` | {:.0} | {:.2} ms | {:.2} ms | {ratio} |",
            m.server, m.route, m.requests_per_sec, m.p50_ms, m.p99_ms
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
        let (rps, p50, p99) = parse_wrk(report).unwrap();
        assert!((rps - 33_333.33).abs() < 1e-6);
        assert!((p50 - 0.512).abs() < 1e-9);
        assert!((p99 - 3.5).abs() < 1e-9);
        assert_eq!(duration_ms("2.00s"), Some(2000.0));
        assert_eq!(duration_ms("fast"), None);
    }

    #[test]
    fn reports_without_figures_are_errors() {
        assert!(parse_wrk("unable to connect").is_err());
    }
}
