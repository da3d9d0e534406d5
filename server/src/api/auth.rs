//! Bearer-token authentication for `/api`.
//!
//! Tokens come from `API_TOKENS` or `API_TOKENS_FILE`. With none configured
//! every request is refused: a server deployed without its secret fails
//! closed. Comparison (`subtle`) takes the same time wherever the first
//! differing byte is, and every configured token is compared, so response
//! timing tells nothing about a token's prefix or which token matched.

use std::ops::ControlFlow;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use subtle::{Choice, ConstantTimeEq};

use crate::error::{Code, Problem};
use crate::middleware::Around;

/// The tokens `/api` accepts: all the state the auth middleware needs, so it
/// depends on nothing else the server shares.
#[derive(Clone, Debug)]
pub struct ApiTokens(Arc<[SecretString]>);

impl ApiTokens {
    pub fn new(tokens: &[SecretString]) -> Self {
        Self(tokens.into())
    }

    /// Whether `presented` is one of the tokens, in time that does not depend
    /// on where a near miss differs.
    fn accepts(&self, presented: &str) -> bool {
        let found = self.0.iter().fold(Choice::from(0), |found, token| {
            found | token.expose_secret().as_bytes().ct_eq(presented.as_bytes())
        });
        found.into()
    }
}

/// Middleware: 401 with `WWW-Authenticate` unless a configured token is presented.
impl Around for ApiTokens {
    type Carry = ();

    fn before(&self, req: &mut Request) -> ControlFlow<Response, ()> {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        if presented.is_some_and(|token| self.accepts(token)) {
            return ControlFlow::Continue(());
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
        ControlFlow::Break(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_tokens_are_accepted() {
        let tokens = ApiTokens::new(&["token".into(), "other".into()]);
        assert!(tokens.accepts("token"));
        assert!(tokens.accepts("other"));
        assert!(!tokens.accepts("tokem"));
        assert!(!tokens.accepts("token2"));
        assert!(!tokens.accepts(""));
        assert!(!ApiTokens::new(&[]).accepts(""));
    }
}
