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
//! span ends when the response is ready, carrying its status (when it is
//! exported). The response's `traceparent` is written from the span's
//! context here, byte for byte what the propagator's `inject` writes, and
//! the same layer keeps or sets `x-request-id`.

use std::ops::ControlFlow;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanContext, SpanKind, Status, TraceId, Tracer as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, Span as SdkSpan};

use crate::metrics::{matched_route, method_label, span_name};
use crate::middleware::Around;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
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
    /// As a header value (hex digits always make one).
    fn header_value(self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(&self.0).ok()
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The trace-context middleware, with the tracer that makes request spans
/// (and exports them when OTLP is on). OpenTelemetry's W3C propagator reads
/// `traceparent`; the request id is kept or set here too (see
/// [`RequestId`]).
#[derive(Clone, Debug)]
pub struct Tracing {
    tracer: SdkTracer,
    /// Whether the spans are exported. Spans that are not still choose the
    /// ids, but get no attributes: nothing would read them.
    exported: bool,
}

impl Tracing {
    pub fn new(tracer: SdkTracer, exported: bool) -> Self {
        Self { tracer, exported }
    }
}

/// What the trace-context middleware carries from the request to its
/// response.
pub struct Started {
    span: SdkSpan,
    exported: bool,
    request_id: RequestId,
}

/// The request's `x-request-id`: the caller's, kept as sent, or, when it
/// sent none, the trace id, so that one value finds the request in logs
/// whichever header a client kept. It is set on the request, for the
/// layers below and the log lines, and returned on the response unless
/// the response already has one.
enum RequestId {
    Sent(HeaderValue),
    FromTrace(TraceIdHex),
}

impl RequestId {
    fn of(req: &mut Request, trace_id: TraceIdHex) -> Self {
        if let Some(sent) = req.headers().get(&X_REQUEST_ID) {
            return Self::Sent(sent.clone());
        }
        if let Some(value) = trace_id.header_value() {
            req.headers_mut().insert(&X_REQUEST_ID, value);
        }
        Self::FromTrace(trace_id)
    }

    fn into_header_value(self) -> Option<HeaderValue> {
        match self {
            Self::Sent(value) => Some(value),
            Self::FromTrace(trace_id) => trace_id.header_value(),
        }
    }
}

/// Starts the request's span; ends it with the response's status and
/// returns `traceparent` and `x-request-id`.
impl Around for Tracing {
    type Carry = Started;

    fn before(&self, req: &mut Request) -> ControlFlow<Response, Started> {
        let parent = TraceContextPropagator::new().extract(&RequestHeaders(req.headers()));
        let method = method_label(req.method());
        let route = matched_route(req.extensions().get::<MatchedPath>(), req.uri().path());
        // OpenTelemetry's HTTP conventions: `{method} {route}`, and the method
        // alone without `http.route` when no route matched. The metrics label
        // `unmatched` is not a route: as `http.route` it would show a trace
        // backend a route the server does not have.
        let name = route.map_or(method, |route| span_name(method, route));
        let mut span = self.tracer.span_builder(name).with_kind(SpanKind::Server);
        if self.exported {
            span = span.with_attributes(
                [
                    Some(KeyValue::new("http.request.method", method)),
                    route.map(|route| KeyValue::new("http.route", route)),
                ]
                .into_iter()
                .flatten(),
            );
        }
        let span = span.start_with_context(&self.tracer, &parent);
        let context = TraceContext::new(span.span_context().clone());
        let request_id = RequestId::of(req, context.trace_id);
        req.extensions_mut().insert(context);
        ControlFlow::Continue(Started {
            span,
            exported: self.exported,
            request_id,
        })
    }

    fn after(started: Started, mut response: Response) -> Response {
        let Started {
            mut span,
            exported,
            request_id,
        } = started;
        if exported {
            let status = response.status();
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            ));
            if status.is_server_error() {
                span.set_status(Status::error(status.to_string()));
            }
        }
        span.end();
        let headers = response.headers_mut();
        write_trace_context(span.span_context(), headers);
        if !headers.contains_key(&X_REQUEST_ID)
            && let Some(value) = request_id.into_header_value()
        {
            headers.insert(&X_REQUEST_ID, value);
        }
        response
    }
}

/// `traceparent` and, when the trace has state, `tracestate`: the headers
/// OpenTelemetry's W3C propagator writes for `span` (a unit test compares
/// them for sampled and unsampled spans, with and without state), without
/// the `format!` of the ids through their `Display` that the propagator
/// makes, about a twentieth of the instructions a request to `/` costs.
fn write_trace_context(span: &SpanContext, headers: &mut HeaderMap) {
    if !span.is_valid() {
        return;
    }
    let mut traceparent = *b"00-00000000000000000000000000000000-0000000000000000-00";
    // 16 and 8 bytes fit 32 and 16 digits exactly.
    let _ = hex::encode_to_slice(span.trace_id().to_bytes(), &mut traceparent[3..35]);
    let _ = hex::encode_to_slice(span.span_id().to_bytes(), &mut traceparent[36..52]);
    if span.trace_flags().is_sampled() {
        traceparent[54] = b'1';
    }
    if let Ok(value) = HeaderValue::from_bytes(&traceparent) {
        headers.insert(&TRACEPARENT, value);
    }
    let state = span.trace_state().header();
    if !state.is_empty()
        && let Ok(state) = HeaderValue::try_from(state)
    {
        headers.insert(&TRACESTATE, state);
    }
}

/// A request's headers as the propagator reads them. Unlike
/// `opentelemetry_http`'s extractor, which takes any header, this one knows
/// the two names the W3C propagator asks for, so no header name is parsed
/// per request.
struct RequestHeaders<'a>(&'a HeaderMap);

impl Extractor for RequestHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = match key {
            "traceparent" => self.0.get(&TRACEPARENT),
            "tracestate" => self.0.get(&TRACESTATE),
            _ => self.0.get(key),
        };
        value.and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::str::FromStr as _;

    use axum::http::HeaderMap;
    use opentelemetry::Context;
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    #[test]
    fn trace_context_headers_are_the_propagators() {
        let states = [
            TraceState::NONE,
            TraceState::from_str("vendor=abc").unwrap(),
            TraceState::from_str("a=1,b=2").unwrap(),
        ];
        let ids = [
            (1_u128, 1_u64),
            (
                0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
                0x00f0_67aa_0ba9_02b7,
            ),
            (u128::MAX, u64::MAX),
        ];
        for (trace, span) in ids {
            for flags in [
                TraceFlags::SAMPLED,
                TraceFlags::NOT_SAMPLED,
                TraceFlags::new(0xff),
            ] {
                for state in &states {
                    let span = SpanContext::new(
                        TraceId::from(trace),
                        SpanId::from(span),
                        flags,
                        false,
                        state.clone(),
                    );
                    let mut theirs = HashMap::new();
                    TraceContextPropagator::new().inject_context(
                        &Context::new().with_remote_span_context(span.clone()),
                        &mut theirs,
                    );
                    // The propagator writes an empty `tracestate`; the
                    // server leaves it out.
                    theirs.retain(|_, value: &mut String| !value.is_empty());
                    let mut ours = HeaderMap::new();
                    super::write_trace_context(&span, &mut ours);
                    let ours: HashMap<String, String> = ours
                        .iter()
                        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
                        .collect();
                    assert_eq!(ours, theirs);
                }
            }
        }
        // An invalid span context writes nothing, as the propagator.
        let mut ours = HeaderMap::new();
        super::write_trace_context(&SpanContext::empty_context(), &mut ours);
        assert!(ours.is_empty());
    }

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
