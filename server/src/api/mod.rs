//! `/api`: the JSON API, behind bearer-token auth and per-client rate limiting.
//!
//! The `OpenAPI` document at `/api/v1/openapi.json` is generated from the
//! handlers' `#[utoipa::path]` attributes and the body types, so it changes
//! when they do.

pub mod auth;
pub mod extract;
pub mod rate_limit;
pub mod users;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::Problem;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "gantry-server API", description = "The reference server's user API."),
    paths(users::create, users::list, users::fetch, users::update, users::remove),
    components(schemas(users::User, users::NewUser, users::UserUpdate, users::UserPage, Problem)),
    modifiers(&BearerAuth),
    tags((name = "users", description = "User accounts"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

/// The `/api` routes; auth runs before the rate limiter.
pub fn router(state: &AppState) -> Router<AppState> {
    let v1 = users::router().route("/openapi.json", get(openapi));
    Router::new()
        .nest("/v1", v1)
        .layer(from_fn_with_state(state.limiter.clone(), rate_limit::limit))
        .layer(from_fn_with_state(
            auth::ApiTokens::new(&state.config.api_tokens),
            auth::require_token,
        ))
}
