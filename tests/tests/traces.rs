//! Traces end to end: gantry-server exports its request spans over OTLP to a
//! real Jaeger on loopback, as a pod does to a cluster's trace backend with
//! the variables the operator sets, and the spans are read back through
//! Jaeger's query API. Each test starts its own Jaeger (memory storage) and
//! server; needs no cluster.
//!
//! The ids a test looks for come from the server's answers (the response's
//! `traceparent`, a problem body's `traceId`, the access log), so each
//! assertion ties something a client or an operator sees to a trace the
//! backend holds.

use std::time::{Duration, SystemTime};

use gantry_e2e::jaeger::{Jaeger, StoredSpan};
use gantry_e2e::server::ServerProcess;
use gantry_e2e::wait_until;
use serde_json::{Value, json};

/// What the operator puts in a `GoServer`'s pods.
const SERVICE: &str = "shop";
const VERSION: &str = "2.1.0";
const REVISION: &str = "shop-0123456789";

const TOKEN: &str = "trace-test-token";

/// A bound on every wait for a span or a log line: a busy machine is slow,
/// a hang fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// OTLP's `SPAN_KIND_SERVER`.
const SERVER: i64 = 2;
/// OTLP's status codes.
const STATUS_UNSET: i64 = 0;
const STATUS_ERROR: i64 = 2;

/// A server exporting to its own Jaeger. Dropped in field order: the
/// server goes before the backend it exports to.
struct Traced {
    server: ServerProcess,
    jaeger: Jaeger,
    client: reqwest::Client,
}

impl Traced {
    async fn start() -> Self {
        let jaeger = Jaeger::start().await;
        let endpoint = jaeger.otlp_endpoint();
        let resource = format!("service.version={VERSION},gantry.revision={REVISION}");
        let server = ServerProcess::start(
            "traced",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_SERVICE_NAME", SERVICE),
                ("OTEL_RESOURCE_ATTRIBUTES", &resource),
                // Each batch leaves within a tenth of a second rather than
                // the default five, so the polls below end soon.
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
                // The access log lines of answers below 500 are at info.
                ("LOG_LEVEL", "info"),
                ("API_TOKENS", TOKEN),
            ],
        );
        Self {
            server,
            jaeger,
            client: gantry_e2e::loopback_client(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.address())
    }

    /// The span the server says it made for a request (the trace and span
    /// ids of its response's `traceparent`), once Jaeger holds it.
    async fn span_of(&self, (trace_id, span_id): &(String, String)) -> StoredSpan {
        self.jaeger
            .wait_for_span(trace_id, span_id, PATIENCE)
            .await
            .unwrap_or_else(|err| panic!("{err:#}"))
    }

    /// The access-log line of the request sent with `x-request-id:
    /// request_id`, once it is written.
    async fn access_log_line(&self, request_id: &str) -> Value {
        wait_until(
            &format!("the access log line of request {request_id}"),
            PATIENCE,
            || async {
                Ok(self.server.lines().iter().find_map(|line| {
                    let line: Value = serde_json::from_str(line).ok()?;
                    let request = request_span(&line)?;
                    let is_access_log = line["status"].is_u64();
                    (is_access_log && request["request_id"] == request_id).then_some(line)
                }))
            },
        )
        .await
        .unwrap_or_else(|err| panic!("{err:#}"))
    }
}

/// The `request` span of a JSON log line, which carries the request's ids.
fn request_span(line: &Value) -> Option<&Value> {
    line["spans"]
        .as_array()?
        .iter()
        .find(|span| span["name"] == "request")
}

/// The trace and span ids of a response's `traceparent`.
fn ids(response: &reqwest::Response) -> (String, String) {
    let (trace_id, span_id, _) = traceparent(response);
    (trace_id, span_id)
}

/// The trace id, span id and flags of a response's `traceparent`.
fn traceparent(response: &reqwest::Response) -> (String, String, String) {
    let header = response
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{} has no traceparent", response.url()));
    match header.split('-').collect::<Vec<_>>()[..] {
        ["00", trace, span, flags] => (trace.to_owned(), span.to_owned(), flags.to_owned()),
        _ => panic!("not a version-00 traceparent: {header}"),
    }
}

/// The resource every span of the server carries.
fn assert_resource(span: &StoredSpan) {
    for (key, value) in [
        ("service.name", SERVICE),
        ("service.version", VERSION),
        ("gantry.revision", REVISION),
    ] {
        assert_eq!(
            span.resource.get(key),
            Some(&json!(value)),
            "resource attribute {key} of span {span:?}"
        );
    }
    assert_eq!(span.scope, "gantry-server", "{span:?}");
}

/// A server span named and attributed as OpenTelemetry's HTTP conventions
/// say: `{method} {route}` with the route's pattern (never the raw path), or
/// the method alone and no `http.route` when no route matched.
fn assert_server_span(span: &StoredSpan, method: &str, route: Option<&str>, status: u16) {
    assert_eq!(span.kind(), SERVER, "{span:?}");
    let attributes = span.attributes();
    assert_eq!(
        attributes.get("http.request.method"),
        Some(&json!(method)),
        "{span:?}"
    );
    assert_eq!(
        attributes.get("http.response.status_code"),
        Some(&json!(status)),
        "{span:?}"
    );
    if let Some(route) = route {
        assert_eq!(span.name(), format!("{method} {route}"), "{span:?}");
        assert_eq!(
            attributes.get("http.route"),
            Some(&json!(route)),
            "{span:?}"
        );
    } else {
        assert_eq!(span.name(), method, "{span:?}");
        assert_eq!(attributes.get("http.route"), None, "{span:?}");
    }
}

// Several threads: starting the server blocks one while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_carry_the_resource_the_route_and_the_status() {
    let started = SystemTime::now();
    let traced = Traced::start().await;
    let client = &traced.client;

    let root = client.get(traced.url("/")).send().await.unwrap();
    assert_eq!(root.status(), 200);
    let created = client
        .post(traced.url("/api/v1/users"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "Ada", "email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created_ids = ids(&created);
    let user: Value = created.json().await.unwrap();
    let id = user["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no user id in {user}"));
    // The raw path holds the id; the span must name the pattern.
    let fetched = client
        .get(traced.url(&format!("/api/v1/users/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);

    let mut trace_ids = Vec::new();
    for (request, method, route, status) in [
        (ids(&root), "GET", "/", 200),
        (created_ids, "POST", "/api/v1/users", 201),
        (ids(&fetched), "GET", "/api/v1/users/{id}", 200),
    ] {
        let span = traced.span_of(&request).await;
        assert_resource(&span);
        assert_server_span(&span, method, Some(route), status);
        // No caller's context: the server's span starts the trace.
        assert_eq!(span.parent_span_id(), "", "{span:?}");
        assert_eq!(span.status().0, STATUS_UNSET, "{span:?}");
        trace_ids.push(span.trace_id().to_owned());
    }

    // Jaeger indexes them under the service the operator names.
    let found = traced.jaeger.find(SERVICE, started).await.unwrap();
    for trace_id in &trace_ids {
        assert!(
            found.iter().any(|span| span.trace_id() == trace_id),
            "a search for service {SERVICE} does not find trace {trace_id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_hold_the_trace_id_of_error_bodies_and_access_log_lines() {
    let traced = Traced::start().await;

    // (path, request id, status, the route the span names, OTLP status)
    let cases = [
        // A route that does not exist: the trace has no route to name, and
        // a 4xx leaves a server span's status unset.
        ("/no/such/page", "trace-test-404", 404, None, STATUS_UNSET),
        // A route that exists, with an id that does not.
        (
            "/api/v1/users/00000000-0000-0000-0000-000000000000",
            "trace-test-404-user",
            404,
            Some("/api/v1/users/{id}"),
            STATUS_UNSET,
        ),
        // A handler bug: the panic guard's 500 marks the span an error.
        (
            "/debug/panic",
            "trace-test-500",
            500,
            Some("/debug/panic"),
            STATUS_ERROR,
        ),
    ];
    for (path, request_id, status, route, otlp_status) in cases {
        let response = traced
            .client
            .get(traced.url(path))
            .bearer_auth(TOKEN)
            .header("x-request-id", request_id)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        let span = traced.span_of(&ids(&response)).await;
        let body: Value = response.json().await.unwrap();
        let body_trace_id = body["traceId"]
            .as_str()
            .unwrap_or_else(|| panic!("no traceId in the body of {path}: {body}"));

        let line = traced.access_log_line(request_id).await;
        assert_eq!(line["status"], status, "{line}");
        let logged_trace_id = request_span(&line).map(|s| &s["trace_id"]);
        assert_eq!(
            logged_trace_id,
            Some(&json!(body_trace_id)),
            "the access log line of {path} names another trace than its body: {line}"
        );

        // The trace the body and the log name is one Jaeger has, and it is
        // this request's.
        assert_eq!(span.trace_id(), body_trace_id, "{path}");
        let stored = traced
            .jaeger
            .trace(body_trace_id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("Jaeger has no trace {body_trace_id} ({path})"));
        assert!(
            stored.iter().any(|s| s.span_id() == span.span_id()),
            "{stored:?}"
        );

        assert_resource(&span);
        assert_server_span(&span, "GET", route, status);
        assert_eq!(span.status().0, otlp_status, "{span:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_continue_the_traceparent_a_client_sends() {
    let traced = Traced::start().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";

    // A caller that did not sample its trace: the server keeps the
    // decision and exports nothing of it.
    let unsampled_trace = "0af7651916cd43dd8448eb211c80319c";
    let unsampled = traced
        .client
        .get(traced.url("/healthz"))
        .header(
            "traceparent",
            format!("00-{unsampled_trace}-b7ad6b7169203331-00"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(unsampled.status(), 200);
    let (continued, _, flags) = traceparent(&unsampled);
    assert_eq!(
        (continued.as_str(), flags.as_str()),
        (unsampled_trace, "00")
    );

    let response = traced
        .client
        .get(traced.url("/api/v1/users"))
        .bearer_auth(TOKEN)
        .header("traceparent", format!("00-{trace_id}-{parent_id}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (answered_trace, answered_span, flags) = traceparent(&response);
    assert_eq!(answered_trace, trace_id);
    assert_eq!(flags, "01");
    assert_ne!(answered_span, parent_id);

    let span = traced
        .span_of(&(answered_trace.clone(), answered_span.clone()))
        .await;
    assert_eq!(span.trace_id(), trace_id);
    assert_eq!(span.parent_span_id(), parent_id, "{span:?}");
    assert_eq!(span.span_id(), answered_span);
    assert_resource(&span);
    assert_server_span(&span, "GET", Some("/api/v1/users"), 200);
    // The caller's span is not the server's to export: the trace holds the
    // server's span alone.
    let stored = traced.jaeger.trace(trace_id).await.unwrap().unwrap();
    assert_eq!(
        stored.iter().map(StoredSpan::span_id).collect::<Vec<_>>(),
        [answered_span.as_str()]
    );

    // Spans leave in the order they end, and Jaeger stores an export before
    // it answers it: with the later, sampled span stored, an exported
    // unsampled one would be there too.
    assert!(
        traced
            .jaeger
            .trace(unsampled_trace)
            .await
            .unwrap()
            .is_none(),
        "the unsampled trace {unsampled_trace} was exported"
    );
}
