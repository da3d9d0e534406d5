//! A real Prometheus as a process on loopback, for the rollout-verification
//! tests: the operator judges a revision by `PromQL` against it, so the
//! queries, the label matching and the "no data" and "Prometheus down" cases
//! are those of the real server rather than of a mock that answers what the
//! test expects.
//!
//! It scrapes every second and reads its targets from a `file_sd` file that
//! [`Prometheus::set_targets`] rewrites, so a test points it at the
//! gantry-server processes standing in for a revision's pods, with the
//! labels (`namespace`, `revision`) a pod's series carry in a cluster.
//! [`Prometheus::stop`] and [`Prometheus::restart`] take it away and bring it
//! back on the same port with the same data, as an outage would.
//!
//! The process runs from the `prometheus` binary on `PATH` (Debian's
//! package, which `cargo xtask test` installs) with its own configuration
//! and storage in a temporary directory; nothing under `/etc/prometheus` or
//! a system service is used.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::operator::wait_http_ok;

/// How long a start or restart may take before the test fails: replaying
/// the write-ahead log after a kill is the slow part, and the machine may
/// be busy compiling.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// One scrape target: a server's address and the labels its series get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub address: SocketAddr,
    pub labels: BTreeMap<String, String>,
}

impl Target {
    /// A target with `labels` given as pairs, for brevity in tests.
    pub fn new(address: SocketAddr, labels: &[(&str, &str)]) -> Self {
        Self {
            address,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }
}

/// A running (or stopped) Prometheus. Killed on drop; its directory goes
/// with it.
pub struct Prometheus {
    child: Option<Child>,
    address: SocketAddr,
    dir: TempDir,
    log: Arc<Mutex<Vec<String>>>,
    client: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port with no targets, and waits
    /// until it is ready to answer queries.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gantry-prometheus-")
            .tempdir()
            .expect("a temporary directory for Prometheus");
        let address = free_loopback_port();
        std::fs::write(dir.path().join("prometheus.yml"), config(dir.path()))
            .expect("writing prometheus.yml");
        let mut prometheus = Self {
            child: None,
            address,
            dir,
            log: Arc::new(Mutex::new(Vec::new())),
            client: crate::loopback_client(),
        };
        prometheus.set_targets(&[]);
        prometheus.spawn();
        prometheus
    }

    /// The base URL of the HTTP API, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The address it listens on (the same across restarts).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Replaces the scrape targets. The file is written whole and renamed
    /// into place, so Prometheus never reads half of it; it picks the change
    /// up within about a second (it watches the file and rereads it every
    /// second).
    pub fn set_targets(&self, targets: &[Target]) {
        for target in targets {
            assert!(
                target.address.ip().is_loopback(),
                "Prometheus may only scrape loopback in the tests, not {}",
                target.address
            );
        }
        let groups: Vec<Value> = targets
            .iter()
            .map(|t| json!({"targets": [t.address.to_string()], "labels": t.labels}))
            .collect();
        let path = targets_file(self.dir.path());
        let staging = path.with_extension("json.tmp");
        std::fs::write(&staging, serde_json::to_vec_pretty(&groups).expect("JSON"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", staging.display()));
        std::fs::rename(&staging, &path)
            .unwrap_or_else(|e| panic!("renaming {} into place: {e}", path.display()));
    }

    /// Kills the process, as an outage would; the port, the data and the
    /// targets stay for [`Prometheus::restart`]. Queries fail until then.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again (stopping it first if it runs) on the same port with
    /// the same data and targets, and waits until it is ready.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts it again with its data gone, as a Prometheus whose volume
    /// was lost comes back: the same port and targets, an empty TSDB.
    pub fn restart_empty(&mut self) {
        self.stop();
        let data = self.dir.path().join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .unwrap_or_else(|e| panic!("removing {}: {e}", data.display()));
        }
        self.spawn();
    }

    /// Its log lines so far (logfmt, from every start).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// An instant query through the HTTP API; the `data` member of a
    /// successful answer (`{"resultType": ..., "result": ...}`). An error
    /// answer (bad `PromQL`, say) or no answer at all is an `Err`.
    pub async fn query(&self, promql: &str) -> Result<Value> {
        self.api("query", promql, &[]).await
    }

    /// A range query over the last `range`, one point per `step`, as
    /// Grafana sends a panel's or an annotation's query: the `data` member
    /// of a successful answer (a matrix). Errors as in [`Prometheus::query`].
    pub async fn query_range(
        &self,
        promql: &str,
        range: Duration,
        step: Duration,
    ) -> Result<Value> {
        let end = SystemTime::now();
        self.query_range_between(
            promql,
            end.checked_sub(range).unwrap_or(UNIX_EPOCH),
            end,
            step,
        )
        .await
    }

    /// A range query from `start` to `end`, one point per `step`: the
    /// `data` member of a successful answer (a matrix). Errors as in
    /// [`Prometheus::query`].
    pub async fn query_range_between(
        &self,
        promql: &str,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> Result<Value> {
        let params = [
            ("start", unix_seconds(start)?),
            ("end", unix_seconds(end)?),
            ("step", format!("{}s", step.as_secs().max(1))),
        ];
        self.api("query_range", promql, &params).await
    }

    /// An instant query evaluated at `time` rather than now. Errors as in
    /// [`Prometheus::query`].
    pub async fn query_at(&self, promql: &str, time: SystemTime) -> Result<Value> {
        self.api("query", promql, &[("time", unix_seconds(time)?)])
            .await
    }

    /// One query endpoint (`/api/v1/<endpoint>`) with `promql` and `params`.
    async fn api(&self, endpoint: &str, promql: &str, params: &[(&str, String)]) -> Result<Value> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/{endpoint}", self.url()),
            std::iter::once(("query", promql)).chain(params.iter().map(|(k, v)| (*k, v.as_str()))),
        )?;
        let response = self
            .client
            .get(url)
            .send()
            .await
            .with_context(|| format!("querying Prometheus at {}", self.url()))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("reading the answer to {promql} ({status})"))?;
        if body["status"] != "success" {
            bail!(
                "Prometheus refused {promql} ({status}): {}: {}",
                body["errorType"],
                body["error"]
            );
        }
        Ok(body["data"].clone())
    }

    /// Polls `promql` until it returns a vector of exactly one sample, for
    /// at most `timeout`; that sample's value. A series needs a few scrapes
    /// (and `rate` two samples in its window) before it shows, hence the
    /// wait.
    pub async fn wait_for_series(&self, promql: &str, timeout: Duration) -> Result<f64> {
        self.wait_for_value(promql, "one sample", timeout, |_| true)
            .await
    }

    /// Polls `promql` until it returns a vector of exactly one sample whose
    /// value satisfies `accept`, for at most `timeout`; that value. The
    /// error says what was expected and what the query last returned.
    pub async fn wait_for_value(
        &self,
        promql: &str,
        expectation: &str,
        timeout: Duration,
        accept: impl Fn(f64) -> bool,
    ) -> Result<f64> {
        let what = format!("{promql} to return {expectation}");
        crate::wait_until(&what, timeout, || async {
            let data = self.query(promql).await.map_err(|e| format!("{e:#}"))?;
            match single_value(&data) {
                Some(value) if accept(value) => Ok(Some(value)),
                _ => Err(data.to_string()),
            }
        })
        .await
    }

    /// Starts the process on `self.address` and waits for `/-/ready`.
    fn spawn(&mut self) {
        let dir = self.dir.path();
        let mut child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={}", self.address))
            // A test runs for minutes; an hour keeps everything it wrote
            // and bounds the disk a long session can fill.
            .arg("--storage.tsdb.retention.time=1h")
            // Few queries run at once; the default reserves more memory.
            .arg("--query.max-concurrency=4")
            .arg("--web.max-connections=64")
            .arg("--log.level=info")
            // Scrapes and queries go to loopback only, never through a proxy
            // the environment may name for the package registries.
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting prometheus ({e}): is Debian's `prometheus` package installed? \
                     `cargo xtask test` installs it"
                )
            });
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&self.log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                crate::echo("[prometheus]", &line);
                sink.lock().expect("log lock").push(line);
            }
        });
        let address = self.address;
        let child = self.child.insert(child);
        wait_http_ok(address, "/-/ready", READY_TIMEOUT, || {
            child.try_wait().ok().flatten().map(|s| s.to_string())
        });
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The configuration: scrape and evaluate every second, so a test sees a
/// `rate` within seconds, and read the targets from the `file_sd` file.
fn config(dir: &Path) -> String {
    let targets = targets_file(dir);
    format!(
        "global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: gantry-e2e
    metrics_path: /metrics
    file_sd_configs:
      - files: ['{}']
        refresh_interval: 1s
",
        targets.display()
    )
}

/// A time as the HTTP API takes it: seconds since the epoch, to the
/// millisecond.
fn unix_seconds(time: SystemTime) -> Result<String> {
    let since = time
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?;
    Ok(format!("{:.3}", since.as_secs_f64()))
}

fn targets_file(dir: &Path) -> PathBuf {
    dir.join("targets.json")
}

/// A loopback port that was free a moment ago: the kernel picks it, the
/// listener is closed, and the process that needs it binds it next.
pub fn free_loopback_port() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// The value of a vector result holding exactly one sample (or of a scalar
/// result).
fn single_value(data: &Value) -> Option<f64> {
    let sample = match data["resultType"].as_str()? {
        "vector" => match data["result"].as_array()?.as_slice() {
            [one] => &one["value"],
            _ => return None,
        },
        "scalar" => &data["result"],
        _ => return None,
    };
    // Values come as strings, so that NaN and ±Inf survive JSON.
    sample[1].as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::single_value;
    use serde_json::json;

    #[test]
    fn reads_one_sample_and_nothing_else() {
        let one =
            json!({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "0.25"]}]});
        assert_eq!(single_value(&one), Some(0.25));
        let none = json!({"resultType": "vector", "result": []});
        assert_eq!(single_value(&none), None);
        let two = json!({"resultType": "vector", "result": [
            {"metric": {"a": "1"}, "value": [1.0, "1"]},
            {"metric": {"a": "2"}, "value": [1.0, "2"]},
        ]});
        assert_eq!(single_value(&two), None);
        let scalar = json!({"resultType": "scalar", "result": [1.0, "3"]});
        assert_eq!(single_value(&scalar), Some(3.0));
        let nan =
            json!({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "NaN"]}]});
        assert!(single_value(&nan).is_some_and(f64::is_nan));
    }
}
