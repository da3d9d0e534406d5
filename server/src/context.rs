//! W3C trace context for each request.
//!
//! The outermost middleware reads `traceparent` (or starts a new trace when it
//! is absent or malformed), picks a span id for this server's hop, and makes the
//! result available three ways: as a request extension (for the access-log span
//! and the request id), as a task-local (so an error body built anywhere in the
//! request, including the panic guard, carries the trace id without being
//! handed the request), and as the `traceparent` response header.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::{MakeRequestId, RequestId};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The trace this request belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The caller's span, when a valid `traceparent` came in.
    pub parent_span_id: Option<String>,
    /// This server's span for the request, 16 lowercase hex digits.
    pub span_id: String,
    pub sampled: bool,
}

impl TraceContext {
    /// Continues the caller's trace when `traceparent` is valid, else starts one.
    pub fn from_traceparent(header: Option<&str>) -> Self {
        let span_id = random_hex(8);
        if let Some((trace_id, parent, flags)) = header.and_then(parse_traceparent) {
            return Self {
                trace_id,
                parent_span_id: Some(parent),
                span_id,
                sampled: flags & 1 == 1,
            };
        }
        Self {
            trace_id: random_hex(16),
            parent_span_id: None,
            span_id,
            sampled: true,
        }
    }

    /// The `traceparent` naming this server's span, for the response and
    /// downstream calls.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id,
            self.span_id,
            if self.sampled { "01" } else { "00" }
        )
    }
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// The trace id of the request being served on this task, if any.
pub fn current_trace_id() -> Option<String> {
    CURRENT.try_with(|c| c.trace_id.clone()).ok()
}

/// Middleware: establishes the trace context and returns `traceparent`.
pub async fn trace_context(mut req: Request, next: Next) -> Response {
    let incoming = req
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    let ctx = TraceContext::from_traceparent(incoming);
    req.extensions_mut().insert(ctx.clone());
    let header = HeaderValue::from_str(&ctx.traceparent());
    let mut response = CURRENT.scope(ctx, next.run(req)).await;
    if let Ok(value) = header {
        response.headers_mut().insert(TRACEPARENT.clone(), value);
    }
    response
}

/// Makes the request id when the caller sent none: the trace id, so that one
/// value finds the request in logs whichever header a client kept.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdFromTrace;

impl MakeRequestId for RequestIdFromTrace {
    fn make_request_id<B>(&mut self, request: &axum::http::Request<B>) -> Option<RequestId> {
        let id = request
            .extensions()
            .get::<TraceContext>()
            .map_or_else(|| random_hex(16), |c| c.trace_id.clone());
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// Parses `00-<trace id>-<parent id>-<flags>`; ids that are all zeros are invalid.
fn parse_traceparent(s: &str) -> Option<(String, String, u8)> {
    let mut parts = s.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let is_hex = |p: &str, len: usize| {
        p.len() == len
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    // Version ff is forbidden; a future version may append fields, version 00 may not.
    if !is_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !is_hex(trace_id, 32) || !is_hex(parent, 16) || !is_hex(flags, 2) {
        return None;
    }
    if trace_id.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace_id.to_owned(), parent.to_owned(), flags))
}

/// `bytes` random bytes as lowercase hex, never all zeros.
fn random_hex(bytes: usize) -> String {
    loop {
        let random = uuid::Uuid::new_v4().as_u128().to_le_bytes();
        let hex = random[..bytes]
            .iter()
            .fold(String::with_capacity(bytes * 2), |mut s, b| {
                s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
                s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
                s
            });
        if hex.bytes().any(|b| b != b'0') {
            return hex;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_continued() {
        let ctx = TraceContext::from_traceparent(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(ctx.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert!(ctx.sampled);
        assert_ne!(ctx.span_id, "00f067aa0ba902b7");
        assert!(
            ctx.traceparent()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
    }

    #[test]
    fn malformed_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let ctx = TraceContext::from_traceparent(Some(bad));
            assert!(ctx.parent_span_id.is_none(), "{bad} was accepted");
            assert_eq!(ctx.trace_id.len(), 32);
        }
    }
}
