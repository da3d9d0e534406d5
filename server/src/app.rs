//! The whole router, built by [`app`] so tests can drive it with `oneshot`.
//!
//! Middleware, outermost first (a request passes them top to bottom, the
//! response bottom to top):
//!
//! 1. trace context: `traceparent` read through OpenTelemetry, the request's
//!    span, `traceparent` returned; `x-request-id` kept or set (to the trace
//!    id), and returned
//! 2. access log: the request's fields (method, route, trace id, request id) on
//!    every line logged while it is served, one line per response, or
//!    status 499 for a request dropped before its response
//! 3. metrics: `http_requests_total`, `http_request_duration_seconds`, in-flight gauge,
//!    `http_requests_cancelled_total`
//! 4. problem bodies: any bare error response becomes `application/problem+json`
//! 5. header size guard: 431 for oversize headers
//! 6. panic guard: a panicking handler becomes a 500 problem
//! 7. timeout: 503 after `REQUEST_TIMEOUT`
//! 8. body limit: 413 past `BODY_LIMIT`
//! 9. compression (gzip, when the client accepts it and the body is over 1 KiB)
//! 10. on `/api` only: bearer auth, then per-client rate limit
//!
//! Static files and probes skip 10.

use std::ops::ControlFlow;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::services::ServeDir;
use tower_http::timeout::TimeoutLayer;

use crate::access_log::AccessLogLayer;
use crate::error::{ApiError, Code, Problem, ProblemBodies, panic_response};
use crate::metrics::Track;
use crate::middleware::{self, Around};
use crate::state::AppState;

/// Requests whose headers add up to more than this are refused with 431.
/// (hyper refuses far larger ones, and more than 100 headers, on its own.)
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Responses with a body of at most this many bytes are sent as they are,
/// even to a client that accepts gzip. Below about a kilobyte compression
/// saves no packet, gzip's header and trailer (18 bytes) make a small JSON
/// body larger (the 52 bytes of `/` become 77), and every compressed
/// response pays for a fresh encoder: about 40 µs of CPU per request on
/// `/`, more than the whole request without it. (Go's gzhttp skips the
/// same sizes by default; tower-http's own default is 32 bytes.)
pub const COMPRESS_ABOVE_BYTES: u64 = 1024;

/// Builds the router with every route and layer.
#[allow(
    clippy::needless_pass_by_value,
    reason = "`app(state)` is the shape tests and main expect"
)]
pub fn app(state: AppState) -> Router {
    let config = state.config.clone();
    let mut router = Router::new()
        .route("/", get(root))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::api::router(&state))
        .nest_service("/static", ServeDir::new(&config.static_dir));
    if config.debug_routes {
        router = router
            .route("/debug/panic", get(debug_panic))
            .route("/debug/sleep", get(debug_sleep));
    }
    // One composite layer instead of one `Router::layer` per middleware:
    // axum boxes each route once per `layer` call. Composed here, every
    // route is boxed once, and no layer clones the ones below it per
    // request (see `crate::middleware`). The first layer listed is the
    // outermost, and still sees the matched route.
    let middleware = tower::ServiceBuilder::new()
        .layer(middleware::layer(state.tracing.clone()))
        .layer(AccessLogLayer::new(config.log_format))
        .layer(middleware::layer(Track(state.metrics.clone())))
        .layer(middleware::layer(ProblemBodies))
        .layer(middleware::layer(HeaderSizeGuard))
        .layer(CatchPanicLayer::custom(panic_response))
        // 408 marks the timeout for `problem_bodies`, which answers 503 with code 5031:
        // the server, not the client, was too slow.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        // The tower-http limit below is the one in force; axum's own default would cap at 2 MB.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(config.body_limit))
        .layer(
            CompressionLayer::new().compress_when(
                SizeAbove::new(COMPRESS_ABOVE_BYTES)
                    .and(NotForContentType::GRPC)
                    .and(NotForContentType::IMAGES)
                    .and(NotForContentType::SSE),
            ),
        );
    router
        .fallback(not_found)
        .with_state(state.clone())
        .layer(middleware)
}

/// 431 before any handler reads oversize headers.
#[derive(Clone, Copy, Debug)]
struct HeaderSizeGuard;

impl Around for HeaderSizeGuard {
    type Carry = ();

    fn before(&self, req: &mut Request) -> ControlFlow<axum::response::Response, ()> {
        let size: usize = req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if size > MAX_HEADER_BYTES {
            return ControlFlow::Break(
                Problem::new(
                    Code::HeadersTooLarge,
                    format!("request headers exceed {MAX_HEADER_BYTES} bytes"),
                )
                .into_response(),
            );
        }
        ControlFlow::Continue(())
    }
}

/// The body of `/`.
#[derive(serde::Serialize)]
struct Hello {
    message: &'static str,
    version: &'static str,
}

async fn root() -> axum::Json<Hello> {
    axum::Json(Hello {
        message: "Hello from gantry-server",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Liveness: the process runs and serves requests. It checks no dependency,
/// so a database outage does not get healthy pods restarted.
async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: not shutting down and the database answers.
async fn readyz(State(state): State<AppState>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if state.is_shutting_down() {
        return Err(ApiError::Unavailable("shutting down"));
    }
    let db = state
        .db_if_connected()
        .ok_or(ApiError::Unavailable("the database is not connected yet"))?;
    match tokio::time::timeout(Duration::from_secs(2), db.ping()).await {
        Ok(Ok(())) => Ok(axum::Json(serde_json::json!({ "status": "ready" }))),
        _ => Err(ApiError::Unavailable("the database does not answer")),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.encode(),
    )
}

async fn not_found() -> ApiError {
    ApiError::new(Code::NotFound, "no such route or file")
}

/// Test-only: a handler bug.
async fn debug_panic() -> &'static str {
    panic!("deliberate panic from /debug/panic")
}

#[derive(Deserialize)]
struct SleepParams {
    ms: u64,
}

/// Test-only: a slow request, for drain and timeout tests.
async fn debug_sleep(
    crate::api::extract::Query(params): crate::api::extract::Query<SleepParams>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if params.ms > 60_000 {
        return Err(ApiError::invalid("ms must be at most 60000"));
    }
    tokio::time::sleep(Duration::from_millis(params.ms)).await;
    Ok(axum::Json(serde_json::json!({ "slept_ms": params.ms })))
}
