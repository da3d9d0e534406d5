//! Faults between the operator and the apiserver.
//!
//! [`ApiProxy`] is a loopback TCP proxy in front of the test cluster's
//! apiserver; the operator is pointed at it by a kubeconfig that names the
//! proxy ([`ApiProxy::kubeconfig`]). TLS passes through untouched: the
//! apiserver's certificate names 127.0.0.1, which the proxy also is.
//! [`ApiProxy::partition`] drops every open connection and from then on
//! accepts new ones without ever answering them, which is what an
//! unreachable apiserver looks like to a client: requests that hang, not
//! requests refused.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::config::Kubeconfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A proxy to the apiserver that a test can cut off.
pub struct ApiProxy {
    address: SocketAddr,
    partitioned: Arc<AtomicBool>,
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl ApiProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the apiserver proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let partitioned = Arc::new(AtomicBool::new(false));
        let (cut, _) = watch::channel(false);
        let accept = {
            let partitioned = Arc::clone(&partitioned);
            let cut = cut.clone();
            tokio::spawn(async move {
                // Accepted sockets of a partition are kept, unanswered.
                let mut held = Vec::new();
                while let Ok((client, _)) = listener.accept().await {
                    if partitioned.load(Ordering::SeqCst) {
                        held.push(client);
                        continue;
                    }
                    let mut cut = cut.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let mut client = client;
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.wait_for(|cut| *cut) => {}
                        }
                    });
                }
            })
        };
        Self {
            address,
            partitioned,
            cut,
            accept,
        }
    }

    /// Where the proxy listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Drops every connection and answers no new one.
    pub fn partition(&self) {
        self.partitioned.store(true, Ordering::SeqCst);
        self.cut.send_replace(true);
    }

    /// Writes to `path` a copy of the kubeconfig in `KUBECONFIG` whose
    /// server is this proxy.
    pub fn kubeconfig(&self, path: &Path) {
        let mut config = Kubeconfig::read().expect("reading KUBECONFIG");
        for named in &mut config.clusters {
            if let Some(cluster) = named.cluster.as_mut() {
                cluster.server = Some(format!("https://{}", self.address));
            }
        }
        std::fs::write(
            path,
            serde_json::to_string(&config).expect("kubeconfig as JSON"),
        )
        .expect("writing the proxy kubeconfig");
    }

    /// The apiserver's address, from the server URL in `KUBECONFIG`.
    pub fn upstream() -> SocketAddr {
        let config = Kubeconfig::read().expect("reading KUBECONFIG");
        let server = config
            .clusters
            .first()
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.server.clone())
            .expect("a server in KUBECONFIG");
        let address: SocketAddr = server
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("server {server} is not an address: {e}"));
        assert!(
            address.ip().is_loopback(),
            "the apiserver must be on loopback"
        );
        address
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut.send_replace(true);
    }
}

/// Whether the full fault suite runs (`cargo xtask test --faults` sets
/// `GANTRY_FAULTS=full`); otherwise each fault test runs a sample.
pub fn full() -> bool {
    std::env::var("GANTRY_FAULTS").is_ok_and(|v| v == "full")
}

/// `count` distinct numbers from `1..=total`, in order: all of them in the
/// full suite, else a sample drawn with a seed taken from
/// `GANTRY_FAULT_SEED` or the clock, and printed, so that a failing sample
/// can be run again with the same seed.
pub fn sample(total: u64, count: usize) -> Vec<u64> {
    if full() {
        return (1..=total).collect();
    }
    pick(total, count)
}

/// `count` distinct numbers from `1..=total` drawn as [`sample`] draws
/// them, in the full suite too (for cases too slow to run them all).
pub fn pick(total: u64, count: usize) -> Vec<u64> {
    let all: Vec<u64> = (1..=total).collect();
    if all.len() <= count {
        return all;
    }
    let seed = std::env::var("GANTRY_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
    println!("fault sample: seed {seed} (GANTRY_FAULT_SEED={seed} repeats it)");
    // xorshift64*: enough to spread a handful of picks.
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut pool = all;
    let mut picked = Vec::with_capacity(count);
    for _ in 0..count {
        #[allow(clippy::cast_possible_truncation)]
        let at = (next() % pool.len() as u64) as usize;
        picked.push(pool.swap_remove(at));
    }
    picked.sort_unstable();
    picked
}

/// The local control plane's own processes, killed and started again the
/// way a crashed node's would be: `kill -9`, then the same program with the
/// same arguments, working directory and environment, read from `/proc`
/// before the kill. The cluster's state directory is the one holding
/// `KUBECONFIG`; the new process's PID replaces the old one in its `pids/`
/// file, so `cargo xtask cluster down` stops it as before.
pub struct ControlPlane {
    dir: std::path::PathBuf,
}

impl ControlPlane {
    /// The control plane `KUBECONFIG` names.
    pub fn from_env() -> Self {
        let kubeconfig = std::env::var_os("KUBECONFIG").expect("KUBECONFIG is set");
        let dir = Path::new(&kubeconfig)
            .parent()
            .expect("the kubeconfig sits in the cluster's directory")
            .to_path_buf();
        Self { dir }
    }

    /// Kills `component` (`kube-apiserver`, `etcd`, ...) with SIGKILL and
    /// starts it again; returns once the new process runs (not once it
    /// serves: the caller waits for what it needs).
    pub fn kill_and_restart(&self, component: &str) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::process::CommandExt;
        let pid_file = self.dir.join("pids").join(format!("{component}.pid"));
        let pid: i32 = std::fs::read_to_string(&pid_file)?
            .trim()
            .parse()
            .map_err(std::io::Error::other)?;
        let proc_dir = Path::new("/proc").join(pid.to_string());
        let split = |bytes: Vec<u8>| -> Vec<std::ffi::OsString> {
            bytes
                .split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| std::ffi::OsStr::from_bytes(part).to_owned())
                .collect()
        };
        let command_line = split(std::fs::read(proc_dir.join("cmdline"))?);
        let environ = split(std::fs::read(proc_dir.join("environ"))?);
        let cwd = std::fs::read_link(proc_dir.join("cwd"))?;
        let (program, args) = command_line
            .split_first()
            .ok_or_else(|| std::io::Error::other(format!("{component} has no command line")))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(std::io::Error::other)?;
        // Gone, or a zombie its parent has not reaped, once every thread
        // has let go of its files (and so of its listening sockets).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::read_dir(proc_dir.join("fd")).is_ok_and(|mut fds| fds.next().is_some()) {
            if std::time::Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "{component} survived SIGKILL"
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // A port can still be held for a moment after that: a start that
        // fails at once is tried again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let log = std::fs::OpenOptions::new()
                .append(true)
                .open(self.dir.join("logs").join(format!("{component}.log")))?;
            let mut child = std::process::Command::new(program)
                .args(args)
                .current_dir(&cwd)
                .env_clear()
                .envs(environ.iter().filter_map(|pair| {
                    let text = pair.to_str()?;
                    text.split_once('=')
                }))
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0)
                .spawn()?;
            std::fs::write(&pid_file, child.id().to_string())?;
            std::thread::sleep(std::time::Duration::from_secs(2));
            match child.try_wait()? {
                None => return Ok(()),
                Some(status) if attempt >= 10 => {
                    return Err(std::io::Error::other(format!(
                        "{component} exited at start ({status}) ten times"
                    )));
                }
                Some(_) => {}
            }
        }
    }
}
