//! Bearer-token authentication for `/api`.
//!
//! Tokens come from `API_TOKENS` or `API_TOKENS_FILE`. With none configured
//! every request is refused: a server deployed without its secret fails
//! closed. Comparison takes the same time wherever the first differing byte
//! is, so response timing tells nothing about a token's prefix.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{Code, Problem};
use crate::state::AppState;

/// Middleware: 401 with `WWW-Authenticate` unless a configured token is presented.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let accepted = presented.is_some_and(|token| {
        state.config.api_tokens.iter().fold(false, |found, t| {
            found | constant_time_eq(t.expose().as_bytes(), token.as_bytes())
        })
    });
    if accepted {
        return next.run(req).await;
    }
    let (message, challenge) = if presented.is_some() {
        (
            "the bearer token is not valid",
            r#"Bearer realm="gantry", error="invalid_token""#,
        )
    } else {
        (
            "this API needs an Authorization: Bearer <token> header",
            r#"Bearer realm="gantry""#,
        )
    };
    let mut response = Problem::new(Code::Unauthorized, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn equality() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"token2"));
    }
}
