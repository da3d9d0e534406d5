//! `/api`: the JSON API, behind bearer-token auth and per-client rate limiting.
//!
//! The `OpenAPI` document at `/api/v1/openapi.json` is generated from the
//! handlers' `#[utoipa::path]` attributes and the body types, so it changes
//! when they do. The answers that any operation can get from the middleware
//! rather than from its handler (401, 413, 415, 429, 431, 500, 503) are added
//! to every operation by [`MiddlewareResponses`], so none is forgotten.

pub mod auth;
pub mod extract;
pub mod rate_limit;
pub mod users;

use axum::Router;
use axum::routing::get;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi};

use crate::error::Problem;
use crate::middleware;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "gantry-server API", description = "The reference server's user API."),
    paths(users::create, users::list, users::fetch, users::update, users::remove),
    components(schemas(users::User, users::NewUser, users::UserUpdate, users::UserPage, Problem)),
    modifiers(&BearerAuth, &MiddlewareResponses),
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

/// Adds to every operation the responses that come from middleware.
struct MiddlewareResponses;

impl Modify for MiddlewareResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_middleware_responses(operation);
            }
        }
    }
}

fn add_middleware_responses(operation: &mut Operation) {
    let has_body = operation.request_body.is_some();
    let problem = |description: &str| {
        ResponseBuilder::new().description(description).content(
            crate::error::PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
    };
    let string_header = |description: &str, pattern: &str| {
        HeaderBuilder::new()
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(pattern)),
            ))
            .description(Some(description))
            .build()
    };
    let mut add = |status: &str, response: ResponseBuilder| {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| response.build().into());
    };
    add(
        "401",
        problem("Missing or wrong bearer token").header(
            "www-authenticate",
            string_header("The bearer challenge", "^Bearer "),
        ),
    );
    if has_body {
        add("413", problem("Body larger than BODY_LIMIT"));
        add("415", problem("Body is not application/json"));
    }
    add(
        "429",
        problem("Rate limited").header(
            "retry-after",
            string_header("Seconds to wait", "^[1-9][0-9]*$"),
        ),
    );
    add("431", problem("Request headers too large"));
    add(
        "500",
        problem("Internal error; the cause is in the log under the trace id"),
    );
    add(
        "503",
        problem("Database not connected yet, server shutting down, or request timed out"),
    );
}

async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

/// The `/api` routes, with their full paths; auth runs before the rate
/// limiter. Merged into the server's router rather than nested under
/// `/api`: a nested router rewrites each request's path on the way in (a
/// new URI per level). A path under `/api` that matches no route is the
/// server's 404, without auth, as it was when nested.
pub fn router(state: &AppState) -> Router<AppState> {
    // One composite layer, so each route is boxed once (see `app::app`).
    users::router()
        .route("/api/v1/openapi.json", get(openapi))
        .layer(
            tower::ServiceBuilder::new()
                .layer(middleware::layer(auth::ApiTokens::new(
                    &state.config.api_tokens,
                )))
                .layer(middleware::layer(rate_limit::RateLimit(
                    state.limiter.clone(),
                ))),
        )
}
