//! axum's extractors, with their rejections turned into problems.
//!
//! axum answers a bad body, query or path with a plain-text 4xx; these
//! newtypes are derived `via` axum's own extractors and change only the
//! rejection, so every bad input gets the documented code and handlers take
//! the plain value.

use axum::extract::path::ErrorKind;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;

use crate::error::{ApiError, Code};

/// `axum::Json`, rejecting with 4001 (wrong shape), 4002 (not JSON), 4130 or 4150.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// `axum::extract::Query`, rejecting with 4001.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// `axum::extract::Path`, rejecting with 4001.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => ApiError::invalid(e.body_text()),
            JsonRejection::JsonSyntaxError(e) => ApiError::new(Code::MalformedJson, e.body_text()),
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                Code::UnsupportedMediaType,
                "the body must be JSON with Content-Type: application/json",
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(Code::PayloadTooLarge, "request body larger than the limit")
            }
            other => ApiError::new(Code::BadRequest, other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::invalid(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        // A parameter type's own message (such as "id must be a UUID") says
        // more than axum's "Invalid URL" wrapper around it.
        if let PathRejection::FailedToDeserializePathParams(e) = &rejection
            && let ErrorKind::Message(message) = e.kind()
        {
            return ApiError::invalid(message.clone());
        }
        ApiError::invalid(rejection.body_text())
    }
}
