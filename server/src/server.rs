//! Start-up and graceful drain.
//!
//! ```text
//! bind (fail fast: port in use, permission denied)
//!   -> serve probes at once (/readyz 503 until the database is up)
//!   -> connect the database with backoff, migrate, mark ready
//!   -> SIGTERM/SIGINT: /readyz 503 -> SHUTDOWN_DELAY -> close the listener
//!      -> connections without a request in progress close at once
//!      -> in-flight requests finish within SHUTDOWN_GRACE -> Ok(())
//! ```
//!
//! Connections themselves (limit, header-read timeout, closing) are
//! [`crate::connections`]' business.

use std::io;
use std::net::SocketAddr;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::app;
use crate::config::Config;
use crate::connections::Connections;
use crate::context::Tracing;
use crate::db::{Db, retry_with_backoff};
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        addr: SocketAddr,
        reason: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot connect to the {kind} database after {attempts} attempts")]
    Database {
        kind: &'static str,
        attempts: u32,
        #[source]
        source: crate::db::Error,
    },
    #[error("the server stopped unexpectedly")]
    Serve(#[source] io::Error),
    #[error(
        "{connections} connections were still open ({requests} requests running) when the shutdown grace period ended"
    )]
    GraceExceeded { connections: usize, requests: i64 },
}

/// Binds `HOST:PORT` with a message a person can act on.
pub async fn bind(config: &Config) -> Result<TcpListener, ServeError> {
    let addr = SocketAddr::new(config.host, config.port);
    TcpListener::bind(addr).await.map_err(|source| {
        let reason = match source.kind() {
            io::ErrorKind::AddrInUse => format!(
                "the address is already in use; stop the other process on port {} or set PORT",
                config.port
            ),
            io::ErrorKind::PermissionDenied => format!(
                "permission denied; ports below 1024 need privileges, pick another PORT (was {})",
                config.port
            ),
            io::ErrorKind::AddrNotAvailable => format!(
                "{} is not an address of this machine; check HOST",
                config.host
            ),
            _ => source.to_string(),
        };
        ServeError::Bind {
            addr,
            reason,
            source,
        }
    })
}

/// Serves on `listener` until SIGTERM or SIGINT, then drains. Request spans
/// come from `tracing`.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    tracing: Tracing,
) -> Result<(), ServeError> {
    let state = AppState::with_tracing(config, tracing);
    let signals = state.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signals.begin_shutdown();
    });
    serve_state(state, listener).await
}

/// Serves `state` until [`AppState::begin_shutdown`], then drains.
pub async fn serve_state(state: AppState, listener: TcpListener) -> Result<(), ServeError> {
    let config = state.config.clone();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, database = config.database_kind(), "listening");
    }
    let (close_tx, close_rx) = watch::channel(false);
    let connections = Connections::new(config.max_connections);
    let mut server = tokio::spawn(crate::connections::serve(
        listener,
        app(state.clone()),
        config.header_read_timeout,
        connections.clone(),
        close_rx,
    ));

    // The database comes up while probes are already answered.
    let connect = {
        let url = config.database_url.clone();
        let retries = config.db_connect_retries;
        let kind = config.database_kind();
        async move {
            retry_with_backoff(
                &format!("connecting to the {kind} database"),
                retries,
                || Db::connect(url.expose_secret()),
            )
            .await
            .map_err(|source| ServeError::Database {
                kind,
                attempts: retries + 1,
                source,
            })
        }
    };
    tokio::select! {
        connected = connect => {
            let db = connected?;
            tracing::info!(database = config.database_kind(), "database connected and migrated; ready");
            state.set_db(db);
        }
        () = state.shutdown_started() => {}
        finished = &mut server => return server_result(finished),
    }

    tokio::select! {
        () = state.shutdown_started() => {}
        finished = &mut server => return server_result(finished),
    }
    tracing::info!(
        delay_s = config.shutdown_delay.as_secs_f64(),
        "shutdown signal: readiness off; waiting for load balancers before closing the listener"
    );
    tokio::time::sleep(config.shutdown_delay).await;
    tracing::info!(
        grace_s = config.shutdown_grace.as_secs_f64(),
        connections = connections.open(),
        requests = state.metrics.in_flight(),
        "closing the listener and idle connections; draining in-flight requests"
    );
    let _ = close_tx.send(true);
    let outcome =
        if let Ok(finished) = tokio::time::timeout(config.shutdown_grace, &mut server).await {
            server_result(finished)
        } else {
            let error = ServeError::GraceExceeded {
                connections: connections.open(),
                requests: state.metrics.in_flight(),
            };
            server.abort();
            Err(error)
        };
    if let Some(db) = state.db_if_connected() {
        db.close().await;
    }
    if outcome.is_ok() {
        tracing::info!("drained; exiting");
    }
    outcome
}

/// The accept loop ends only by draining; a panic in it is the one failure.
fn server_result(finished: Result<(), tokio::task::JoinError>) -> Result<(), ServeError> {
    finished.map_err(|join| ServeError::Serve(io::Error::other(join)))
}

/// SIGTERM (Kubernetes) or SIGINT (a terminal).
async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => tracing::info!(signal = "SIGTERM", "received"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "received"),
    }
}
