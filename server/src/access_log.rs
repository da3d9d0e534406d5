//! The access log: one line per response, and the request's own fields on
//! every line logged while it is served.
//!
//! [`AccessLogLayer`] gives each request a [`RequestFields`] (method, route,
//! trace id, request id) for as long as its future runs, in a task-local
//! rather than a tracing span: the JSON format ([`crate::log_output`])
//! writes them first in a line's `spans`, as the span named `request`,
//! exactly where and as a tracing span with those fields would appear. A
//! tracing span per request costs the registry's slot, the span's rendered
//! fields on the heap, and an enter and exit through the dispatcher at
//! every poll of every layer below; measured, about a tenth of the CPU a
//! request to `/` costs, for fields known when the request arrives and
//! never changed. The text format shows spans through tracing-subscriber's
//! own formatter, so for it the layer opens the same fields as a real span.
//!
//! When the response is ready the layer logs `request finished` (INFO) with
//! the status and latency, or `request failed` (ERROR) with the logged
//! cause for a 5xx. A request dropped before its response was ready (the
//! client closed the connection, or the shutdown's grace period ended and
//! the server let it go) logs `request cancelled` (INFO) with status 499,
//! as nginx logs a client that went away, and its latency so far: without
//! it such a request left no line at all.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::{HeaderValue, Method, Request, Response};
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};
use tracing::Span;
use tracing::instrument::{Instrument as _, Instrumented};

use crate::config::LogFormat;
use crate::context::{TraceContext, TraceIdHex, X_REQUEST_ID};
use crate::error::ErrorDetail;
use crate::metrics::route_label;

tokio::task_local! {
    static REQUEST: RequestFields;
}

/// What every line logged while a request is served says about it.
#[derive(Debug)]
pub struct RequestFields {
    pub method: Method,
    /// The route label: the matched pattern, or `unmatched`.
    pub route: &'static str,
    /// Empty only for a request that bypassed the trace-context layer.
    pub trace_id: Option<TraceIdHex>,
    /// `x-request-id` as sent or set; not text, it is logged as empty.
    pub request_id: Option<HeaderValue>,
}

impl RequestFields {
    fn of<B>(req: &Request<B>) -> Self {
        Self {
            method: req.method().clone(),
            route: route_label(req.extensions().get::<MatchedPath>(), req.uri().path()),
            trace_id: req
                .extensions()
                .get::<TraceContext>()
                .map(TraceContext::trace_id_hex),
            request_id: req.headers().get(&X_REQUEST_ID).cloned(),
        }
    }

    /// Runs `future` as the serving of this request: every line it logs
    /// carries these fields.
    pub fn scope<F: Future>(self, future: F) -> TaskLocalFuture<Self, F> {
        REQUEST.scope(self, future)
    }

    pub fn trace_id(&self) -> &str {
        self.trace_id.as_ref().map_or("", TraceIdHex::as_str)
    }

    pub fn request_id(&self) -> &str {
        self.request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The same fields as a tracing span. Its level is ERROR so that it
    /// exists whatever `LOG_LEVEL` is: a span filtered out would take the
    /// trace id off every line logged inside the request.
    fn span(&self) -> Span {
        tracing::error_span!(
            "request",
            method = self.method.as_str(),
            route = self.route,
            trace_id = self.trace_id(),
            request_id = self.request_id(),
        )
    }
}

/// Calls `f` with the fields of the request being served on this task, if
/// any.
pub fn with_current<R>(f: impl FnOnce(&RequestFields) -> R) -> Option<R> {
    REQUEST.try_with(f).ok()
}

/// The access-log middleware; see the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct AccessLogLayer {
    /// Also open a tracing span with the request's fields.
    span: bool,
}

impl AccessLogLayer {
    pub fn new(format: LogFormat) -> Self {
        Self {
            span: format == LogFormat::Text,
        }
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog {
            inner,
            span: self.span,
        }
    }
}

#[derive(Clone, Debug)]
pub struct AccessLog<S> {
    inner: S,
    span: bool,
}

impl<S, B, R> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = TaskLocalFuture<RequestFields, Instrumented<Logged<S::Future>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let fields = RequestFields::of(&req);
        let span = if self.span {
            fields.span()
        } else {
            Span::none()
        };
        let unanswered = Unanswered {
            start: Instant::now(),
            answered: false,
        };
        // Inside the span, as the layers below would be polled: the text
        // format shows their events under it. (Their `call`s log nothing
        // in this server, so the JSON format's fields need not be set yet.)
        let inner = span.in_scope(|| self.inner.call(req));
        fields.scope(Logged { inner, unanswered }.instrument(span))
    }
}

pin_project_lite::pin_project! {
    /// The inner response future, and the access-log line when it is ready.
    pub struct Logged<F> {
        #[pin]
        inner: F,
        // After `inner`, so dropped after it: the layers below have let
        // the request go (the metrics counted it) before its line is logged.
        unanswered: Unanswered,
    }
}

/// A request whose response is not ready yet: dropped so, it logs
/// `request cancelled`. Dropped inside the request's task-local fields
/// and span (tokio and tracing drop the futures they wrap inside them), so
/// the line carries the request's fields like any other.
#[derive(Debug)]
struct Unanswered {
    start: Instant,
    answered: bool,
}

impl Unanswered {
    fn latency_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if !self.answered {
            let latency_ms = self.latency_ms();
            tracing::info!(status = 499, latency_ms, "request cancelled");
        }
    }
}

impl<F, R, E> Future for Logged<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        this.unanswered.answered = true;
        if let Ok(response) = &result {
            log_response(response, this.unanswered.latency_ms());
        }
        Poll::Ready(result)
    }
}

/// The access-log line: status and latency, and for a 5xx the logged cause.
fn log_response<R>(response: &Response<R>, latency_ms: f64) {
    let status = response.status().as_u16();
    if response.status().is_server_error() {
        let error = response
            .extensions()
            .get::<ErrorDetail>()
            .map_or("", |d| &*d.0);
        tracing::error!(status, latency_ms, error, "request failed");
    } else {
        tracing::info!(status, latency_ms, "request finished");
    }
}
