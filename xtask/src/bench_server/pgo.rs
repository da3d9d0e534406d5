//! `cargo xtask bench server --pgo`: gin-tuned's profile for Go's
//! profile-guided optimisation, taken under this benchmark's own load, and
//! where its time goes.
//!
//! gin-tuned is built without PGO, run on core 0 with `CPU_PROFILE` set
//! (its CPU profile, written when it stops), and loaded on each route with
//! the benchmark's saturation load for 15 s. The profile becomes
//! `bench/gintuned/default.pgo`, which `go build` then uses by itself; the
//! per-stage table printed from it is the one in docs/server.md.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::load::{self, Pinning};
use super::peers::{GIN_TUNED_GC, Peer, ROUTES, go_build, start_peer};
use crate::proc;

/// Seconds of load per route while profiling.
const SECONDS: u32 = 15;

/// The stages of a request in gin-tuned, each the sum of the inclusive
/// shares of the functions named (which do not call one another).
const STAGES: &[(&str, &[&str])] = &[
    (
        "reading and parsing the request (net/http)",
        &["net/http.(*conn).readRequest"],
    ),
    (
        "writing the response (net/http, including the write system call)",
        &["net/http.(*response).finishRequest"],
    ),
    (
        "gin: routing and the handler chain",
        &["github.com/gin-gonic/gin.(*Engine).handleHTTPRequest"],
    ),
    (
        "gzip (klauspost/compress gzhttp, a quarter of requests)",
        &["github.com/klauspost/compress/gzhttp.(*GzipResponseWriter).Close"],
    ),
    (
        "OpenTelemetry: traceparent read, span started and ended",
        &[
            "go.opentelemetry.io/otel/propagation.TraceContext.Extract",
            "go.opentelemetry.io/otel/sdk/trace.(*tracer).Start",
            "go.opentelemetry.io/otel/sdk/trace.(*recordingSpan).End",
        ],
    ),
    (
        "the access line (formatting and hand-off)",
        &["main.(*edge).accessLine"],
    ),
    ("the log goroutine's writes", &["main.(*logOutput).flush"]),
    (
        "metrics (histogram, counter, in-flight gauge)",
        &[
            "github.com/prometheus/client_golang/prometheus.(*histogram).Observe",
            "github.com/prometheus/client_golang/prometheus.(*counter).Inc",
            "github.com/prometheus/client_golang/prometheus.(*gauge).Inc",
            "github.com/prometheus/client_golang/prometheus.(*gauge).Dec",
        ],
    ),
    (
        "deadline (context.WithTimeout and its timer)",
        &["context.WithDeadlineCause"],
    ),
    ("rate limiter", &["main.(*clientLimiter).take"]),
    (
        "SQLite: the query, the row and its release",
        &[
            "database/sql.(*Stmt).Query",
            "database/sql.(*Rows).Next",
            "database/sql.(*Rows).Scan",
            "database/sql.(*Rows).Close",
        ],
    ),
    ("allocation (mallocgc)", &["runtime.mallocgc"]),
    (
        "garbage collection (background marking)",
        &["runtime.gcBgMarkWorker"],
    ),
    ("scheduler and network poller", &["runtime.findRunnable"]),
];

pub(super) fn profile(root: &Path, out: &Path, pinning: Pinning) -> Result<()> {
    let program = out.join("gintuned-nopgo");
    go_build(root, "gintuned", &program, "off")?;
    let profile = out.join("gintuned.pprof");
    let _ = fs::remove_file(&profile);
    let mut env = vec![
        ("GOMAXPROCS", "1".to_owned()),
        ("GIN_MODE", "release".to_owned()),
    ];
    env.extend(GIN_TUNED_GC.map(|(k, v)| (k, v.to_owned())));
    let peer = Peer {
        name: "gin-tuned (profiling)",
        program: program.clone(),
        env,
        same_work: true,
    };
    let started = start_peer(
        &peer,
        out,
        pinning,
        &[("CPU_PROFILE", profile.display().to_string())],
    )?;
    for route in ROUTES {
        let path = route.replace("{id}", &started.user_id);
        let url = format!("http://{}{path}", started.server.addr);
        let script = out.join("run/mix.lua");
        fs::write(&script, load::wrk_script(&path))?;
        eprintln!("gin-tuned {route}: {SECONDS} s under the profiler");
        load::wrk(pinning, &url, &script, SECONDS)?;
    }
    started.server.stop();
    let target = root.join("bench/gintuned/default.pgo");
    fs::copy(&profile, &target).with_context(|| {
        format!(
            "copying {} (written by gin-tuned when it stops)",
            profile.display()
        )
    })?;
    eprintln!("wrote {}", target.display());

    let top = proc::output(
        "go tool pprof",
        Command::new("go")
            .args([
                "tool",
                "pprof",
                "-top",
                "-cum",
                "-nodecount=100000",
                "-nodefraction=0",
                "-edgefraction=0",
            ])
            .arg(&program)
            .arg(&profile),
    )?;
    println!(
        "\nWhere gin-tuned's CPU goes, both routes together (inclusive shares, so nested items overlap):\n"
    );
    println!("| stage | share |\n|---|---:|");
    for (stage, share) in stages(&top) {
        println!("| {stage} | {share:.1} % |");
    }
    Ok(())
}

/// Each stage's share from `go tool pprof -top -cum` output.
fn stages(top: &str) -> Vec<(&'static str, f64)> {
    let cum: Vec<(String, f64)> = top
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // flat flat% sum% cum cum% name...
            let percent = fields.get(4)?.strip_suffix('%')?.parse().ok()?;
            let name = fields.get(5..)?.join(" ");
            Some((name.trim_end_matches(" (inline)").to_owned(), percent))
        })
        .collect();
    STAGES
        .iter()
        .map(|(stage, functions)| {
            let share = functions
                .iter()
                .map(|f| {
                    cum.iter()
                        .filter(|(name, _)| name == f)
                        .map(|(_, p)| *p)
                        .fold(0.0, f64::max)
                })
                .sum();
            (*stage, share)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_sum_their_functions() {
        let top = "Showing nodes accounting for 10s, 100% of 10s total\n      \
            flat  flat%   sum%        cum   cum%\n     \
            0.1s  1.00%  1.00%      2.5s 25.00%  go.opentelemetry.io/otel/sdk/trace.(*tracer).Start\n     \
            0.1s  1.00%  2.00%      0.5s  5.00%  go.opentelemetry.io/otel/propagation.TraceContext.Extract (inline)\n     \
            0.1s  1.00%  3.00%      1.0s 10.00%  runtime.mallocgc\n";
        let got = stages(top);
        let share = |name: &str| got.iter().find(|(s, _)| s.starts_with(name)).unwrap().1;
        assert!((share("OpenTelemetry") - 30.0).abs() < 1e-9);
        assert!((share("allocation") - 10.0).abs() < 1e-9);
        assert!(share("rate limiter").abs() < 1e-9);
    }
}
