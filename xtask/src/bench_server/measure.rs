//! One server measured: both routes at saturation and, for the servers
//! doing gantry-server's work, at the fixed rate, with their own counts
//! checked; and gantry-server's allocations per request.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::load::{self, Counted, LogCursor, Pinning, Report};
use super::peers::{Peer, ROUTES, Started, start_peer};

/// One route of one server in one run.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sample {
    pub(super) run: usize,
    pub(super) server: &'static str,
    pub(super) route: &'static str,
    pub(super) saturation: Report,
    pub(super) saturation_cpu_us: f64,
    pub(super) fixed: Option<(Report, f64)>,
    pub(super) peak_rss_mib: f64,
}

/// What every measurement shares.
pub(super) struct Settings {
    pub(super) out: PathBuf,
    pub(super) duration: u32,
    pub(super) rate: u32,
    pub(super) pinning: Pinning,
    pub(super) clock_ticks: f64,
    pub(super) vegeta: PathBuf,
    /// gin-tuned built with its PGO profile.
    pub(super) pgo: bool,
}

/// Starts `peer`, measures both routes, stops it.
pub(super) fn measure_peer(run: usize, peer: &Peer, settings: &Settings) -> Result<Vec<Sample>> {
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

pub(super) fn per_request_us(ticks: u64, requests: u64, settings: &Settings) -> f64 {
    count(ticks) * 1e6 / settings.clock_ticks / count(requests.max(1))
}

/// The server's own count of its work on `route`, when it does the same
/// work as gantry-server (the others keep no count).
pub(super) fn own_count(
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

/// Heap allocations per request of gantry-server on each route: the
/// `counting_allocations` build (the same server on an instrumented
/// allocator) under the same load, its `gantry_server_allocations_total`
/// read before and after, divided by the requests wrk completed.
pub(super) fn allocations_per_request(
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
pub(super) fn count(n: u64) -> f64 {
    n as f64
}
