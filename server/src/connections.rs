//! Accepting and serving HTTP/1.1 connections, and closing them at shutdown.
//!
//! `axum::serve` offers neither a header-read timeout nor a connection limit,
//! and its graceful shutdown waits for every open connection, including one
//! that sent half a request and stopped: such a client held the drain for
//! the whole grace period. So this module runs hyper itself:
//!
//! - at most `MAX_CONNECTIONS` connections are served at once: past that the
//!   loop stops accepting and new clients wait in the listen backlog, so a
//!   flood never exhausts file descriptors (which would fail every `accept`,
//!   probes included);
//! - hyper's `header_read_timeout` closes a connection whose request headers
//!   do not arrive in time;
//! - at shutdown the listener is dropped and every connection is told to
//!   finish: one serving a request (headers complete, response not yet
//!   written) completes it and then closes; one that is idle or still
//!   sending headers is closed at once, since no response is owed to it.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower::Service;

/// The open connections, counted by the permits they hold.
#[derive(Clone, Debug)]
pub struct Connections {
    permits: Arc<Semaphore>,
    max: usize,
}

impl Connections {
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Connections being served now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }
}

/// Serves `router` on `listener` until `close` turns true, then drains:
/// returns once every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    connections: Connections,
    mut close: watch::Receiver<bool>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let mut tasks = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = connections.permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => break,
            },
            () = closed(&mut close) => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    if !is_connection_error(&err) {
                        // Out of file descriptors or memory: retrying at once would spin.
                        tracing::error!(error = %err, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
            () = closed(&mut close) => break,
        };
        // Finished connections are collected here so the set stays small.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(serve_connection(
            http.clone(),
            stream,
            remote,
            router.clone(),
            close.clone(),
            permit,
        ));
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

/// Resolves once `close` turns true (or its sender is gone). The guard that
/// `wait_for` returns is dropped here, before any other await.
async fn closed(close: &mut watch::Receiver<bool>) {
    let _ = close.wait_for(|closed| *closed).await;
}

/// A client that went away before its connection was accepted.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection(
    http: http1::Builder,
    stream: TcpStream,
    remote: SocketAddr,
    router: Router,
    mut close: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    // Responses go out in one write; Nagle's algorithm would only delay them.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::default());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            // Counted from the moment hyper has the whole head, before any await.
            let guard = Activity::begin(&activity);
            req.extensions_mut().insert(ConnectInfo(remote));
            let mut router = router.clone();
            async move {
                let response = router.call(req).await?;
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body,
                    _guard: guard,
                }))
            }
        })
    };
    let conn = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => return log_end(result),
        () = closed(&mut close) => {}
    }
    // No keep-alive from here on: hyper closes the connection after the
    // response in progress, if any.
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        // One poll first, so a request whose head is already buffered is
        // dispatched (and counted) before the connection is judged.
        biased;
        result = conn.as_mut() => return log_end(result),
        () = std::future::ready(()) => {}
    }
    if activity.is_idle() {
        // Nothing owed: idle, or headers still incomplete. Dropping the
        // connection closes the socket.
        return;
    }
    log_end(conn.await);
}

fn log_end(result: hyper::Result<()>) {
    if let Err(err) = result {
        // Timeouts and clients that vanish are routine; at debug they stay
        // out of the way of a slowloris-sized flood.
        tracing::debug!(error = %err, "connection closed");
    }
}

/// Requests of one connection whose response is not yet fully written.
#[derive(Debug, Default)]
struct Activity {
    active: AtomicUsize,
}

impl Activity {
    fn begin(this: &Arc<Self>) -> ActiveGuard {
        this.active.fetch_add(1, Ordering::SeqCst);
        ActiveGuard(this.clone())
    }

    fn is_idle(&self) -> bool {
        self.active.load(Ordering::SeqCst) == 0
    }
}

/// Ends a request's activity when dropped: with the response body, so a
/// response still being written counts as in progress.
#[derive(Debug)]
struct ActiveGuard(Arc<Activity>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that holds its request's [`ActiveGuard`].
struct Tracked {
    body: Body,
    _guard: ActiveGuard,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
