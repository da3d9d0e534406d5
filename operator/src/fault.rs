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
//! - `write:<what>`: the same, after the first write that is `<what>`:
//!   `<VERB> <resource> <name> <phase>`, for example
//!   `PATCH goservers/status shop decision`. The name of a create is `*`
//!   (it is in the body), the phase the step of the reconcile that wrote
//!   ([`in_phase`]: `apply`, `rollback`, `canary`, `drain`, `measure`,
//!   `decision`, `step`, `told`, `requests`, `tell`, ...). A write names
//!   what it is, not when it comes, so the point is the same however
//!   concurrent writes are ordered.
//! - `trace-writes`: no crash; every write is logged as `write` with its
//!   `what`, so a reference run lists the points there are.
//!
//! With `GANTRY_CRASH_ARMED=<path>`, a `write:` point counts only while
//! that file exists: a test arms it when the life it drives reaches the
//! step it means to crash in.
//!
//! `GANTRY_CLOCK_OFFSET=<duration>` (`60s`, `-5m`) shifts the process's
//! local clock, as a machine whose clock runs fast or slow would
//! ([`crate::clock`] must make up for it).
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
/// The variable naming the file that arms `write:` points.
pub const ARMED_VARIABLE: &str = "GANTRY_CRASH_ARMED";
/// The variable shifting the local clock.
pub const CLOCK_VARIABLE: &str = "GANTRY_CLOCK_OFFSET";

/// The shift of the local clock that `GANTRY_CLOCK_OFFSET` asks for, in
/// milliseconds; 0 when unset or unreadable.
pub fn clock_offset_millis() -> i64 {
    static OFFSET: OnceLock<i64> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var(CLOCK_VARIABLE)
            .ok()
            .and_then(|v| parse_offset(&v))
            .unwrap_or(0)
    })
}

fn parse_offset(text: &str) -> Option<i64> {
    let text = text.trim();
    let (sign, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let magnitude = crate::rollout::duration::parse(magnitude).ok()?;
    Some(sign * i64::try_from(magnitude.as_millis()).ok()?)
}

/// Runs `future` as the reconcile step `phase`: the writes it makes are
/// named with it. Only while a write point is set (`crash_after_write`
/// gave a layer): then `future` runs in a span named by the phase, which
/// the kube client's request buffer carries to the task that sends the
/// request, where the layer reads it. Otherwise it costs nothing.
pub async fn in_phase<F: Future>(phase: &'static str, future: F) -> F::Output {
    use tracing::Instrument;
    if !writes_named() {
        return future.await;
    }
    let span = match phase {
        "apply" => tracing::info_span!("apply"),
        "rollback" => tracing::info_span!("rollback"),
        "canary" => tracing::info_span!("canary"),
        "drain" => tracing::info_span!("drain"),
        "measure" => tracing::info_span!("measure"),
        "decision" => tracing::info_span!("decision"),
        "step" => tracing::info_span!("step"),
        "told" => tracing::info_span!("told"),
        "requests" => tracing::info_span!("requests"),
        "tell" => tracing::info_span!("tell"),
        "status" => tracing::info_span!("status"),
        _ => tracing::Span::none(),
    };
    future.instrument(span).await
}

/// The phases [`in_phase`] names.
const PHASES: [&str; 11] = [
    "apply", "rollback", "canary", "drain", "measure", "decision", "step", "told", "requests",
    "tell", "status",
];

/// The reconcile step the current span names, `reconcile` outside any.
fn phase() -> &'static str {
    tracing::Span::current()
        .metadata()
        .map(tracing::Metadata::name)
        .and_then(|name| PHASES.iter().find(|p| **p == name).copied())
        .unwrap_or("reconcile")
}

/// Whether writes are named (a `write:` point or `trace-writes` is set).
fn writes_named() -> bool {
    let points = points();
    named_write(points).is_some() || points.iter().any(|p| p == TRACE_WRITES)
}

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
const WRITE: &str = "write";
const TRACE_WRITES: &str = "trace-writes";

/// The write after whose answer `after-write:<n>` kills the process.
fn write_to_crash_after(points: &[String]) -> Option<u64> {
    points
        .iter()
        .find_map(|p| p.strip_prefix(AFTER_WRITE)?.strip_prefix(':')?.parse().ok())
}

/// The write that `write:<what>` names.
fn named_write(points: &[String]) -> Option<String> {
    points
        .iter()
        .find_map(|p| Some(p.strip_prefix(WRITE)?.strip_prefix(':')?.trim().to_owned()))
}

/// The client layer for `after-write:<n>`, `write:<what>` and
/// `trace-writes`, when `GANTRY_CRASH_AT` names one of them.
pub fn crash_after_write() -> Option<CrashAfterWriteLayer> {
    let points = points();
    let target = write_to_crash_after(points);
    let named = named_write(points);
    let trace = points.iter().any(|p| p == TRACE_WRITES);
    if target.is_none() && named.is_none() && !trace {
        return None;
    }
    Some(CrashAfterWriteLayer {
        target,
        named,
        trace,
        armed: std::env::var_os(ARMED_VARIABLE).map(std::path::PathBuf::from),
        writes: Arc::default(),
    })
}

/// Counts the client's writes and kills the process once the answer to
/// the `target`-th (or to the first one that is `named`) has arrived,
/// before the caller sees it.
#[derive(Clone)]
pub struct CrashAfterWriteLayer {
    target: Option<u64>,
    named: Option<String>,
    trace: bool,
    /// Named points count only while this file exists.
    armed: Option<std::path::PathBuf>,
    writes: Arc<AtomicU64>,
}

impl CrashAfterWriteLayer {
    fn named_now(&self, what: &str) -> bool {
        self.named.as_deref() == Some(what) && self.armed.as_ref().is_none_or(|file| file.exists())
    }
}

/// `<VERB> <resource> <name> <phase>` of a write: the resource as the
/// request metrics name it (`goservers/status`), the object's name (`*`
/// for a create, whose name is in the body; the part before the first `.`
/// for an Event, whose name adds a suffix of its own).
pub fn what(method: &Method, path: &str, phase: &str) -> String {
    let labels = crate::audit::classify(method, path, None);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _, rest @ ..] | ["apis", _, _, rest @ ..] => rest,
        _ => &[][..],
    };
    let resource = match rest {
        ["namespaces", _ns, resource @ ..] if !resource.is_empty() => resource,
        other => other,
    };
    let name = match resource {
        [_plural, name, ..] => name.split('.').next().unwrap_or(name),
        _ => "*",
    };
    format!("{} {} {name} {phase}", method.as_str(), labels.kind)
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
        if !write {
            return Box::pin(self.inner.call(request));
        }
        let nth = self.layer.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let what = what(request.method(), request.uri().path(), phase());
        if self.layer.trace {
            tracing::info!(nth, what = %what, "write");
        }
        let point = if self.layer.target == Some(nth) {
            Some((AFTER_WRITE, format!("{nth} {what}")))
        } else if self.layer.named_now(&what) {
            Some((WRITE, what))
        } else {
            None
        };
        let answer = self.inner.call(request);
        let Some((point, detail)) = point else {
            return Box::pin(answer);
        };
        Box::pin(async move {
            let answered = answer.await;
            crash(point, &detail);
            answered
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Method, matches, named_write, parse, what, write_to_crash_after};

    #[test]
    fn clock_offsets_have_a_sign() {
        assert_eq!(super::parse_offset("60s"), Some(60_000));
        assert_eq!(super::parse_offset("-1m30s"), Some(-90_000));
        assert_eq!(super::parse_offset("+250ms"), Some(250));
        assert_eq!(super::parse_offset("soon"), None);
    }

    #[test]
    fn a_write_is_named_by_what_it_is() {
        assert_eq!(
            what(
                &Method::PATCH,
                "/apis/gantry.dev/v1alpha1/namespaces/web/goservers/shop/status",
                "decision"
            ),
            "PATCH goservers/status shop decision"
        );
        assert_eq!(
            what(
                &Method::POST,
                "/apis/events.k8s.io/v1/namespaces/web/events",
                "tell"
            ),
            "POST events * tell"
        );
        assert_eq!(
            what(
                &Method::PATCH,
                "/apis/events.k8s.io/v1/namespaces/web/events/shop.1879abc",
                "apply"
            ),
            "PATCH events shop apply"
        );
        assert_eq!(
            what(
                &Method::DELETE,
                "/apis/apps/v1/namespaces/web/deployments/shop-canary",
                "drain"
            ),
            "DELETE deployments shop-canary drain"
        );
        assert_eq!(
            named_write(&parse("write:PATCH goservers/status shop decision")).as_deref(),
            Some("PATCH goservers/status shop decision")
        );
    }

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
