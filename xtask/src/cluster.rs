//! `cargo xtask cluster up|env|down`: a real Kubernetes control plane on
//! 127.0.0.1 with no container runtime.
//!
//! etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as
//! local processes; kwok plays the kubelet of N fake nodes, so pods are
//! scheduled, marked Running and Ready, and deleted, without containers.
//! Pod and Service addresses lead nowhere: only 127.0.0.1 is ever dialled.
//!
//! Everything lives in one state directory: `pki/`, the kubeconfigs,
//! `etcd/`, `logs/<component>.log` and `pids/<component>.pid`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command as Exec, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::proc::{self, Daemon};
use crate::toolchain::{self, Binaries};
use crate::{pki, workspace};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Build (once, cached) and start a local control plane.
    Up {
        /// How many fake nodes kwok manages.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
        nodes: u16,
    },
    /// Print `export KUBECONFIG=... PATH=...` for the running cluster.
    Env,
    /// Stop every process the cluster started and remove its state.
    Down,
}

pub fn run(command: &Command) -> Result<ExitCode> {
    let cluster = Cluster::at(workspace::cluster_dir());
    match command {
        Command::Up { nodes } => {
            cluster.up(*nodes)?;
            eprintln!("cluster is up; to use it:");
            println!("{}", cluster.env_line()?);
        }
        Command::Env => {
            if !cluster.kubeconfig().exists() {
                bail!("no cluster is running here; start one with `cargo xtask cluster up`");
            }
            println!("{}", cluster.env_line()?);
        }
        Command::Down => cluster.down()?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Startup order; `down` stops them in reverse.
const COMPONENTS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

/// Every program a cluster runs: the components, and the operator that
/// `cargo xtask demo` starts against it.
const PROGRAMS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "gantry-operator",
];

/// The waits of `up`. Generous: a loaded 2-core machine is slow, and a
/// deadline only has to catch what is stuck.
const APISERVER_READY: Duration = Duration::from_secs(180);
const COMPONENT_HEALTHY: Duration = Duration::from_secs(120);
const NODES_READY: Duration = Duration::from_secs(120);

/// The Service range; the apiserver certificate carries its first address.
/// A /16: `cargo xtask bench operator` runs a thousand `GoServers` and as
/// many plain copies of their children, one Service each.
const SERVICE_CIDR: &str = "10.0.0.0/16";
/// Pods each fake node takes: room for the benchmark's two thousand pods
/// on three nodes (a real node's default is 110).
const PODS_PER_NODE: &str = "1000";
/// Pod addresses kwok hands out (they lead nowhere).
const POD_CIDR: &str = "10.244.0.0/16";

pub struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    pub fn at(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The shell line that points kubectl, helm and the tests at this cluster.
    pub fn env_line(&self) -> Result<String> {
        Ok(format!(
            "export KUBECONFIG={} PATH={}:$PATH",
            self.kubeconfig().display(),
            toolchain::bin_dir()?.display()
        ))
    }

    fn pid_files(&self) -> Vec<(String, PathBuf)> {
        COMPONENTS
            .iter()
            .map(|c| {
                (
                    (*c).to_owned(),
                    self.dir.join("pids").join(format!("{c}.pid")),
                )
            })
            .collect()
    }

    fn recorded_pids(&self) -> Vec<(String, i32)> {
        self.pid_files()
            .into_iter()
            .filter_map(|(name, file)| {
                let pid = fs::read_to_string(file).ok()?.trim().parse().ok()?;
                Some((name, pid))
            })
            .collect()
    }

    /// Whether every component recorded by a previous `up` is still alive
    /// and the apiserver answers.
    fn running(&self, bins: &Binaries) -> bool {
        let pids = self.recorded_pids();
        pids.len() == COMPONENTS.len()
            && pids.iter().all(|(_, pid)| proc::alive(*pid))
            && self.kubectl(bins, &["get", "--raw", "/readyz"]).is_ok()
    }

    fn kubectl(&self, bins: &Binaries, args: &[&str]) -> Result<String> {
        proc::output(
            &format!("kubectl {}", args.join(" ")),
            Exec::new(bins.path("kubectl"))
                .arg("--kubeconfig")
                .arg(self.kubeconfig())
                .args(["--request-timeout", "10s"])
                .args(args),
        )
    }

    /// The state directory: kubeconfig, logs, PID files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn up(&self, nodes: u16) -> Result<()> {
        let bins = toolchain::ensure()?;
        if self.running(&bins) {
            eprintln!("a cluster is already running in {}", self.dir.display());
            return Ok(());
        }
        if self.dir.exists() {
            // What a crashed or half-finished `up` left behind.
            self.down()?;
        }
        let started = Instant::now();
        let result = self.start(&bins, nodes);
        if let Err(err) = result {
            self.stop_processes();
            return Err(err.context(format!(
                "cluster up failed; the component logs are kept in {}",
                self.dir.join("logs").display()
            )));
        }
        eprintln!(
            "control plane ready with {nodes} nodes in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn start(&self, bins: &Binaries, nodes: u16) -> Result<()> {
        for sub in ["logs", "pids", "etcd"] {
            fs::create_dir_all(self.dir.join(sub))?;
        }
        let ports = Ports::pick()?;
        let pki = pki::generate(&self.dir.join("pki"))?;
        let server = format!("https://127.0.0.1:{}", ports.apiserver);
        for (name, user) in [
            ("admin", &pki.admin),
            ("controller-manager", &pki.controller_manager),
            ("scheduler", &pki.scheduler),
            ("kwok", &pki.kwok),
        ] {
            fs::write(
                self.kubeconfig_of(name),
                pki::kubeconfig(&server, &pki.ca.cert, user),
            )?;
        }

        let mut daemons = Vec::new();
        eprintln!("starting etcd");
        self.start_etcd(bins, &ports, &mut daemons)?;
        eprintln!("starting kube-apiserver");
        self.start_apiserver(bins, &ports, &pki, &mut daemons)?;
        eprintln!("starting kube-controller-manager and kube-scheduler");
        self.start_controllers(bins, &ports, &pki, &mut daemons)?;
        eprintln!("starting kwok and creating {nodes} nodes");
        self.start_nodes(bins, nodes, &mut daemons)
    }

    /// The admin kubeconfig is `kubeconfig`; each component has its own.
    fn kubeconfig_of(&self, identity: &str) -> PathBuf {
        if identity == "admin" {
            self.kubeconfig()
        } else {
            self.dir.join(format!("{identity}.kubeconfig"))
        }
    }

    fn start_etcd(&self, bins: &Binaries, ports: &Ports, daemons: &mut Vec<Daemon>) -> Result<()> {
        let client_url = ports.etcd_url();
        let peer_url = format!("http://127.0.0.1:{}", ports.etcd_peer);
        daemons.push(Daemon::spawn(
            "etcd",
            &self.dir,
            Exec::new(bins.path("etcd"))
                .arg("--name=gantry")
                .arg(format!("--data-dir={}", self.dir.join("etcd").display()))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=gantry={peer_url}"))
                // A throwaway cluster: durability is not worth the fsyncs.
                .arg("--unsafe-no-fsync")
                .arg("--log-level=warn"),
        )?);
        proc::wait_until("etcd to be healthy", COMPONENT_HEALTHY, daemons, || {
            http_get_ok("127.0.0.1", ports.etcd_client, "/health")
        })
    }

    fn start_apiserver(
        &self,
        bins: &Binaries,
        ports: &Ports,
        pki: &pki::Pki,
        daemons: &mut Vec<Daemon>,
    ) -> Result<()> {
        daemons.push(Daemon::spawn(
            "kube-apiserver",
            &self.dir,
            Exec::new(bins.path("kube-apiserver"))
                .arg(format!("--etcd-servers={}", ports.etcd_url()))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--secure-port={}", ports.apiserver))
                .arg(format!("--cert-dir={}", self.dir.join("pki").display()))
                .arg(flag("--tls-cert-file", &pki.apiserver.cert))
                .arg(flag("--tls-private-key-file", &pki.apiserver.key))
                .arg(flag("--client-ca-file", &pki.ca.cert))
                .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                .arg(flag("--service-account-key-file", &pki.service_account_pub))
                .arg(flag(
                    "--service-account-signing-key-file",
                    &pki.service_account_key,
                ))
                .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
                .arg("--authorization-mode=RBAC")
                // Privileged pods are allowed by the apiserver itself, as on
                // a real node: refusing them is Pod Security's job.
                .arg("--allow-privileged=true")
                // Loopback is not a valid endpoint address, and nothing
                // in this cluster dials the kubernetes Service anyway.
                .arg("--endpoint-reconciler-type=none")
                .arg("--profiling=false"),
        )?);
        proc::wait_until(
            "kube-apiserver to be ready (/readyz)",
            APISERVER_READY,
            daemons,
            || Ok(self.kubectl(bins, &["get", "--raw", "/readyz"])?.trim() == "ok"),
        )
    }

    fn start_controllers(
        &self,
        bins: &Binaries,
        ports: &Ports,
        pki: &pki::Pki,
        daemons: &mut Vec<Daemon>,
    ) -> Result<()> {
        daemons.push(Daemon::spawn(
            "kube-controller-manager",
            &self.dir,
            Exec::new(bins.path("kube-controller-manager"))
                .arg(flag(
                    "--kubeconfig",
                    &self.kubeconfig_of("controller-manager"),
                ))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={}", ports.controller_manager))
                .arg(flag(
                    "--tls-cert-file",
                    &pki.controller_manager_serving.cert,
                ))
                .arg(flag(
                    "--tls-private-key-file",
                    &pki.controller_manager_serving.key,
                ))
                .arg(flag(
                    "--service-account-private-key-file",
                    &pki.service_account_key,
                ))
                .arg(flag("--root-ca-file", &pki.ca.cert))
                .arg(flag("--cluster-signing-cert-file", &pki.ca.cert))
                .arg(flag("--cluster-signing-key-file", &pki.ca.key))
                // Each controller acts as its own service account, so RBAC
                // is exercised the way a real cluster does it.
                .arg("--use-service-account-credentials=true")
                // The default client rate (20/s, bursts of 30) is shared by
                // every controller; a thousand Deployments created at once
                // would queue behind it for minutes. A real control plane
                // has the cores this one lacks; here the rate is the limit.
                .arg("--kube-api-qps=200")
                .arg("--kube-api-burst=400")
                .arg("--leader-elect=false")
                .arg("--profiling=false"),
        )?);
        daemons.push(Daemon::spawn(
            "kube-scheduler",
            &self.dir,
            Exec::new(bins.path("kube-scheduler"))
                .arg(flag("--kubeconfig", &self.kubeconfig_of("scheduler")))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={}", ports.scheduler))
                .arg(flag("--tls-cert-file", &pki.scheduler_serving.cert))
                .arg(flag("--tls-private-key-file", &pki.scheduler_serving.key))
                .arg("--leader-elect=false")
                .arg("--profiling=false"),
        )?);
        for (name, port) in [
            ("kube-controller-manager", ports.controller_manager),
            ("kube-scheduler", ports.scheduler),
        ] {
            let what = format!("{name} to be healthy (/healthz)");
            let server = format!("https://127.0.0.1:{port}");
            proc::wait_until(&what, COMPONENT_HEALTHY, daemons, || {
                // kubectl speaks HTTPS and verifies the serving
                // certificate against the cluster CA.
                let out = self.kubectl(bins, &["--server", &server, "get", "--raw", "/healthz"])?;
                Ok(out.trim() == "ok")
            })?;
        }
        Ok(())
    }

    fn start_nodes(&self, bins: &Binaries, nodes: u16, daemons: &mut Vec<Daemon>) -> Result<()> {
        let kwok_config = self.dir.join("kwok.yaml");
        fs::copy(bins.path(toolchain::KWOK_STAGES), &kwok_config)?;
        daemons.push(Daemon::spawn(
            "kwok",
            &self.dir,
            Exec::new(bins.path("kwok"))
                .arg(flag("--kubeconfig", &self.kubeconfig_of("kwok")))
                .arg(flag("--config", &kwok_config))
                .arg("--manage-all-nodes=false")
                .arg(format!(
                    "--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake"
                ))
                .arg(format!("--cidr={POD_CIDR}"))
                // Renew each node's Lease, as a kubelet does: without it the
                // node controller only sees status heartbeats, which come
                // slower than its grace period, and marks nodes NotReady
                // (and with them every pod's Ready condition).
                .arg("--node-lease-duration-seconds=40")
                // kwok keeps a work directory under HOME.
                .env("HOME", &self.dir),
        )?);
        let manifest = self.dir.join("nodes.json");
        fs::write(&manifest, nodes_manifest(nodes))?;
        self.kubectl(bins, &["apply", "-f", &manifest.display().to_string()])?;
        proc::wait_until(
            &format!("{nodes} nodes to be Ready"),
            NODES_READY,
            daemons,
            || {
                let ready = self.kubectl(bins, &["get", "nodes", "-o", READY_JSONPATH])?;
                let count = ready.lines().filter(|l| l.trim() == "True").count();
                if count < usize::from(nodes) {
                    bail!("{count} of {nodes} nodes Ready");
                }
                Ok(true)
            },
        )?;
        // The ServiceAccount admission plugin refuses pods until the
        // namespace's default ServiceAccount exists.
        proc::wait_until(
            "the default ServiceAccount",
            COMPONENT_HEALTHY,
            daemons,
            || {
                Ok(self
                    .kubectl(bins, &["get", "serviceaccount", "default", "-n", "default"])
                    .is_ok())
            },
        )
    }

    /// Stops every process the cluster started (by recorded PID, and by
    /// any process still naming the state directory) and removes the state.
    pub fn down(&self) -> Result<()> {
        if !self.dir.exists() {
            eprintln!(
                "no cluster state in {}; nothing to stop",
                self.dir.display()
            );
            return Ok(());
        }
        let killed = self.stop_processes();
        fs::remove_dir_all(&self.dir)
            .with_context(|| format!("removing {}", self.dir.display()))?;
        eprintln!(
            "cluster stopped ({killed} processes) and {} removed",
            self.dir.display()
        );
        Ok(())
    }

    fn stop_processes(&self) -> usize {
        // One stage at a time, clients before servers: first whatever else
        // runs against this cluster (the operator the demo started, or
        // leftovers of a crash whose PID files are gone), then the
        // components in reverse start order, the apiserver (which drains
        // its watches while etcd is still there) and etcd last.
        let recorded = self.recorded_pids();
        let stage = |names: &[&str]| -> Vec<i32> {
            recorded
                .iter()
                .filter(|(name, pid)| names.contains(&name.as_str()) && proc::alive(*pid))
                .map(|(_, pid)| *pid)
                .collect()
        };
        let mut stages = vec![
            stage(&["kwok", "kube-scheduler", "kube-controller-manager"]),
            stage(&["kube-apiserver"]),
            stage(&["etcd"]),
        ];
        let known: Vec<i32> = stages.iter().flatten().copied().collect();
        stages.insert(
            0,
            proc::processes_mentioning(&self.dir.display().to_string(), PROGRAMS)
                .into_iter()
                .filter(|pid| !known.contains(pid))
                .collect(),
        );
        let mut count = 0;
        for pids in stages.iter().filter(|pids| !pids.is_empty()) {
            count += pids.len();
            let stubborn = proc::terminate(pids, Duration::from_secs(15));
            if !stubborn.is_empty() {
                eprintln!("killed processes that ignored SIGTERM for 15 s: {stubborn:?}");
            }
        }
        count
    }
}

/// Each node's Ready condition status, one a line.
const READY_JSONPATH: &str =
    r#"jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#;

/// `--name=<path>` for a file argument.
fn flag(name: &str, path: &Path) -> String {
    format!("{name}={}", path.display())
}

/// The loopback ports of one cluster, all picked before anything starts.
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
    controller_manager: u16,
    scheduler: u16,
}

impl Ports {
    fn pick() -> Result<Self> {
        Ok(Self {
            etcd_client: proc::free_port()?,
            etcd_peer: proc::free_port()?,
            apiserver: proc::free_port()?,
            controller_manager: proc::free_port()?,
            scheduler: proc::free_port()?,
        })
    }

    fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_client)
    }
}

/// The annotation kwok selects the nodes it manages by.
const KWOK_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// `count` fake nodes for kwok to manage, as a List manifest.
fn nodes_manifest(count: u16) -> String {
    let items: Vec<serde_json::Value> = (1..=count)
        .map(|i| {
            let name = format!("kwok-node-{i}");
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "kubernetes.io/role": "agent",
                        "type": "kwok",
                        "topology.kubernetes.io/zone": format!("zone-{}", (i - 1) % 3 + 1),
                    },
                },
                "status": {
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": PODS_PER_NODE},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": PODS_PER_NODE},
                },
            })
        })
        .collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    format!("{list:#}\n")
}

/// A plain-HTTP GET on loopback that succeeds on a 200 answer.
fn http_get_ok(host: &str, port: u16, path: &str) -> Result<bool> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let status = agent
        .get(format!("http://{host}:{port}{path}"))
        .call()?
        .status();
    if status == 200 {
        Ok(true)
    } else {
        bail!("answered {status}")
    }
}
