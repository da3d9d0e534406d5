//! The servers of `bench server`: built, started in a fresh directory on
//! core 0, and the constants every part shares.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use super::load::Pinning;
use crate::loopback::{Running, TOKEN, create_user};
use crate::{proc, workspace};

pub(super) const PEER_USER_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";
pub(super) const ROUTES: [&str; 2] = ["/", "/api/v1/users/{id}"];
/// The peer the goals are set against, and the one kept from before.
pub(super) const TUNED: &str = "gin-tuned";
pub(super) const PLAIN: &str = "gin-full";
/// gin-tuned's garbage collector: collect when the heap has grown to five
/// times what survived the last collection (its live heap is a few MiB),
/// and harder as it nears 256 MiB.
pub(super) const GIN_TUNED_GC: [(&str, &str); 2] = [("GOGC", "400"), ("GOMEMLIMIT", "256MiB")];

/// A server to measure.
pub(super) struct Peer {
    pub(super) name: &'static str,
    pub(super) program: PathBuf,
    pub(super) env: Vec<(&'static str, String)>,
    /// Does gantry-server's work (logs, metrics, the database): measured at
    /// the fixed rate too, and its own counts checked.
    pub(super) same_work: bool,
}

/// vegeta, built from its module (`bench/loadgen`).
pub(super) fn build_vegeta(root: &Path, out: &Path) -> Result<PathBuf> {
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
pub(super) fn build(root: &Path, out: &Path, quick: bool) -> Result<Vec<Peer>> {
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
pub(super) fn go_build(root: &Path, peer: &str, output: &Path, pgo: &str) -> Result<()> {
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

/// A started server, the user it serves and the file its output goes to.
pub(super) struct Started {
    pub(super) server: Running,
    pub(super) user_id: String,
    pub(super) log: PathBuf,
}

/// Starts `peer` in a fresh working directory, on core 0.
pub(super) fn start_peer(
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
