//! W3C trace context for each request, through OpenTelemetry.
//!
//! The outermost middleware reads `traceparent` with OpenTelemetry's W3C
//! propagator and starts this server's span for the request with the SDK
//! tracer, which continues the caller's trace or starts a new one. The SDK
//! chooses every trace and span id, so there is one source of ids: the span
//! that OTLP exports (when export is on) is the one named by the
//! `traceparent` response header, the `trace_id` of the log lines, the
//! default `x-request-id` and the `traceId` of problem bodies. The span's
//! context travels inside the request as a [`TraceContext`] extension; the
//! span ends when the response is ready, carrying its status.

use std::ops::ControlFlow;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceId, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, Span as SdkSpan};
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::metrics::{matched_route, method_label, span_name};
use crate::middleware::Around;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// This server's span for the request, as the rest of the stack sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceContext {
    span: SpanContext,
    /// The trace id in hex, written once: the span, the default request id
    /// and problem bodies all carry it.
    trace_id: TraceIdHex,
}

impl TraceContext {
    fn new(span: SpanContext) -> Self {
        let trace_id = TraceIdHex::from(span.trace_id());
        Self { span, trace_id }
    }

    /// 32 lowercase hex digits, as OpenTelemetry writes them.
    pub fn trace_id(&self) -> &str {
        self.trace_id.as_str()
    }

    /// The same, as a value to keep.
    pub fn trace_id_hex(&self) -> TraceIdHex {
        self.trace_id
    }
}

/// A trace id as 32 lowercase hex digits, kept without a heap allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceIdHex([u8; 32]);

impl From<TraceId> for TraceIdHex {
    fn from(id: TraceId) -> Self {
        let mut hex = [0; 32];
        // 16 bytes always fit 32 digits.
        let _ = hex::encode_to_slice(id.to_bytes(), &mut hex);
        Self(hex)
    }
}

impl TraceIdHex {
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The trace-context middleware, with the tracer that makes request spans
/// (and exports them when OTLP is on). `traceparent` is read and written by
/// OpenTelemetry's W3C propagator.
#[derive(Clone, Debug)]
pub struct Tracing {
    tracer: SdkTracer,
}

impl Tracing {
    pub fn new(tracer: SdkTracer) -> Self {
        Self { tracer }
    }
}

/// Starts the request's span; ends it with the response's status and
/// returns `traceparent`.
impl Around for Tracing {
    /// The request's span, to end with its status.
    type Carry = SdkSpan;

    fn before(&self, req: &mut Request) -> ControlFlow<Response, SdkSpan> {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(req.headers()));
        let method = method_label(req.method());
        let route = matched_route(req.extensions().get::<MatchedPath>(), req.uri().path());
        // OpenTelemetry's HTTP conventions: `{method} {route}`, and the method
        // alone without `http.route` when no route matched. The metrics label
        // `unmatched` is not a route: as `http.route` it would show a trace
        // backend a route the server does not have.
        let name = route.map_or(method, |route| span_name(method, route));
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(
                [
                    Some(KeyValue::new("http.request.method", method)),
                    route.map(|route| KeyValue::new("http.route", route)),
                ]
                .into_iter()
                .flatten(),
            )
            .start_with_context(&self.tracer, &parent);
        req.extensions_mut()
            .insert(TraceContext::new(span.span_context().clone()));
        ControlFlow::Continue(span)
    }

    fn after(mut span: SdkSpan, mut response: Response) -> Response {
        let status = response.status();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            span.set_status(Status::error(status.to_string()));
        }
        let context = span.span_context().clone();
        span.end();
        let headers = response.headers_mut();
        TraceContextPropagator::new().inject_context(
            &Context::new().with_remote_span_context(context),
            &mut HeaderInjector(headers),
        );
        // The propagator writes `tracestate` even when the trace has none.
        if headers.get(&TRACESTATE).is_some_and(HeaderValue::is_empty) {
            headers.remove(&TRACESTATE);
        }
        response
    }
}

/// Makes the request id when the caller sent none: the trace id, so that one
/// value finds the request in logs whichever header a client kept.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdFromTrace;

impl MakeRequestId for RequestIdFromTrace {
    fn make_request_id<B>(&mut self, request: &axum::http::Request<B>) -> Option<RequestId> {
        let trace = request.extensions().get::<TraceContext>()?;
        HeaderValue::from_str(trace.trace_id())
            .ok()
            .map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    #[test]
    fn the_trace_id_reads_as_opentelemetry_writes_it() {
        for id in [1_u128, 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, u128::MAX] {
            let span = SpanContext::new(
                TraceId::from(id),
                SpanId::from(7_u64),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            );
            let context = super::TraceContext::new(span.clone());
            assert_eq!(context.trace_id(), span.trace_id().to_string());
        }
    }
}
