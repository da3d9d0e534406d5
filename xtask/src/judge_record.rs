//! `cargo xtask bench judge --record`: samples of real gantry-server runs
//! for the judge benchmark, written to `operator/examples/judge_recorded.json`
//! (committed; the benchmark reads it, and `cargo xtask test` never runs
//! this).
//!
//! One release build of gantry-server on loopback, with its SQLite
//! database and debug routes, serves a steady load from four client
//! threads: `/` and `/api/v1/users/{id}` half each, and one request in a
//! hundred to `/debug/panic` (a 500), so that the 5xx ratio has a baseline
//! to move from. Every second the recorder reads `/metrics` and keeps the
//! second's requests (all routes but `/metrics`), its mean latency, its
//! p95 latency (interpolated in the histogram's buckets as
//! `histogram_quantile` does) and its 5xx ratio: one sample of about as
//! many requests as a canary's interval in the benchmark's model.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::loopback::{Running, TOKEN, create_user, http};
use crate::{proc, workspace};

/// Seconds recorded, one sample each.
const SAMPLES: usize = 300;
/// Requests per second over all client threads.
const RATE: u32 = 120;
const THREADS: u32 = 4;

pub fn run() -> Result<ExitCode> {
    let root = workspace::root();
    proc::run(
        "cargo build --release -p gantry-server",
        workspace::cargo().args([
            "build",
            "--release",
            "-p",
            "gantry-server",
            "--bin",
            "gantry-server",
        ]),
    )?;
    let target = workspace::non_empty_env("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), std::path::PathBuf::from);
    let work = target.join("gantry").join("judge-record");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let port = proc::free_port()?;
    let log = std::fs::File::create(work.join("gantry-server.log"))?;
    let mut cmd = Command::new(target.join("release").join("gantry-server"));
    cmd.current_dir(&work)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATABASE_URL", "sqlite://record.db")
        .env("API_TOKENS", TOKEN)
        .env("RATE_LIMIT_PER_SECOND", "1000000000")
        .env("RATE_LIMIT_BURST", "1000000000")
        .env("DEBUG_ROUTES", "true")
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "warn")
        .env("SHUTDOWN_DELAY", "0s")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(log.try_clone()?)
        .stderr(log);
    let server = Running::start("gantry-server", &mut cmd, port, "/readyz")?;
    let id = create_user(server.addr)?;
    let addr = server.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..THREADS)
        .map(|thread| {
            let stop = Arc::clone(&stop);
            let user = format!("/api/v1/users/{id}");
            std::thread::spawn(move || drive(addr, thread, &user, &stop))
        })
        .collect();
    // A few seconds of load first: connections open, caches warm.
    std::thread::sleep(Duration::from_secs(3));
    let mut samples = Vec::with_capacity(SAMPLES);
    let mut before = scrape(addr)?;
    let started = Instant::now();
    for i in 1..=SAMPLES {
        let due = started + Duration::from_secs(u64::try_from(i).unwrap_or(u64::MAX));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let now = scrape(addr)?;
        samples.push(now.since(&before));
        before = now;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    drop(server);

    let document = json!({
        "intervalSeconds": 1,
        "requestsPerSecond": RATE,
        "paths": {"/": 0.495, "/api/v1/users/{id}": 0.495, "/debug/panic": 0.01},
        "machine": crate::machine::describe(),
        "samples": samples,
    });
    let out = root.join("operator/examples/judge_recorded.json");
    std::fs::write(&out, serde_json::to_string_pretty(&document)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("{} samples written to {}", SAMPLES, relative(&root, &out));
    Ok(ExitCode::SUCCESS)
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// One client thread: its share of the rate, paced, until `stop`.
fn drive(addr: std::net::SocketAddr, thread: u32, user: &str, stop: &AtomicBool) -> Result<()> {
    let gap = Duration::from_secs(1) / (RATE / THREADS);
    let mut next = Instant::now() + gap * thread / THREADS;
    let mut sent: u64 = u64::from(thread);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += gap;
        let path = match sent % 100 {
            0 => "/debug/panic",
            n if n % 2 == 0 => "/",
            _ => user,
        };
        let (status, _) = http(addr, "GET", path, &[], "")?;
        if status >= 500 && path != "/debug/panic" {
            bail!("{path} answered {status}");
        }
        sent += 1;
    }
    Ok(())
}

/// The counters of one scrape, over every route but `/metrics`.
#[derive(Default)]
struct Counters {
    requests: f64,
    errors: f64,
    seconds: f64,
    /// Cumulative count per bucket bound.
    buckets: BTreeMap<String, f64>,
}

impl Counters {
    /// The sample of the time between `earlier` and this scrape.
    fn since(&self, earlier: &Self) -> serde_json::Value {
        let requests = self.requests - earlier.requests;
        let errors = self.errors - earlier.errors;
        let seconds = self.seconds - earlier.seconds;
        let mut bounds: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .filter_map(|(le, count)| {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((
                    bound,
                    count - earlier.buckets.get(le).copied().unwrap_or(0.0),
                ))
            })
            .collect();
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let p95 = quantile(0.95, &bounds);
        json!({
            "requests": requests,
            "meanMs": (requests > 0.0).then(|| 1000.0 * seconds / requests),
            "p95Ms": p95.map(|p| 1000.0 * p),
            "errorRatio": (requests > 0.0).then(|| errors / requests),
        })
    }
}

/// `histogram_quantile(q, ...)` over cumulative `(bound, count)` pairs.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let share = (rank - lower.1) / (count - lower.1);
            return Some(lower.0 + (bound - lower.0) * share);
        }
        lower = (bound, count);
    }
    None
}

/// Reads the server's counters.
fn scrape(addr: std::net::SocketAddr) -> Result<Counters> {
    let (status, text) = http(addr, "GET", "/metrics", &[], "")?;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    let mut c = Counters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if series.contains(r#"route="/metrics""#) {
            continue;
        }
        let label = |name: &str| {
            let key = format!(r#"{name}=""#);
            let start = series.find(&key)? + key.len();
            let end = series[start..].find('"')? + start;
            Some(series[start..end].to_owned())
        };
        if series.starts_with("http_requests_total{") {
            c.requests += value;
            if label("status").is_some_and(|s| s.starts_with('5')) {
                c.errors += value;
            }
        } else if series.starts_with("http_request_duration_seconds_sum{") {
            c.seconds += value;
        } else if series.starts_with("http_request_duration_seconds_bucket{")
            && let Some(le) = label("le")
        {
            *c.buckets.entry(le).or_default() += value;
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_is_interpolated_in_its_bucket() {
        let buckets = [
            (0.001, 50.0),
            (0.002, 90.0),
            (0.004, 100.0),
            (f64::INFINITY, 100.0),
        ];
        // Rank 95 of 100: halfway through the (0.002, 0.004] bucket.
        let p95 = quantile(0.95, &buckets).unwrap();
        assert!((p95 - 0.003).abs() < 1e-12, "{p95}");
        assert_eq!(quantile(0.5, &[(0.001, 0.0), (f64::INFINITY, 0.0)]), None);
    }

    #[test]
    fn a_scrape_sums_every_route_but_metrics() {
        let earlier = Counters::default();
        let mut now = Counters {
            requests: 100.0,
            errors: 2.0,
            seconds: 0.1,
            ..Counters::default()
        };
        now.buckets.insert("0.001".to_owned(), 100.0);
        now.buckets.insert("+Inf".to_owned(), 100.0);
        let sample = now.since(&earlier);
        assert_eq!(sample["requests"], 100.0);
        assert_eq!(sample["meanMs"], 1.0);
        assert_eq!(sample["errorRatio"], 0.02);
    }
}
