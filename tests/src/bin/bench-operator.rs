//! The operator benchmark behind `cargo xtask bench operator`, run against
//! the local control plane in `KUBECONFIG`.
//!
//! ```text
//! bench-operator <operator binary> <goservers> <latency count> <rate per s> <churn> <log file>
//! ```
//!
//! Every figure is measured side by side with **the floor**: the same
//! children (ConfigMap, Deployment, Service, Ingress, HPA, built by the
//! operator's own code) applied as plain objects with no operator, so only
//! the Kubernetes controllers and kwok work. Prints one JSON document with
//! every figure on stdout; the xtask side makes the table.
//!
//! - latency: `latency count` objects applied at `rate` per second; apply to
//!   `Ready=True` (floor: to the Deployment available), p50/p95/p99;
//! - throughput: `goservers` applied at once, time until all are Ready;
//!   the operator's CPU seconds and peak RSS over it, and its apiserver
//!   requests per `GoServer`;
//! - no-op: every `GoServer` touched (an annotation, no new generation);
//!   requests and writes per reconcile that has nothing to do;
//! - churn: `churn` image changes, time until all are Ready on their new
//!   revision.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::{StreamExt, TryStreamExt, stream};
use gantry_e2e::prometheus::free_loopback_port;
use gantry_operator::crd::GoServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, CustomResourceExt, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Requests in flight when objects are applied "at once".
const PARALLEL: usize = 16;
/// How long one phase may take before the benchmark gives up.
const PHASE_DEADLINE: Duration = Duration::from_secs(900);
const FLOOR_MANAGER: &str = "bench-floor";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

struct Settings {
    operator: PathBuf,
    goservers: usize,
    latency: usize,
    rate: f64,
    churn: usize,
    log: PathBuf,
}

fn settings() -> Result<Settings> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [operator, goservers, latency, rate, churn, log] = args.as_slice() else {
        bail!("usage: bench-operator <operator> <goservers> <latency count> <rate> <churn> <log>");
    };
    Ok(Settings {
        operator: PathBuf::from(operator),
        goservers: goservers.parse().context("goservers")?,
        latency: latency.parse().context("latency count")?,
        rate: rate.parse().context("rate")?,
        churn: churn.parse().context("churn")?,
        log: PathBuf::from(log),
    })
}

async fn run() -> Result<Value> {
    let settings = settings()?;
    let client = gantry_e2e::client().await;
    install_crd(&client).await?;
    let suffix = std::process::id();
    let floor_ns = namespace(&client, &format!("bench-floor-{suffix}")).await?;
    let gantry_ns = namespace(&client, &format!("bench-gantry-{suffix}")).await?;
    let mut operator = OperatorRun::start(&settings, &gantry_ns)?;
    let result = phases(&client, &settings, &floor_ns, &gantry_ns, &mut operator).await;
    drop(operator);
    for ns in [&floor_ns, &gantry_ns] {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(ns, &DeleteParams::background())
            .await;
    }
    result
}

async fn phases(
    client: &Client,
    settings: &Settings,
    floor_ns: &str,
    gantry_ns: &str,
    operator: &mut OperatorRun,
) -> Result<Value> {
    let floor = Floor::new(client, floor_ns);
    let gantry = Gantry::new(client, gantry_ns);
    operator.wait_ready().await?;

    eprintln!(
        "latency: {} at {}/s, floor then gantry",
        settings.latency, settings.rate
    );
    let floor_latency = floor.latency(settings.latency, settings.rate).await?;
    let gantry_latency = gantry.latency(settings.latency, settings.rate).await?;

    eprintln!(
        "throughput: {} at once, floor then gantry",
        settings.goservers
    );
    let floor_all = floor.at_once(settings.latency, settings.goservers).await?;
    let before = operator.sample().await?;
    let gantry_all = gantry.at_once(settings.latency, settings.goservers).await?;
    let after = operator.sample().await?;
    let total = settings.latency + settings.goservers;

    eprintln!("no-op: every GoServer touched");
    let touched = gantry.touch_all(total).await?;
    operator
        .wait_reconciles(after.reconciles + count(touched))
        .await?;
    let idle = operator.sample().await?;

    eprintln!("churn: {} image changes", settings.churn);
    let churn_seconds = gantry.churn(settings.churn).await?;

    Ok(json!({
        "goservers": settings.goservers,
        "latency": {
            "count": settings.latency,
            "ratePerSecond": settings.rate,
            "floor": floor_latency,
            "gantry": gantry_latency,
        },
        "throughput": {
            "count": settings.goservers,
            "floorSeconds": floor_all,
            "gantrySeconds": gantry_all,
        },
        "operator": {
            "cpuSeconds": after.cpu_seconds - before.cpu_seconds,
            "peakRssMiB": idle.peak_rss_mib,
            "requestsPerGoServer": (after.requests - before.requests) / count(settings.goservers),
            "writesPerGoServer": (after.writes - before.writes) / count(settings.goservers),
        },
        "noop": {
            "reconciles": touched,
            "requestsPerReconcile": (idle.requests - after.requests) / count(touched),
            "writesPerReconcile": (idle.writes - after.writes) / count(touched),
        },
        "churn": {"count": settings.churn, "gantrySeconds": churn_seconds},
    }))
}

#[allow(clippy::cast_precision_loss)] // counts far below 2^52
fn count(n: usize) -> f64 {
    n.max(1) as f64
}

async fn install_crd(client: &Client) -> Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "goservers.gantry.dev",
        &PatchParams::apply("gantry-bench").force(),
        &Patch::Apply(GoServer::crd()),
    )
    .await?;
    gantry_e2e::wait_for_crd(client, "goservers.gantry.dev", Duration::from_secs(60)).await
}

async fn namespace(client: &Client, name: &str) -> Result<String> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(name.to_owned())
}

/// The `GoServer` each benchmark object is: every child kind.
fn goserver(name: &str, image: &str) -> Result<GoServer> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": name},
        "spec": {
            "image": image,
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            "config": {"data": {"GREETING": "hello"}},
            "ingress": {"host": format!("{name}.bench.example")},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
        },
    }))?)
}

/// p50, p95 and p99 of `seconds`, in seconds.
fn percentiles(mut seconds: Vec<f64>) -> Value {
    seconds.sort_by(f64::total_cmp);
    let at = |p: f64| {
        if seconds.is_empty() {
            return 0.0;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let index = ((seconds.len() as f64 * p).ceil() as usize).clamp(1, seconds.len()) - 1;
        seconds[index]
    };
    json!({"p50": at(0.50), "p95": at(0.95), "p99": at(0.99)})
}

/// When each object (by key) first met a condition, from a watch.
struct Readiness {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    task: JoinHandle<()>,
}

impl Readiness {
    fn watch<K>(api: Api<K>, key: impl Fn(&K) -> Option<String> + Send + 'static) -> Self
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let sink = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(event) = events.next().await {
                if let Ok(object) = event
                    && let Some(key) = key(&object)
                {
                    sink.lock()
                        .expect("lock")
                        .entry(key)
                        .or_insert_with(Instant::now);
                }
            }
        });
        Self { seen, task }
    }

    /// Waits until every key is seen; when each was.
    async fn wait(&self, keys: &[String]) -> Result<Vec<Instant>> {
        let deadline = Instant::now() + PHASE_DEADLINE;
        loop {
            {
                let seen = self.seen.lock().expect("lock");
                let times: Vec<Instant> =
                    keys.iter().filter_map(|k| seen.get(k).copied()).collect();
                if times.len() == keys.len() {
                    return Ok(times);
                }
                if Instant::now() >= deadline {
                    bail!(
                        "{} of {} ready after {PHASE_DEADLINE:?}",
                        times.len(),
                        keys.len()
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Applies `count` items with `apply`, spaced at `rate` per second, or
/// `PARALLEL` at a time when `rate` is `None`; when each apply began.
async fn apply_all<F, Fut>(names: &[String], rate: Option<f64>, apply: F) -> Result<Vec<Instant>>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    if let Some(rate) = rate {
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        let mut started = Vec::new();
        for name in names {
            ticks.tick().await;
            started.push(Instant::now());
            apply(name.clone()).await?;
        }
        return Ok(started);
    }
    let start = Instant::now();
    stream::iter(names.iter().cloned().map(&apply))
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(vec![start; names.len()])
}

fn names(prefix: &str, from: usize, count: usize) -> Vec<String> {
    (from..from + count)
        .map(|i| format!("{prefix}-{i:04}"))
        .collect()
}

fn latencies(started: &[Instant], ready: &[Instant]) -> Value {
    percentiles(
        started
            .iter()
            .zip(ready)
            .map(|(s, r)| r.saturating_duration_since(*s).as_secs_f64())
            .collect(),
    )
}

fn seconds_until_all(started: &[Instant], ready: &[Instant]) -> f64 {
    let first = started.iter().min().copied().unwrap_or_else(Instant::now);
    ready.iter().max().map_or(0.0, |last| {
        last.saturating_duration_since(first).as_secs_f64()
    })
}

/// The children without an operator.
struct Floor {
    client: Client,
    namespace: String,
}

impl Floor {
    fn new(client: &Client, namespace: &str) -> Self {
        Self {
            client: client.clone(),
            namespace: namespace.to_owned(),
        }
    }

    /// What the operator would apply for `name`, without owner references.
    fn children(&self, name: &str) -> Result<Vec<Value>> {
        let mut gs = goserver(name, "registry.example.com/bench:1")?;
        gs.metadata.namespace = Some(self.namespace.clone());
        gs.metadata.uid = Some("00000000-0000-0000-0000-000000000000".to_owned());
        let revision = gantry_operator::build::spec_revision(&gs)?;
        let children = gantry_operator::build::build(&gs, revision)?;
        let mut objects = vec![
            serde_json::to_value(&children.config_map)?,
            serde_json::to_value(&children.deployment)?,
            serde_json::to_value(&children.service)?,
        ];
        objects.extend(
            children
                .ingress
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()?,
        );
        objects.extend(
            children
                .hpa
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()?,
        );
        for object in &mut objects {
            if let Some(meta) = object["metadata"].as_object_mut() {
                meta.remove("ownerReferences");
            }
        }
        Ok(objects)
    }

    async fn apply(&self, name: String) -> Result<()> {
        for object in self.children(&name)? {
            let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
            let kind = object["kind"].as_str().unwrap_or_default().to_owned();
            let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
            let resource =
                ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(group, version, &kind));
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &self.namespace, &resource);
            let object_name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            api.patch(
                &object_name,
                &PatchParams::apply(FLOOR_MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
            .with_context(|| format!("applying {kind} {object_name}"))?;
        }
        Ok(())
    }

    fn readiness(&self) -> Readiness {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        Readiness::watch(api, |d: &Deployment| {
            let spec = d.spec.as_ref()?;
            let status = d.status.as_ref()?;
            let want = spec.replicas.unwrap_or(1);
            (status.observed_generation == d.metadata.generation
                && status.updated_replicas == Some(want)
                && status.available_replicas == Some(want))
            .then(|| d.name_any())
        })
    }

    async fn latency(&self, count: usize, rate: f64) -> Result<Value> {
        let ready = self.readiness();
        let names = names("floor", 0, count);
        let started = apply_all(&names, Some(rate), |n| self.apply(n)).await?;
        Ok(latencies(&started, &ready.wait(&names).await?))
    }

    async fn at_once(&self, from: usize, count: usize) -> Result<f64> {
        let ready = self.readiness();
        let names = names("floor", from, count);
        let started = apply_all(&names, None, |n| self.apply(n)).await?;
        Ok(seconds_until_all(&started, &ready.wait(&names).await?))
    }
}

/// The same through `GoServers` and the operator.
struct Gantry {
    api: Api<GoServer>,
}

fn ready_revision(gs: &GoServer) -> Option<String> {
    let status = gs.status.as_ref()?;
    let ready = status.observed_generation == gs.metadata.generation
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
    ready.then(|| format!("{}@{}", gs.name_any(), gs.spec.image))
}

impl Gantry {
    fn new(client: &Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
        }
    }

    async fn create(&self, name: String) -> Result<()> {
        self.api
            .create(
                &PostParams::default(),
                &goserver(&name, "registry.example.com/bench:1")?,
            )
            .await
            .with_context(|| format!("creating GoServer {name}"))?;
        Ok(())
    }

    fn keys(names: &[String], image: &str) -> Vec<String> {
        names.iter().map(|n| format!("{n}@{image}")).collect()
    }

    async fn latency(&self, count: usize, rate: f64) -> Result<Value> {
        let ready = Readiness::watch(self.api.clone(), ready_revision);
        let names = names("gs", 0, count);
        let started = apply_all(&names, Some(rate), |n| self.create(n)).await?;
        let keys = Self::keys(&names, "registry.example.com/bench:1");
        Ok(latencies(&started, &ready.wait(&keys).await?))
    }

    async fn at_once(&self, from: usize, count: usize) -> Result<f64> {
        let ready = Readiness::watch(self.api.clone(), ready_revision);
        let names = names("gs", from, count);
        let started = apply_all(&names, None, |n| self.create(n)).await?;
        let keys = Self::keys(&names, "registry.example.com/bench:1");
        Ok(seconds_until_all(&started, &ready.wait(&keys).await?))
    }

    /// Merge-patches every one of `names`, `PARALLEL` at a time; when
    /// the patches began.
    async fn patch_all(&self, names: &[String], patch: &Value) -> Result<Vec<Instant>> {
        apply_all(names, None, |n| async move {
            self.api
                .patch(&n, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            Ok(())
        })
        .await
    }

    /// An annotation on every `GoServer`: a reconcile with nothing to do.
    async fn touch_all(&self, count: usize) -> Result<usize> {
        let names = names("gs", 0, count);
        let patch = json!({"metadata": {"annotations": {"bench.gantry.dev/touched": "1"}}});
        self.patch_all(&names, &patch).await?;
        Ok(names.len())
    }

    async fn churn(&self, count: usize) -> Result<f64> {
        let ready = Readiness::watch(self.api.clone(), ready_revision);
        let names = names("gs", 0, count);
        let image = "registry.example.com/bench:2";
        let started = self
            .patch_all(&names, &json!({"spec": {"image": image}}))
            .await?;
        Ok(seconds_until_all(
            &started,
            &ready.wait(&Self::keys(&names, image)).await?,
        ))
    }
}

/// The operator process, and what `/proc` and its `/metrics` say about it.
struct OperatorRun {
    child: Child,
    metrics: String,
}

struct Sample {
    cpu_seconds: f64,
    peak_rss_mib: f64,
    requests: f64,
    writes: f64,
    reconciles: f64,
}

impl OperatorRun {
    fn start(settings: &Settings, namespace: &str) -> Result<Self> {
        let address = free_loopback_port();
        let log = std::fs::File::create(&settings.log)
            .with_context(|| format!("creating {}", settings.log.display()))?;
        let child = Command::new(&settings.operator)
            .args(["--namespace", namespace, "--log-level", "warn"])
            .arg(format!("--http-address={address}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", settings.operator.display()))?;
        Ok(Self {
            child,
            metrics: format!("http://{address}/metrics"),
        })
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let ready = self.metrics.replace("/metrics", "/readyz");
        let client = gantry_e2e::loopback_client();
        for _ in 0..600 {
            ensure!(
                matches!(self.child.try_wait(), Ok(None)),
                "the operator exited"
            );
            if client
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the operator was not ready within a minute")
    }

    async fn wait_reconciles(&mut self, at_least: f64) -> Result<()> {
        let deadline = Instant::now() + PHASE_DEADLINE;
        while self.sample().await?.reconciles < at_least {
            ensure!(
                Instant::now() < deadline,
                "reconciles never reached {at_least}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Let the last ones finish their requests.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(())
    }

    async fn sample(&mut self) -> Result<Sample> {
        ensure!(
            matches!(self.child.try_wait(), Ok(None)),
            "the operator exited"
        );
        let pid = self.child.id();
        let text = gantry_e2e::loopback_client()
            .get(&self.metrics)
            .send()
            .await?
            .text()
            .await?;
        let metrics = parse_metrics(&text);
        let sum = |name: &str, keep: &dyn Fn(&BTreeMap<String, String>) -> bool| {
            metrics
                .iter()
                .filter(|(n, labels, _)| n == name && keep(labels))
                .map(|(_, _, v)| v)
                .sum::<f64>()
        };
        let writes = |l: &BTreeMap<String, String>| {
            matches!(
                l.get("verb").map(String::as_str),
                Some("create" | "patch" | "update" | "delete")
            )
        };
        Ok(Sample {
            cpu_seconds: cpu_seconds(pid)?,
            peak_rss_mib: peak_rss_mib(pid)?,
            requests: sum("gantry_kubernetes_requests_total", &|_| true),
            writes: sum("gantry_kubernetes_requests_total", &writes),
            reconciles: sum("gantry_reconciles_total", &|_| true),
        })
    }
}

impl Drop for OperatorRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name{a="b",...} value` lines of the text exposition format.
fn parse_metrics(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some((name.to_owned(), labels, value))
        })
        .collect()
}

fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    // USER_HZ, 100 on every Linux this runs on.
    let ticks_per_second = 100.0;
    Ok((ticks(11) + ticks(12)) / ticks_per_second)
}

fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .context("VmHWM in /proc/<pid>/status")?;
    Ok(kib / 1024.0)
}
