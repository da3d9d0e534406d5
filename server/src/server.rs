//! Start-up and graceful drain.
//!
//! ```text
//! bind (fail fast: port in use, permission denied)
//!   -> serve probes at once (/readyz 503 until the database is up)
//!   -> connect the database with backoff, migrate, mark ready
//!   -> SIGTERM/SIGINT: /readyz 503 -> SHUTDOWN_DELAY -> close the listener
//!      -> in-flight requests finish within SHUTDOWN_GRACE -> Ok(())
//! ```

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::app;
use crate::config::Config;
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
        source: sqlx::Error,
    },
    #[error("the server stopped unexpectedly")]
    Serve(#[source] io::Error),
    #[error("{0} requests were still running when the shutdown grace period ended")]
    GraceExceeded(String),
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

/// Serves on `listener` until SIGTERM or SIGINT, then drains.
pub async fn serve(config: Config, listener: TcpListener) -> Result<(), ServeError> {
    let state = AppState::new(config.clone());
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
    let (close_tx, mut close_rx) = watch::channel(false);
    let server = axum::serve(
        listener,
        app(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = close_rx.wait_for(|closed| *closed).await;
    });
    let mut server = tokio::spawn(server.into_future());

    // The database comes up while probes are already answered.
    let connect = {
        let url = config.database_url.clone();
        let retries = config.db_connect_retries;
        let kind = config.database_kind();
        async move {
            retry_with_backoff(
                &format!("connecting to the {kind} database"),
                retries,
                || Db::connect(url.expose()),
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
        "closing the listener; draining in-flight requests"
    );
    let _ = close_tx.send(true);
    let outcome =
        if let Ok(finished) = tokio::time::timeout(config.shutdown_grace, &mut server).await {
            server_result(finished)
        } else {
            server.abort();
            Err(ServeError::GraceExceeded(in_flight(&state)))
        };
    if let Some(db) = state.db_if_connected() {
        db.close().await;
    }
    if outcome.is_ok() {
        tracing::info!("drained; exiting");
    }
    outcome
}

fn in_flight(state: &AppState) -> String {
    let text = state.metrics.encode();
    text.lines()
        .find_map(|l| l.strip_prefix("http_requests_in_flight "))
        .unwrap_or("some")
        .to_owned()
}

fn server_result(
    finished: Result<io::Result<()>, tokio::task::JoinError>,
) -> Result<(), ServeError> {
    match finished {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(ServeError::Serve(err)),
        Err(join) => Err(ServeError::Serve(io::Error::other(join))),
    }
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
