//! A real Jaeger as a process on loopback, for the trace tests: gantry-server
//! exports its spans to Jaeger's OTLP/HTTP receiver, and the tests read them
//! back through Jaeger's query API (`/api/v3`, OTLP's JSON shape), so what
//! is checked is what a trace backend stored, not bytes a stand-in captured.
//!
//! The binary is the one `cargo xtask test` builds from `tools/jaeger` into
//! its cache and names in `GANTRY_JAEGER`. It runs with the committed
//! `tools/jaeger/config.yaml` (memory storage, nothing listening but the
//! OTLP receiver and the query API), each listener given a free loopback
//! port through the variables that file reads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::operator::root;
use crate::prometheus::free_loopback_port;

/// How long Jaeger may take to accept OTLP and answer queries: under a
/// second on an idle machine, longer while the suite compiles.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The Jaeger binary named by `GANTRY_JAEGER`, or a panic that says how to
/// get one.
pub fn binary() -> PathBuf {
    let binary = std::env::var_os("GANTRY_JAEGER")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .expect(
            "GANTRY_JAEGER is not set: it names the Jaeger binary the trace tests run. \
             `cargo xtask test` builds it (once, cached) from tools/jaeger and sets it; by \
             hand, `go build -o <dir>/ github.com/jaegertracing/jaeger/cmd/jaeger` in \
             tools/jaeger and export GANTRY_JAEGER=<dir>/jaeger",
        );
    assert!(
        binary.is_file(),
        "GANTRY_JAEGER names {}, which is not a file",
        binary.display()
    );
    binary
}

/// A running Jaeger with in-memory storage. Killed on drop, its traces
/// with it.
pub struct Jaeger {
    child: Child,
    otlp: SocketAddr,
    query: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    client: reqwest::Client,
}

impl Jaeger {
    /// Starts Jaeger on free loopback ports and waits until its OTLP
    /// receiver accepts an (empty) export and its query API answers.
    pub async fn start() -> Self {
        let binary = binary();
        let otlp = free_loopback_port();
        let query = free_loopback_port();
        let query_grpc = free_loopback_port();
        let config = root().join("tools/jaeger/config.yaml");
        let mut child = Command::new(&binary)
            .arg("--config")
            .arg(&config)
            .env("GANTRY_JAEGER_OTLP_HTTP", otlp.to_string())
            .env("GANTRY_JAEGER_QUERY_HTTP", query.to_string())
            .env("GANTRY_JAEGER_QUERY_GRPC", query_grpc.to_string())
            // Nothing it does goes beyond loopback, and nothing of it may go
            // through a proxy the environment names for package downloads.
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let log = crate::capture_output(&mut child, "[jaeger]");
        let mut jaeger = Self {
            child,
            otlp,
            query,
            log,
            client: crate::loopback_client(),
        };
        jaeger.wait_ready().await;
        jaeger
    }

    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://{}", self.otlp)
    }

    /// The base URL of the query API, `http://127.0.0.1:PORT`.
    pub fn query_url(&self) -> String {
        format!("http://{}", self.query)
    }

    /// Its log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    async fn wait_ready(&mut self) {
        let export = format!("{}/v1/traces", self.otlp_endpoint());
        let services = format!("{}/api/v3/services", self.query_url());
        let client = self.client.clone();
        let child = &mut self.child;
        let ready = crate::wait_until(
            "Jaeger to accept OTLP and answer queries",
            READY_TIMEOUT,
            || {
                let exited = child.try_wait().ok().flatten();
                let (client, export, services) = (&client, &export, &services);
                async move {
                    if let Some(status) = exited {
                        return Ok(Some(Err(status)));
                    }
                    let accepted = client
                        .post(export)
                        .header("content-type", "application/x-protobuf")
                        .body(Vec::new())
                        .send()
                        .await
                        .map_err(|e| format!("OTLP receiver: {e}"))?;
                    if !accepted.status().is_success() {
                        return Err(format!("OTLP receiver: {}", accepted.status()));
                    }
                    let answered = client
                        .get(services)
                        .send()
                        .await
                        .map_err(|e| format!("query API: {e}"))?;
                    if !answered.status().is_success() {
                        return Err(format!("query API: {}", answered.status()));
                    }
                    Ok(Some(Ok(())))
                }
            },
        )
        .await;
        match ready {
            Ok(Ok(())) => {}
            Ok(Err(status)) => panic!(
                "Jaeger exited ({status}) before it was ready; its log:\n{}",
                self.log().join("\n")
            ),
            Err(err) => panic!("{err:#}; Jaeger's log:\n{}", self.log().join("\n")),
        }
    }

    /// The spans of one trace as Jaeger stored them (`raw_traces`: without
    /// the adjustments its UI applies); `None` while Jaeger has none.
    pub async fn trace(&self, trace_id: &str) -> Result<Option<Vec<StoredSpan>>> {
        let url = format!(
            "{}/api/v3/traces/{trace_id}?raw_traces=true",
            self.query_url()
        );
        self.get_spans(&url).await
    }

    /// The spans of every trace of `service` that started after `since`.
    pub async fn find(&self, service: &str, since: SystemTime) -> Result<Vec<StoredSpan>> {
        // A minute past now covers a clock read a moment before the spans'.
        let until = SystemTime::now() + Duration::from_secs(60);
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v3/traces", self.query_url()),
            [
                ("query.service_name", service.to_owned()),
                (
                    "query.start_time_min",
                    humantime::format_rfc3339_nanos(since).to_string(),
                ),
                (
                    "query.start_time_max",
                    humantime::format_rfc3339_nanos(until).to_string(),
                ),
                // Jaeger's search wants a bound; a test makes far fewer.
                ("query.num_traces", "1000".to_owned()),
                ("query.raw_traces", "true".to_owned()),
            ],
        )?;
        Ok(self.get_spans(url.as_str()).await?.unwrap_or_default())
    }

    /// Polls until trace `trace_id` holds the span `span_id`, for at most
    /// `timeout`: spans reach Jaeger in the exporter's next batch. The error
    /// says what Jaeger last had.
    pub async fn wait_for_span(
        &self,
        trace_id: &str,
        span_id: &str,
        timeout: Duration,
    ) -> Result<StoredSpan> {
        let what = format!("Jaeger to hold span {span_id} of trace {trace_id}");
        crate::wait_until(&what, timeout, || async {
            match self.trace(trace_id).await {
                Ok(Some(spans)) => {
                    let ids: Vec<&str> = spans.iter().map(StoredSpan::span_id).collect();
                    let seen = format!("spans {ids:?}");
                    Ok(Some(
                        spans
                            .into_iter()
                            .find(|span| span.span_id() == span_id)
                            .ok_or(seen)?,
                    ))
                }
                Ok(None) => Err("no such trace".to_owned()),
                Err(err) => Err(format!("{err:#}")),
            }
        })
        .await
    }

    /// A GET of the query API answering a `TracesData` shape; `None` for a
    /// 404 (Jaeger's answer when no trace matches).
    async fn get_spans(&self, url: &str) -> Result<Option<Vec<StoredSpan>>> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("reading the answer to GET {url} ({status})"))?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {body}");
        }
        Ok(Some(StoredSpan::all(&body["result"])))
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One span as the query API returns it, with the resource it came under.
#[derive(Clone, Debug)]
pub struct StoredSpan {
    /// The resource's attributes, values as plain JSON.
    pub resource: BTreeMap<String, Value>,
    /// The name of the instrumentation scope (the tracer).
    pub scope: String,
    /// The span in OTLP's JSON shape (ids in hex).
    pub span: Value,
}

impl StoredSpan {
    /// Every span of a `TracesData` (`resourceSpans` → `scopeSpans` →
    /// `spans`).
    fn all(traces: &Value) -> Vec<Self> {
        let mut all = Vec::new();
        for resource_spans in array(&traces["resourceSpans"]) {
            let resource = attributes(&resource_spans["resource"]["attributes"]);
            for scope_spans in array(&resource_spans["scopeSpans"]) {
                let scope = scope_spans["scope"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                for span in array(&scope_spans["spans"]) {
                    all.push(Self {
                        resource: resource.clone(),
                        scope: scope.clone(),
                        span: span.clone(),
                    });
                }
            }
        }
        all
    }

    pub fn trace_id(&self) -> &str {
        self.span["traceId"].as_str().unwrap_or_default()
    }

    pub fn span_id(&self) -> &str {
        self.span["spanId"].as_str().unwrap_or_default()
    }

    /// Empty for a root span.
    pub fn parent_span_id(&self) -> &str {
        self.span["parentSpanId"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.span["name"].as_str().unwrap_or_default()
    }

    /// OTLP's `SpanKind` number (2 is `SERVER`).
    pub fn kind(&self) -> i64 {
        self.span["kind"].as_i64().unwrap_or_default()
    }

    /// OTLP's status code (0 unset, 1 ok, 2 error) and message.
    pub fn status(&self) -> (i64, &str) {
        let status = &self.span["status"];
        (
            status["code"].as_i64().unwrap_or_default(),
            status["message"].as_str().unwrap_or_default(),
        )
    }

    /// The span's attributes, values as plain JSON.
    pub fn attributes(&self) -> BTreeMap<String, Value> {
        attributes(&self.span["attributes"])
    }
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// OTLP's `[{key, value: AnyValue}]` as a map of plain JSON values:
/// `{"stringValue": "a"}` is `"a"`, `{"intValue": "200"}` (64-bit integers
/// are strings in OTLP's JSON) is `200`.
fn attributes(list: &Value) -> BTreeMap<String, Value> {
    array(list)
        .iter()
        .filter_map(|kv| Some((kv["key"].as_str()?.to_owned(), any_value(&kv["value"]))))
        .collect()
}

fn any_value(value: &Value) -> Value {
    if let Some(s) = value.get("stringValue") {
        return s.clone();
    }
    if let Some(i) = value.get("intValue") {
        return match i {
            Value::String(s) => s.parse::<i64>().map_or_else(|_| i.clone(), Value::from),
            _ => i.clone(),
        };
    }
    for kind in ["boolValue", "doubleValue"] {
        if let Some(v) = value.get(kind) {
            return v.clone();
        }
    }
    value.clone()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::StoredSpan;

    #[test]
    fn spans_are_read_with_their_resource_and_plain_attribute_values() {
        let traces = json!({"resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "shop"}},
            ]},
            "scopeSpans": [{
                "scope": {"name": "gantry-server"},
                "spans": [{
                    "traceId": "1af7651916cd43dd8448eb211c80319c",
                    "spanId": "b0ee9a41992fb48f",
                    "parentSpanId": "b7ad6b7169203331",
                    "name": "GET /healthz",
                    "kind": 2,
                    "attributes": [
                        {"key": "http.route", "value": {"stringValue": "/healthz"}},
                        {"key": "http.response.status_code", "value": {"intValue": "200"}},
                    ],
                    "status": {"code": 2, "message": "500 Internal Server Error"},
                }],
            }],
        }]});
        let spans = StoredSpan::all(&traces);
        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        assert_eq!(span.resource["service.name"], "shop");
        assert_eq!(span.scope, "gantry-server");
        assert_eq!(span.trace_id(), "1af7651916cd43dd8448eb211c80319c");
        assert_eq!(span.span_id(), "b0ee9a41992fb48f");
        assert_eq!(span.parent_span_id(), "b7ad6b7169203331");
        assert_eq!(span.name(), "GET /healthz");
        assert_eq!(span.kind(), 2);
        assert_eq!(span.status(), (2, "500 Internal Server Error"));
        let attributes = span.attributes();
        assert_eq!(attributes["http.route"], "/healthz");
        assert_eq!(attributes["http.response.status_code"], 200);
        assert!(StoredSpan::all(&json!({})).is_empty());
    }
}
