//! The load of `bench server`: the mix of requests both generators send,
//! wrk at saturation and vegeta at a fixed rate, and what is read off the
//! server around a run (CPU time, peak memory, its own count of the work).

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::loopback::{TOKEN, http};
use crate::proc;

/// Connections wrk keeps open, the same for every server.
pub(super) const CONNECTIONS: u32 = 64;

/// Source addresses of the fixed-rate load: one vegeta process each, so the
/// rate limiter keeps a bucket per address.
pub(super) const SOURCES: [&str; 4] = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"];

/// Requests in one cycle of the mix; each generator sends them in order,
/// over and over.
const MIX_LEN: usize = 20;

/// The headers of the `i`th request of the mix, besides the bearer token:
/// a `traceparent` on a quarter (one of them with a `tracestate`), an
/// `x-request-id` on a fifth, and `Accept-Encoding: gzip` on a quarter.
/// `identity` says "no compression" where the generator would otherwise
/// ask for gzip by itself (Go's HTTP client, under vegeta, does).
pub(super) fn mix_headers(i: usize, explicit_identity: bool) -> Vec<(&'static str, String)> {
    let mut headers = vec![("Authorization", format!("Bearer {TOKEN}"))];
    if i.is_multiple_of(4) {
        headers.push((
            "traceparent",
            format!("00-4bf92f3577b34da6a3ce929d0e0e{i:04x}-00f067aa0ba902b7-01"),
        ));
        if i == 0 {
            headers.push(("tracestate", "vendor=bench".to_owned()));
        }
    }
    if i % 5 == 1 {
        headers.push(("x-request-id", format!("bench-{i:02}")));
    }
    if i % 4 == 2 {
        headers.push(("Accept-Encoding", "gzip".to_owned()));
    } else if explicit_identity {
        headers.push(("Accept-Encoding", "identity".to_owned()));
    }
    headers
}

/// The shares of the mix, for the published table.
pub(super) fn mix_shares() -> serde_json::Value {
    let share = |name: &str| {
        let n = (0..MIX_LEN)
            .filter(|i| mix_headers(*i, false).iter().any(|(h, _)| *h == name))
            .count();
        #[allow(clippy::cast_precision_loss, reason = "at most MIX_LEN")]
        let share = n as f64 / MIX_LEN as f64;
        share
    };
    serde_json::json!({
        "traceparent": share("traceparent"),
        "tracestate": share("tracestate"),
        "x-request-id": share("x-request-id"),
        "gzip": share("Accept-Encoding"),
    })
}

/// wrk's Lua script sending the mix to `path`.
pub(super) fn wrk_script(path: &str) -> String {
    let mut script = String::from("local mix = {\n");
    for i in 0..MIX_LEN {
        script.push_str("  {");
        for (name, value) in mix_headers(i, false) {
            let _ = write!(script, "[\"{name}\"] = \"{value}\", ");
        }
        script.push_str("},\n");
    }
    let _ = write!(
        script,
        "}}\nlocal requests = {{}}\nlocal n = 0\n\
         function init(args)\n  for k = 1, #mix do requests[k] = wrk.format(\"GET\", \"{path}\", mix[k]) end\nend\n\
         function request()\n  n = n % #requests + 1\n  return requests[n]\nend\n"
    );
    script
}

/// vegeta's targets for `url`, in its `http` format.
pub(super) fn vegeta_targets(url: &str) -> String {
    let mut targets = String::new();
    for i in 0..MIX_LEN {
        let _ = writeln!(targets, "GET {url}");
        for (name, value) in mix_headers(i, true) {
            let _ = writeln!(targets, "{name}: {value}");
        }
        targets.push('\n');
    }
    targets
}

/// Core pinning, when the machine has a core to spare for the load.
#[derive(Clone, Copy)]
pub(super) struct Pinning {
    pub(super) pinned: bool,
}

impl Pinning {
    pub(super) fn detect() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            pinned: cores >= 2 && crate::deps::on_path("taskset"),
        }
    }

    /// `program` as a command, on `core` when pinned.
    pub(super) fn command(self, core: u32, program: &Path) -> Command {
        if self.pinned {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", &core.to_string()]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }
}

/// What one load run says.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Report {
    pub(super) requests: u64,
    pub(super) requests_per_sec: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
}

/// wrk, one thread on core 1, sending the mix from `script`.
pub(super) fn wrk(pinning: Pinning, url: &str, script: &Path, seconds: u32) -> Result<Report> {
    let report = proc::output(
        "wrk",
        pinning
            .command(1, Path::new("wrk"))
            .arg("-t1")
            .arg(format!("-c{CONNECTIONS}"))
            .arg(format!("-d{seconds}s"))
            .arg("--latency")
            .arg("-s")
            .arg(script)
            .arg(url),
    )?;
    if let Some(line) = report.lines().find(|l| l.contains("Non-2xx")) {
        bail!("{url} answered errors under load: {}", line.trim());
    }
    parse_wrk(&report).with_context(|| format!("reading wrk's report:\n{report}"))
}

pub(super) fn parse_wrk(report: &str) -> Result<Report> {
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
        (Some(requests), Some(requests_per_sec), Some(p50_ms), Some(p99_ms)) => Ok(Report {
            requests,
            requests_per_sec,
            p50_ms,
            p99_ms,
        }),
        _ => bail!("no request count, Requests/sec or latency percentiles"),
    }
}

/// wrk's `123.45us`, `1.20ms`, `2.00s` as milliseconds.
pub(super) fn duration_ms(s: &str) -> Option<f64> {
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

/// The fixed-rate load: `rate` requests a second in all, split evenly over
/// one vegeta process per source address, all on core 1. vegeta is open
/// loop: each request leaves at its scheduled time whatever the answers
/// before it took (it opens more connections rather than wait), so a slow
/// answer shows in the latencies instead of slowing the load (no
/// coordinated omission). Fails when any answer was not a 200 or, when
/// `on_schedule`, the generators fell behind their schedule.
pub(super) fn vegeta(
    pinning: Pinning,
    program: &Path,
    targets: &Path,
    (rate, seconds): (u32, u32),
    work: &Path,
    on_schedule: bool,
) -> Result<Report> {
    let per_source = rate / u32::try_from(SOURCES.len())?;
    let mut children = Vec::new();
    let mut outputs: Vec<PathBuf> = Vec::new();
    for (k, source) in SOURCES.iter().enumerate() {
        let output = work.join(format!("vegeta-{k}.bin"));
        let child = pinning
            .command(1, program)
            .arg("attack")
            .arg(format!("-rate={per_source}/1s"))
            .arg(format!("-duration={seconds}s"))
            .arg(format!("-laddr={source}"))
            .arg("-targets")
            .arg(targets)
            .arg("-max-body=0")
            .arg("-http2=false")
            .arg("-timeout=10s")
            .arg("-output")
            .arg(&output)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting vegeta")?;
        children.push(child);
        outputs.push(output);
    }
    for mut child in children {
        let status = child.wait()?;
        if !status.success() {
            bail!("vegeta attack failed ({status})");
        }
    }
    let json = proc::output(
        "vegeta report",
        Command::new(program)
            .args(["report", "-type=json"])
            .args(&outputs),
    )?;
    let report = parse_vegeta(&json).with_context(|| format!("reading vegeta's report: {json}"))?;
    let expected = u64::from(per_source) * u64::from(seconds) * SOURCES.len() as u64;
    // The generators keep their schedule to within a few requests; far
    // fewer sent means the load generator, not the server, set the pace.
    if on_schedule && report.requests * 100 < expected * 98 {
        bail!(
            "vegeta sent {} of the {expected} requests scheduled: the load generator fell behind",
            report.requests
        );
    }
    Ok(report)
}

pub(super) fn parse_vegeta(json: &str) -> Result<Report> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    let requests = v["requests"].as_u64().context("no request count")?;
    let codes = v["status_codes"].as_object().context("no status codes")?;
    let ok = codes.get("200").and_then(serde_json::Value::as_u64);
    if codes.len() != 1 || ok != Some(requests) {
        bail!(
            "not every answer was a 200: {} (errors: {})",
            v["status_codes"],
            v["errors"]
        );
    }
    let ms = |key: &str| -> Result<f64> {
        let ns = v["latencies"][key]
            .as_f64()
            .with_context(|| format!("no {key} latency"))?;
        Ok(ns / 1e6)
    };
    Ok(Report {
        requests,
        requests_per_sec: v["throughput"].as_f64().unwrap_or_default(),
        p50_ms: ms("50th")?,
        p99_ms: ms("99th")?,
    })
}

/// User plus system time of every thread of `pid`, in clock ticks
/// (fields 14 and 15 of `/proc/<pid>/stat`).
pub(super) fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).with_context(|| format!("no CPU times in /proc/{pid}/stat"))
}

pub(super) fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces; fields after it do not.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The process's peak resident memory so far (`VmHWM`), in MiB.
pub(super) fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")?;
    Ok(kib / 1024.0)
}

/// What the server itself counted of its work on one route: responses in
/// `http_requests_total` (plus `http_requests_cancelled_total`) and access
/// lines in its log.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counted {
    pub(super) metric: u64,
    pub(super) lines: u64,
}

/// How far a server's log has been read, and the access lines counted so
/// far.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct LogCursor {
    offset: u64,
    lines: u64,
}

/// Reads the server's counters for `route`, and counts its new log lines
/// for `route` onto `cursor`.
pub(super) fn counted(
    addr: SocketAddr,
    route: &str,
    log: &Path,
    cursor: &mut LogCursor,
) -> Result<Counted> {
    let (status, body) = http(addr, "GET", "/metrics", &[], "")?;
    if status != 200 {
        bail!("GET /metrics: {status}");
    }
    let metric = route_total(&body, route);
    // Lines are written in batches 10 ms after the first of a batch.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (lines, end) = access_lines(log, route, cursor.offset)?;
    cursor.offset = end;
    cursor.lines += lines;
    Ok(Counted {
        metric,
        lines: cursor.lines,
    })
}

/// The sum of `http_requests_total` and `http_requests_cancelled_total` for
/// `route`, over every method and status.
pub(super) fn route_total(metrics: &str, route: &str) -> u64 {
    let label = format!("route=\"{route}\"");
    metrics
        .lines()
        .filter(|l| {
            (l.starts_with("http_requests_total{")
                || l.starts_with("http_requests_cancelled_total{"))
                && l.contains(&label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "counters are whole and far below 2^53"
            )]
            let n = v as u64;
            n
        })
        .sum()
}

/// Access lines (`request finished`, `failed` or `cancelled`) for `route`
/// in `log` from `offset`; the count and the offset where reading stopped.
pub(super) fn access_lines(log: &Path, route: &str, offset: u64) -> Result<(u64, u64)> {
    let mut file = fs::File::open(log).with_context(|| format!("opening {}", log.display()))?;
    file.seek(SeekFrom::Start(offset))?;
    let route_field = format!("\"route\":\"{route}\"");
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let mut count = 0;
    let mut end = offset;
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        end += n as u64;
        if line.contains(&route_field)
            && ["request finished", "request failed", "request cancelled"]
                .iter()
                .any(|m| line.contains(&format!("\"message\":\"{m}\"")))
        {
            count += 1;
        }
    }
    Ok((count, end))
}

/// Fails unless the server counted, in its metrics and its log, every
/// request the generator saw answered, and no more than those plus the ones
/// still in flight when the generator stopped (`in_flight`).
pub(super) fn check_accounting(
    server: &str,
    route: &str,
    answered: u64,
    in_flight: u64,
    before: Counted,
    after: Counted,
) -> Result<()> {
    for (what, n) in [
        (
            "http_requests_total",
            after.metric.saturating_sub(before.metric),
        ),
        ("access-log lines", after.lines.saturating_sub(before.lines)),
    ] {
        if n < answered || n > answered + in_flight {
            bail!(
                "{server} {route}: the load generator saw {answered} answers, the server's {what} grew by {n}: a server that drops work fails the run"
            );
        }
    }
    Ok(())
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
        assert!(parse_wrk("unable to connect").is_err());
    }

    #[test]
    fn vegeta_reports_are_read_and_errors_fail() {
        let ok = r#"{"latencies":{"50th":250000,"99th":1500000},"requests":1000,"throughput":999.5,"status_codes":{"200":1000},"errors":[]}"#;
        let r = parse_vegeta(ok).unwrap();
        assert_eq!(r.requests, 1000);
        assert!((r.p50_ms - 0.25).abs() < 1e-12 && (r.p99_ms - 1.5).abs() < 1e-12);
        let throttled = r#"{"latencies":{"50th":1,"99th":1},"requests":10,"throughput":1,"status_codes":{"200":9,"429":1},"errors":["429"]}"#;
        assert!(parse_vegeta(throttled).is_err());
    }

    #[test]
    fn cpu_times_are_read_past_a_name_with_spaces() {
        let stat = "4242 (gin full) S 1 4242 4242 0 -1 4194304 500 0 0 0 120 30 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(150));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn the_mix_has_its_stated_shares() {
        let shares = mix_shares();
        assert_eq!(shares["traceparent"], 0.25);
        assert_eq!(shares["tracestate"], 0.05);
        assert_eq!(shares["x-request-id"], 0.2);
        assert_eq!(shares["gzip"], 0.25);
        // vegeta's requests say identity where wrk's say nothing.
        assert!(
            vegeta_targets("http://127.0.0.1:1/")
                .lines()
                .any(|l| l == "Accept-Encoding: identity")
        );
        let script = wrk_script("/api/v1/users/x");
        assert!(script.contains("[\"x-request-id\"] = \"bench-01\""));
        assert!(!script.contains("identity"));
    }

    #[test]
    fn a_route_is_counted_in_metrics_and_lines() {
        let metrics = "http_requests_total{method=\"GET\",route=\"/\",status=\"200\"} 10\n\
            http_requests_total{method=\"GET\",route=\"/\",status=\"404\"} 2\n\
            http_requests_total{method=\"GET\",route=\"/metrics\",status=\"200\"} 5\n\
            http_requests_cancelled_total{method=\"GET\",route=\"/\"} 1\n";
        assert_eq!(route_total(metrics, "/"), 13);
        let dir = std::env::temp_dir().join(format!("gantry-bench-lines-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("server.log");
        fs::write(
            &log,
            "{\"message\":\"request finished\",\"spans\":[{\"route\":\"/\"}]}\n\
             {\"message\":\"request finished\",\"spans\":[{\"route\":\"/metrics\"}]}\n\
             {\"message\":\"listening\"}\n\
             {\"message\":\"request cancelled\",\"spans\":[{\"route\":\"/\"}]}\n\
             {\"message\":\"request finished\",\"spans\":[{\"route\":\"/\"",
        )
        .unwrap();
        let (n, end) = access_lines(&log, "/", 0).unwrap();
        assert_eq!(n, 2, "the unfinished last line waits for its newline");
        assert_eq!(access_lines(&log, "/", end).unwrap().0, 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dropped_work_fails_the_run() {
        let before = Counted {
            metric: 5,
            lines: 5,
        };
        let exact = Counted {
            metric: 105,
            lines: 110,
        };
        assert!(check_accounting("s", "/", 100, 64, before, exact).is_ok());
        let lost_lines = Counted {
            metric: 105,
            lines: 90,
        };
        assert!(check_accounting("s", "/", 100, 64, before, lost_lines).is_err());
        let too_many = Counted {
            metric: 500,
            lines: 105,
        };
        assert!(check_accounting("s", "/", 100, 64, before, too_many).is_err());
    }
}
