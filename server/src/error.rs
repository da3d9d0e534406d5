//! Errors as `application/problem+json` (RFC 9457).
//!
//! Handlers return [`ApiError`]; its `IntoResponse` builds a [`Problem`] body
//! and has no side effects. The cause of a 5xx travels to the access log in a
//! response extension ([`ErrorDetail`]) and never into the body. Responses
//! made by middleware that knows nothing of problems (timeouts, 405s, the
//! body limit, a 404 from the file server) are rewritten by
//! [`problem_bodies`], so no route answers a bare text error. The same
//! middleware writes the request's trace id into every problem: a problem is
//! built where the request is not at hand, so its response carries the
//! [`Problem`] as an extension and the middleware, which sees the request's
//! [`TraceContext`], renders the final body.

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::context::{TraceContext, TraceIdHex};
use crate::middleware::Around;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// The documented business codes. The hundreds match the HTTP status; the
/// last digit tells apart causes that share a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 4000: a request the server cannot read (bad query string, bad header).
    BadRequest,
    /// 4001: well-formed input that fails validation (wrong type, bad email, bad id).
    InvalidInput,
    /// 4002: a JSON body that does not parse.
    MalformedJson,
    /// 4010: missing or wrong bearer token.
    Unauthorized,
    /// 4040: no such route or file.
    NotFound,
    /// 4041: no user with that id.
    UserNotFound,
    /// 4050: the route exists, the method does not.
    MethodNotAllowed,
    /// 4090: the email is already taken.
    EmailTaken,
    /// 4130: body larger than `BODY_LIMIT`.
    PayloadTooLarge,
    /// 4150: a body that is not `application/json`.
    UnsupportedMediaType,
    /// 4290: per-client rate limit exceeded.
    RateLimited,
    /// 4310: request headers too large.
    HeadersTooLarge,
    /// 5000: a bug or an unexpected failure; details are in the log only.
    Internal,
    /// 5030: a dependency (the database) is not reachable yet, or the server is stopping.
    Unavailable,
    /// 5031: the request took longer than `REQUEST_TIMEOUT`.
    Timeout,
}

impl Code {
    pub fn number(self) -> u16 {
        match self {
            Self::BadRequest => 4000,
            Self::InvalidInput => 4001,
            Self::MalformedJson => 4002,
            Self::Unauthorized => 4010,
            Self::NotFound => 4040,
            Self::UserNotFound => 4041,
            Self::MethodNotAllowed => 4050,
            Self::EmailTaken => 4090,
            Self::PayloadTooLarge => 4130,
            Self::UnsupportedMediaType => 4150,
            Self::RateLimited => 4290,
            Self::HeadersTooLarge => 4310,
            Self::Internal => 5000,
            Self::Unavailable => 5030,
            Self::Timeout => 5031,
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest | Self::InvalidInput | Self::MalformedJson => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound | Self::UserNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::EmailTaken => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable | Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The last part of the problem `type` URI.
    fn slug(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::InvalidInput => "invalid-input",
            Self::MalformedJson => "malformed-json",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not-found",
            Self::UserNotFound => "user-not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::EmailTaken => "email-taken",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::RateLimited => "rate-limited",
            Self::HeadersTooLarge => "headers-too-large",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
        }
    }

    /// The code a bare error response of `status` stands for.
    fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => Self::Unauthorized,
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::TOO_MANY_REQUESTS => Self::RateLimited,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Self::HeadersTooLarge,
            StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable,
            // tower-http's timeout answers 408 by default; this server is told to use 503.
            StatusCode::REQUEST_TIMEOUT => Self::Timeout,
            s if s.is_client_error() => Self::BadRequest,
            _ => Self::Internal,
        }
    }
}

/// The RFC 9457 body every error carries.
#[derive(Clone, Debug, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind (the HTTP reason phrase).
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// The business code (see the error-code table in the documentation).
    pub code: u16,
    /// What went wrong with this request, safe to show a client.
    pub message: String,
    /// When the error was produced (RFC 3339).
    pub timestamp: String,
    /// The request's trace id, as in `traceparent` and the log line; filled
    /// in by [`problem_bodies`].
    pub trace_id: String,
}

impl Problem {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        let status = code.status();
        Self {
            kind: format!("https://gantry.dev/problems/{}", code.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            code: code.number(),
            message: message.into(),
            timestamp: now_rfc3339(),
            trace_id: String::new(),
        }
    }
}

impl IntoResponse for Problem {
    /// A complete problem response; [`problem_bodies`] renders it again with
    /// the trace id from the [`Problem`] extension.
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            body,
        )
            .into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// What the access log should say about a failed request: the cause that
/// the client is not shown.
#[derive(Clone, Debug)]
pub struct ErrorDetail(pub Arc<str>);

/// The error every handler returns.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Client {
        code: Code,
        message: Cow<'static, str>,
    },
    #[error("database error")]
    Database(#[source] crate::db::Error),
    #[error("{0}")]
    Unavailable(&'static str),
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    pub fn new(code: Code, message: impl Into<Cow<'static, str>>) -> Self {
        Self::Client {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::InvalidInput, message)
    }
}

impl From<crate::db::Error> for ApiError {
    fn from(err: crate::db::Error) -> Self {
        Self::Database(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Client { code, message } => Problem::new(code, message).into_response(),
            Self::Unavailable(what) => Problem::new(Code::Unavailable, what).into_response(),
            Self::Database(err) => {
                let mut response = Problem::new(
                    Code::Internal,
                    "internal error; see the server log for this trace id",
                )
                .into_response();
                response
                    .extensions_mut()
                    .insert(ErrorDetail(error_chain(&err).into()));
                response
            }
        }
    }
}

/// `err: cause: cause`, for the log.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The panic guard's response: a 500 problem; the panic text goes to the log
/// through [`ErrorDetail`] and never to the client.
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature `CatchPanicLayer::custom` takes"
)]
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let text = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    let mut response = Problem::new(
        Code::Internal,
        "internal error; see the server log for this trace id",
    )
    .into_response();
    response
        .extensions_mut()
        .insert(ErrorDetail(format!("handler panicked: {text}").into()));
    response
}

/// Middleware: every problem gets the request's trace id, and any error
/// response that is not already a problem becomes one, keeping its status
/// and headers (`Allow`, `Retry-After`, ...).
#[derive(Clone, Copy, Debug)]
pub struct ProblemBodies;

impl Around for ProblemBodies {
    /// The request's trace id, as its `TraceContext` already has it in hex:
    /// copied into a string only for the responses that are problems.
    type Carry = Option<TraceIdHex>;

    fn before(&self, req: &mut Request) -> ControlFlow<Response, Option<TraceIdHex>> {
        ControlFlow::Continue(
            req.extensions()
                .get::<TraceContext>()
                .map(TraceContext::trace_id_hex),
        )
    }

    fn after(trace: Option<TraceIdHex>, response: Response) -> Response {
        problem_body(trace, response)
    }
}

fn problem_body(trace: Option<TraceIdHex>, mut response: Response) -> Response {
    let trace_id = || trace.as_ref().map_or("", TraceIdHex::as_str).to_owned();
    if let Some(mut problem) = response.extensions_mut().remove::<Problem>() {
        problem.trace_id = trace_id();
        let (parts, _) = response.into_parts();
        return render(parts, &problem);
    }
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let code = Code::for_status(status);
    let message = match code {
        Code::NotFound => "no such route or file",
        Code::MethodNotAllowed => "method not allowed on this route; see the Allow header",
        Code::PayloadTooLarge => "request body larger than the limit",
        Code::Timeout => "request took longer than the server's timeout",
        Code::HeadersTooLarge => "request headers too large",
        _ => status.canonical_reason().unwrap_or("error"),
    };
    let mut problem = Problem::new(code, message);
    problem.trace_id = trace_id();
    // Keep the status the middleware chose (a 408 stays visible as a timeout code only).
    if code == Code::Timeout {
        parts.status = StatusCode::SERVICE_UNAVAILABLE;
        problem.status = parts.status.as_u16();
        "Service Unavailable".clone_into(&mut problem.title);
    } else {
        problem.status = status.as_u16();
        status
            .canonical_reason()
            .unwrap_or("Error")
            .clone_into(&mut problem.title);
    }
    render(parts, &problem)
}

/// `problem` as the body of a response with `parts`' status and headers. An
/// earlier body may have been compressed or had another length: both
/// headers go.
fn render(mut parts: axum::http::response::Parts, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_agree_with_their_status() {
        for code in [
            Code::BadRequest,
            Code::InvalidInput,
            Code::MalformedJson,
            Code::Unauthorized,
            Code::NotFound,
            Code::UserNotFound,
            Code::MethodNotAllowed,
            Code::EmailTaken,
            Code::PayloadTooLarge,
            Code::UnsupportedMediaType,
            Code::RateLimited,
            Code::HeadersTooLarge,
            Code::Internal,
            Code::Unavailable,
            Code::Timeout,
        ] {
            assert_eq!(code.number() / 10, code.status().as_u16(), "{code:?}");
        }
    }

    #[test]
    fn a_problem_has_every_member() {
        let value = serde_json::to_value(Problem::new(Code::InvalidInput, "bad name")).unwrap();
        for member in [
            "type",
            "title",
            "status",
            "code",
            "message",
            "timestamp",
            "traceId",
        ] {
            assert!(value.get(member).is_some(), "{member} missing in {value}");
        }
        assert_eq!(value["code"], 4001);
        assert_eq!(value["status"], 400);
        let timestamp = value["timestamp"].as_str().unwrap();
        time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
            .unwrap();
    }
}
