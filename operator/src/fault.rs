//! Crash points for the fault tests.
//!
//! `GANTRY_CRASH_AT=<point>[:<detail>][,...]` makes the operator kill
//! itself with SIGKILL the first time it reaches a named point in its work
//! (with the detail, when one is given), as a crashed node or an OOM kill
//! would stop it: no destructor runs, no Lease is released, no write after
//! it goes out. The tests start the operator with it, see it die at exactly
//! the moment they mean to test, and start it again without.
//!
//! Points:
//! - `decision-recorded:<Verified|Failed|RolledBack>`: the status records
//!   a verification decision that has not been told yet (no Event, no
//!   webhook), and, for a rollback, the Deployment still runs the failed
//!   revision.
//! - `after-write:<n>`: the apiserver has answered the operator's n-th
//!   write (create, update, patch or delete, Events included), and the
//!   operator has not seen the answer: Sieve's crash after every write.
//!   [`CrashAfterWriteLayer`] on the client counts the writes.
//!
//! Unset (as in every deployment), a point costs a read of a static, and
//! the client has no extra layer.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::http::{Method, Request};

/// The variable naming the points.
pub const VARIABLE: &str = "GANTRY_CRASH_AT";

fn points() -> &'static [String] {
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var(VARIABLE)
            .map(|v| parse(&v))
            .unwrap_or_default()
    })
}

fn parse(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn matches(points: &[String], point: &str, detail: &str) -> bool {
    points.iter().any(|p| {
        p == point
            || p.strip_prefix(point)
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|d| d == detail)
    })
}

/// Kills the process here when `GANTRY_CRASH_AT` names `point` (alone or
/// with `detail`).
pub fn crash_point(point: &str, detail: &str) {
    if matches(points(), point, detail) {
        crash(point, detail);
    }
}

fn crash(point: &str, detail: &str) {
    tracing::error!(point, detail, "crash point reached; killing the process");
    // Raised on the process itself: the kernel stops every thread at once,
    // exactly as an outside SIGKILL would.
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    std::process::abort();
}

const AFTER_WRITE: &str = "after-write";

/// The write after whose answer `after-write:<n>` kills the process.
fn write_to_crash_after(points: &[String]) -> Option<u64> {
    points
        .iter()
        .find_map(|p| p.strip_prefix(AFTER_WRITE)?.strip_prefix(':')?.parse().ok())
}

/// The client layer for `after-write:<n>`, when `GANTRY_CRASH_AT` names it.
pub fn crash_after_write() -> Option<CrashAfterWriteLayer> {
    write_to_crash_after(points()).map(|target| CrashAfterWriteLayer {
        target,
        writes: Arc::default(),
    })
}

/// Counts the client's writes and kills the process once the answer to
/// the `target`-th has arrived, before the caller sees it.
#[derive(Clone)]
pub struct CrashAfterWriteLayer {
    target: u64,
    writes: Arc<AtomicU64>,
}

impl<S> tower::Layer<S> for CrashAfterWriteLayer {
    type Service = CrashAfterWrite<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CrashAfterWrite {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`CrashAfterWriteLayer`].
#[derive(Clone)]
pub struct CrashAfterWrite<S> {
    inner: S,
    layer: CrashAfterWriteLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<Request<B>> for CrashAfterWrite<S>
where
    S: tower::Service<Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let write = matches!(
            *request.method(),
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        let nth = if write {
            self.layer.writes.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            0
        };
        let what = format!("{nth} {} {}", request.method(), request.uri().path());
        let answer = self.inner.call(request);
        if nth != self.layer.target {
            return Box::pin(answer);
        }
        Box::pin(async move {
            let answered = answer.await;
            crash(AFTER_WRITE, &what);
            answered
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{matches, parse, write_to_crash_after};

    #[test]
    fn after_write_names_a_number() {
        assert_eq!(write_to_crash_after(&parse("after-write:7")), Some(7));
        assert_eq!(
            write_to_crash_after(&parse("other, after-write:12")),
            Some(12)
        );
        assert_eq!(write_to_crash_after(&parse("after-write")), None);
        assert_eq!(write_to_crash_after(&parse("after-write:x")), None);
        assert_eq!(write_to_crash_after(&parse("after-writes:3")), None);
    }

    #[test]
    fn points_match_alone_or_with_their_detail() {
        let points = parse("decision-recorded:RolledBack, other");
        assert!(matches(&points, "decision-recorded", "RolledBack"));
        assert!(!matches(&points, "decision-recorded", "Verified"));
        assert!(matches(&points, "other", "anything"));
        assert!(!matches(&points, "decision", "recorded:RolledBack"));
        assert!(matches(
            &parse("decision-recorded"),
            "decision-recorded",
            "Verified"
        ));
        assert!(parse("").is_empty());
    }
}
