//! The API suite against a real `PostgreSQL`, started by this test in a
//! temporary directory, listening on 127.0.0.1 and a socket directory of its
//! own, and stopped afterwards.
//!
//! `PostgreSQL` comes from Debian's `postgresql` package (its binaries live
//! in `/usr/lib/postgresql/<version>/bin`) or from PATH. Without it the test
//! fails and says what to install: it never passes by skipping.
//! `PostgreSQL` refuses to run as root, so as root the cluster belongs to and
//! runs as the `postgres` user.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, TestResult, api_suite, find_pg_bin, wait_listening};

struct Postgres {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's "fast shutdown": roll back, close, exit.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `program` as the `postgres` user when this process is root.
fn as_cluster_owner(program: &Path, root: bool) -> Command {
    if root {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn free_port() -> TestResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_postgres() -> TestResult<Postgres> {
    let missing = "PostgreSQL server binaries (initdb, postgres) not found in PATH or \
                   /usr/lib/postgresql/*/bin: install Debian's `postgresql` package \
                   (apt-get install postgresql)";
    let initdb: PathBuf = find_pg_bin("initdb").ok_or(missing)?;
    let postgres: PathBuf = find_pg_bin("postgres").ok_or(missing)?;
    let root = nix::unistd::geteuid().is_root();

    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let sockets = dir.path().join("sockets");
    std::fs::create_dir(&sockets)?;
    if root {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()?;
        if !status.success() {
            return Err("cannot give the cluster directory to the `postgres` user; \
                        as root the test needs that user (Debian's postgresql package creates it)"
                .into());
        }
    }
    let out = as_cluster_owner(&initdb, root)
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "gantry",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let port = free_port()?;
    let child = as_cluster_owner(&postgres, root)
        .arg("-D")
        .arg(&data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(&sockets)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut pg = Postgres {
        child,
        port,
        _dir: dir,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(&mut pg.child, addr, Duration::from_mins(1), "postgres")?;
    Ok(pg)
}

#[tokio::test]
async fn the_api_suite_passes_on_postgres() -> TestResult {
    let pg = start_postgres()?;
    let url = format!("postgres://gantry@127.0.0.1:{}/postgres", pg.port);
    let mut server = Server::start(&[("DATABASE_URL", &url)])?;
    server.ready().await?;
    let started = server.wait_for_log(|v| v["message"] == "listening")?;
    assert_eq!(started["database"], "postgres");
    api_suite(&server.base).await?;

    // Data outlives the process, and migrations run again without harm.
    server.terminate()?;
    assert_eq!(server.wait()?.code(), Some(0));
    drop(server);
    let server = Server::start(&[("DATABASE_URL", &url)])?;
    server.ready().await?;
    let page: serde_json::Value = reqwest::Client::new()
        .get(server.url("/api/v1/users?limit=1"))
        .bearer_auth(common::TOKEN)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(page["total"], 26, "{page}");
    Ok(())
}

#[tokio::test]
async fn concurrent_writes_are_correct_on_postgres() -> TestResult {
    let pg = start_postgres()?;
    let url = format!("postgres://gantry@127.0.0.1:{}/postgres", pg.port);
    let server = Server::start(&[("DATABASE_URL", &url), ("RATE_LIMIT_BURST", "1000")])?;
    server.ready().await?;
    common::concurrent_writes(&server.base).await
}
