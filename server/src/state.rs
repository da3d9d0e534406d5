//! What handlers and middleware share: the database (once connected), the
//! lifecycle flag readiness reads, the metrics registry, the rate limiter and
//! the tracer for request spans. Middleware is handed only the part it uses.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

use crate::api::rate_limit::ClientLimiter;
use crate::config::Config;
use crate::context::Tracing;
use crate::db::Db;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::telemetry::Telemetry;

/// One reference-counted pointer: axum clones the state for every handler
/// call, whether the handler reads it or not, so a clone is one atomic
/// increment rather than one per field.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

/// The fields of [`AppState`], reached through `Deref`.
#[derive(Debug)]
pub struct Shared {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<ClientLimiter>,
    pub tracing: Tracing,
    db: OnceLock<Db>,
    lifecycle: Lifecycle,
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(Debug, Default)]
struct Lifecycle {
    shutting_down: AtomicBool,
    shutdown_started: Notify,
}

impl AppState {
    /// A state with no database yet, whose request spans are not exported:
    /// probes answer, `/readyz` says 503 and the API answers 503 until
    /// [`AppState::set_db`].
    pub fn new(config: Config) -> Self {
        Self::with_tracing(config, Telemetry::default().tracing())
    }

    /// As [`AppState::new`], with request spans from `tracing`, such as
    /// one that exports them.
    pub fn with_tracing(config: Config, tracing: Tracing) -> Self {
        let limiter = ClientLimiter::new(config.rate_limit_per_second, config.rate_limit_burst);
        Self(Arc::new(Shared {
            config: Arc::new(config),
            metrics: Arc::new(Metrics::new()),
            limiter: Arc::new(limiter),
            tracing,
            db: OnceLock::new(),
            lifecycle: Lifecycle::default(),
        }))
    }

    /// Makes the database available; a second call is ignored.
    pub fn set_db(&self, db: Db) {
        let _ = self.db.set(db);
    }

    pub fn db_if_connected(&self) -> Option<&Db> {
        self.db.get()
    }

    /// The database, or a 503 for the API while it is not connected.
    pub fn db(&self) -> Result<&Db, ApiError> {
        self.db
            .get()
            .ok_or(ApiError::Unavailable("the database is not connected yet"))
    }

    /// Turns readiness off for good; the first call wakes
    /// [`AppState::shutdown_started`].
    pub fn begin_shutdown(&self) {
        if !self.lifecycle.shutting_down.swap(true, Ordering::SeqCst) {
            self.lifecycle.shutdown_started.notify_waiters();
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.lifecycle.shutting_down.load(Ordering::SeqCst)
    }

    /// Resolves once shutdown has begun.
    pub async fn shutdown_started(&self) {
        let notified = self.lifecycle.shutdown_started.notified();
        if self.is_shutting_down() {
            return;
        }
        notified.await;
    }
}
