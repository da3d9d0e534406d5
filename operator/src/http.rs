//! The operator's own HTTP port: `/healthz` (liveness), `/readyz`
//! (readiness) and `/metrics` (Prometheus). Nothing here touches the
//! cluster; the controller and the elector flip [`Health`] and update
//! [`Metrics`], the handlers only read them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// What the probes report.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Marks the process ready (or not) to be counted as an available replica.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Shared by the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
}

/// The whole router, so tests can drive it without a socket.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Binds `address` and serves [`app`] on it in a task of its own. Returns
/// the bound address (`127.0.0.1:0` picks a free port, which the log line
/// reports).
pub async fn serve(address: &str, state: AppState) -> Result<SocketAddr> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| Error::Http {
            address: address.to_owned(),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| Error::Http {
        address: address.to_owned(),
        source,
    })?;
    info!(address = %bound, "serving /healthz, /readyz and /metrics");
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app(state)).await {
            warn!(error = %err, "the health and metrics server stopped");
        }
    });
    Ok(bound)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(state: &AppState, path: &str) -> (StatusCode, String) {
        let response = app(state.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_follows_health_and_healthz_is_always_ok() {
        let state = AppState {
            health: Arc::new(Health::default()),
            metrics: Arc::new(Metrics::new()),
        };
        assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(&state, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.health.set_ready(true);
        assert_eq!(get(&state, "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_served() {
        let state = AppState {
            health: Arc::new(Health::default()),
            metrics: Arc::new(Metrics::new()),
        };
        state.metrics.set_leader(true);
        let (status, body) = get(&state, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("gantry_leader 1"), "{body}");
    }
}
