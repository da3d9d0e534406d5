//! A bare axum server for `cargo xtask bench server`: the benchmark's two
//! routes, served from memory with no middleware, as the floor against which
//! gantry-server's middleware cost is read. `ADDR` sets the listen address.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Serialize;

#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct User {
    id: &'static str,
    name: &'static str,
    email: &'static str,
    created_at: &'static str,
}

const BENCH_USER_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";

type Users = Arc<HashMap<&'static str, User>>;

async fn root() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "message": "Hello from axum" }))
}

async fn user(
    State(users): State<Users>,
    Path(id): Path<String>,
) -> Result<axum::Json<User>, StatusCode> {
    users
        .get(id.as_str())
        .cloned()
        .map(axum::Json)
        .ok_or(StatusCode::NOT_FOUND)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let users: Users = Arc::new(HashMap::from([(
        BENCH_USER_ID,
        User {
            id: BENCH_USER_ID,
            name: "Ada Lovelace",
            email: "ada@example.com",
            created_at: "2025-01-01T00:00:00Z",
        },
    )]));
    let app = Router::new()
        .route("/", get(root))
        .route("/api/v1/users/{id}", get(user))
        .with_state(users);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {addr}");
    axum::serve(listener, app).await
}
