//! gantry-server as real processes standing in for a revision's pods, and
//! the traffic that gives their metrics something to say.
//!
//! Pods in the test cluster run no containers, so the series Prometheus
//! judges a revision by come from [`ServerProcess`]es on loopback, labelled
//! with that revision when they are handed to
//! [`crate::prometheus::Prometheus::set_targets`]. `DEBUG_ROUTES` is on, so
//! traffic to `/debug/panic` makes a "bad revision" answer 500 through the
//! server's panic guard, counted in `http_requests_total{status="500"}` like
//! any handler bug.
//!
//! Traffic is bounded in rate, count and duration ([`Traffic::MAX_RATE`],
//! [`Traffic::MAX_DURATION`]) and only ever sent to loopback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tempfile::TempDir;
use tokio::task::JoinHandle;

use crate::operator::{build_binary, wait_http_ok};
use crate::prometheus::free_loopback_port;

/// How long a server may take to answer `/readyz` 200: it migrates its
/// `SQLite` database first, and the machine may be busy compiling.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one request of the traffic may take before it counts as an
/// error instead of holding the driver up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds gantry-server once per test process and returns its path.
pub fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| build_binary("gantry-server"))
}

/// A running gantry-server on loopback, with its own `SQLite` database in a
/// temporary directory. Killed on drop.
pub struct ServerProcess {
    child: Child,
    address: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    /// The working directory, holding the database; removed after the kill.
    _dir: TempDir,
}

impl ServerProcess {
    /// Starts a server and waits until `/readyz` answers 200. `label`
    /// prefixes its log lines in the test output. `env` is applied over the
    /// defaults: `HOST=127.0.0.1`, a free `PORT`, an `SQLite` database in the
    /// temporary directory, `DEBUG_ROUTES=true`, `LOG_LEVEL=warn` (the
    /// access log of steady traffic would drown everything else) and
    /// `SHUTDOWN_DELAY=0s`. Nothing else is inherited from the test's
    /// environment, so an exporter endpoint set there is not dialled.
    pub fn start(label: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gantry-server-")
            .tempdir()
            .expect("a temporary directory for gantry-server");
        // The server logs the address it bound only at `info`; a port picked
        // here keeps the log at `warn` and the address known up front.
        let port = free_loopback_port().port().to_string();
        let database = format!("sqlite://{}", dir.path().join("gantry.db").display());
        let mut settings: BTreeMap<&str, &str> = BTreeMap::from([
            ("HOST", "127.0.0.1"),
            ("PORT", port.as_str()),
            ("DATABASE_URL", database.as_str()),
            ("DEBUG_ROUTES", "true"),
            ("LOG_LEVEL", "warn"),
            ("SHUTDOWN_DELAY", "0s"),
        ]);
        settings.extend(env.iter().copied());
        let address: SocketAddr = format!("{}:{}", settings["HOST"], settings["PORT"])
            .parse()
            .expect("HOST and PORT form a socket address");
        assert!(
            address.ip().is_loopback(),
            "the tests only run servers on loopback, not {address}"
        );
        let binary = server_binary();
        let mut child = Command::new(binary)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(settings)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let lines = crate::capture_output(&mut child, &format!("[server {label}]"));
        wait_http_ok(address, "/readyz", READY_TIMEOUT, || {
            child.try_wait().ok().flatten().map(|s| s.to_string())
        });
        Self {
            child,
            address,
            lines,
            _dir: dir,
        }
    }

    /// The loopback address it serves on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its log lines so far (stdout and stderr), as written.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("log lock").clone()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many answers of each status code a driver got.
pub type StatusCounts = BTreeMap<u16, u64>;

/// Sends `requests` GETs of `path` to a loopback `address`, one after the
/// other; how many answers of each status came back. At most
/// [`Traffic::MAX_REQUESTS`] requests; a request that gets no answer is an
/// error.
pub async fn drive(address: SocketAddr, path: &str, requests: usize) -> Result<StatusCounts> {
    let requests = u64::try_from(requests)?;
    ensure!(
        requests <= Traffic::MAX_REQUESTS,
        "at most {} requests, not {requests}",
        Traffic::MAX_REQUESTS
    );
    let client = crate::loopback_client();
    let url = loopback_url(address, path);
    let mut counts = StatusCounts::new();
    for _ in 0..requests {
        let status = get(&client, &url)
            .await
            .with_context(|| format!("GET {url}"))?;
        *counts.entry(status).or_default() += 1;
    }
    Ok(counts)
}

/// Steady background traffic to one server, at a bounded rate, until
/// dropped or until it reaches its cap of count or duration. Needs a tokio
/// runtime (a `#[tokio::test]`).
///
/// Paths are sent in a fixed weighted rotation rather than at random, so a
/// ratio of errors to requests is the same in every run.
pub struct Traffic {
    task: JoinHandle<()>,
    stats: Arc<TrafficStats>,
}

#[derive(Default)]
struct TrafficStats {
    statuses: Mutex<StatusCounts>,
    errors: AtomicU64,
}

impl Traffic {
    /// The highest rate a test may ask for, in requests per second.
    pub const MAX_RATE: u32 = 20;
    /// How long traffic may run before it stops by itself.
    pub const MAX_DURATION: Duration = Duration::from_secs(15 * 60);
    /// The most requests one driver sends: the highest rate for the longest
    /// time.
    pub const MAX_REQUESTS: u64 = Self::MAX_RATE as u64 * 15 * 60;

    /// Starts sending GETs to a loopback `address` at `requests_per_second`
    /// (1 to [`Traffic::MAX_RATE`]), spread over `paths_with_weights`: with
    /// `[("/", 3), ("/debug/panic", 1)]` one request in four panics.
    pub fn start(
        address: SocketAddr,
        paths_with_weights: &[(&str, u32)],
        requests_per_second: u32,
    ) -> Self {
        assert!(
            (1..=Self::MAX_RATE).contains(&requests_per_second),
            "traffic is bounded to 1..={} requests per second, not {requests_per_second}",
            Self::MAX_RATE
        );
        let rotation: Vec<String> = paths_with_weights
            .iter()
            .flat_map(|(path, weight)| {
                std::iter::repeat_n(loopback_url(address, path), *weight as usize)
            })
            .collect();
        assert!(
            !rotation.is_empty(),
            "traffic needs at least one path with a weight above 0"
        );
        let stats = Arc::new(TrafficStats::default());
        let shared = Arc::clone(&stats);
        let task = tokio::spawn(async move {
            let client = crate::loopback_client();
            let started = Instant::now();
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / requests_per_second);
            // A slow answer delays the next request rather than causing a
            // burst to catch up: the rate is a ceiling.
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for (sent, url) in rotation.iter().cycle().enumerate() {
                if sent as u64 >= Self::MAX_REQUESTS || started.elapsed() >= Self::MAX_DURATION {
                    println!("[traffic] stopped by its cap after {sent} requests");
                    break;
                }
                ticks.tick().await;
                match get(&client, url).await {
                    Ok(code) => {
                        *shared
                            .statuses
                            .lock()
                            .expect("stats lock")
                            .entry(code)
                            .or_default() += 1;
                    }
                    Err(_) => {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Self { task, stats }
    }

    /// How many answers of each status came back so far.
    pub fn statuses(&self) -> StatusCounts {
        self.stats.statuses.lock().expect("stats lock").clone()
    }

    /// How many requests got no answer (refused, timed out) so far.
    pub fn errors(&self) -> u64 {
        self.stats.errors.load(Ordering::Relaxed)
    }

    /// How many requests were sent so far, answered or not.
    pub fn sent(&self) -> u64 {
        self.statuses().values().sum::<u64>() + self.errors()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn loopback_url(address: SocketAddr, path: &str) -> String {
    assert!(
        address.ip().is_loopback(),
        "the tests only send traffic to loopback, not {address}"
    );
    assert!(path.starts_with('/'), "a path starts with /: {path}");
    format!("http://{address}{path}")
}

/// One GET; its status. The body is read, so the connection can be reused.
async fn get(client: &reqwest::Client, url: &str) -> Result<u16> {
    let response = client.get(url).timeout(REQUEST_TIMEOUT).send().await?;
    let status = response.status().as_u16();
    response.bytes().await?;
    Ok(status)
}

/// The stand-ins of a `GoServer`'s revisions: one gantry-server per
/// revision, all scraped by one Prometheus with the labels a scrape config
/// keeping the pod labels gives (`namespace`, `revision`, and `track` for a
/// canary's baseline).
pub struct Revisions<'a> {
    prometheus: &'a crate::prometheus::Prometheus,
    namespace: String,
    /// Each server with its revision and track.
    servers: Vec<(String, Option<String>, ServerProcess)>,
}

impl<'a> Revisions<'a> {
    pub fn new(prometheus: &'a crate::prometheus::Prometheus, namespace: &str) -> Self {
        Self {
            prometheus,
            namespace: namespace.to_owned(),
            servers: Vec::new(),
        }
    }

    /// Restarts the server of `revision` on the same address: its
    /// counters start again from 0, as a pod's do after a restart.
    pub fn restart(&mut self, revision: &str) {
        let at = self
            .servers
            .iter()
            .position(|(rev, track, _)| rev == revision && track.is_none())
            .unwrap_or_else(|| panic!("no server for {revision}"));
        let (rev, track, old) = self.servers.remove(at);
        let port = old.address().port().to_string();
        drop(old);
        let server = ServerProcess::start(&rev, &[("PORT", port.as_str())]);
        self.servers.insert(at, (rev, track, server));
    }

    /// Starts the pods of `revision` and has Prometheus scrape them; their
    /// address.
    pub fn start(&mut self, revision: &str) -> SocketAddr {
        self.start_on_track(revision, None)
    }

    /// [`Revisions::start`], for pods of `track` (a canary's baseline:
    /// `baseline`), which Prometheus labels so.
    pub fn start_on_track(&mut self, revision: &str, track: Option<&str>) -> SocketAddr {
        let label = match track {
            Some(track) => format!("{revision}-{track}"),
            None => revision.to_owned(),
        };
        let server = ServerProcess::start(&label, &[]);
        let address = server.address();
        self.servers
            .push((revision.to_owned(), track.map(str::to_owned), server));
        let targets: Vec<crate::prometheus::Target> = self
            .servers
            .iter()
            .map(|(rev, track, s)| {
                let mut labels = vec![("namespace", self.namespace.as_str()), ("revision", rev)];
                if let Some(track) = track {
                    labels.push(("track", track));
                }
                crate::prometheus::Target::new(s.address(), &labels)
            })
            .collect();
        self.prometheus.set_targets(&targets);
        address
    }
}
