//! The reconcile loop. [`reconcile`] reads as the operator's flow; each
//! step is a file of this module and hands its result to the next:
//!
//! ```text
//! GoServer or child event            watches.rs   (the watches, mapped to GoServers)
//!   -> a fresh enough view           context.rs   (shared state, per-GoServer memories)
//!   -> dereference                   dereference.rs (referenced Secrets exist; metadata only)
//!   -> validate                      build::validate (what the schema cannot check)
//!   -> requests by annotation        requests.rs  (rollback, promote, retry)
//!   -> build and apply               children.rs  (revision in force, canary, Applier)
//!   -> verify                        verify.rs    (Prometheus samples, rollout::progress)
//!   -> update status, tell           update_status.rs (status write, outbox, deliveries)
//! Events on the GoServer             events.rs    (published in one place)
//! ```
//!
//! Children are watched into reflector stores ([`crate::cache`]) by the same
//! watches that trigger reconciles, so a reconcile of an unchanged
//! `GoServer` reads everything from memory and sends no request.
//!
//! Errors are sorted by [`Error::is_permanent`]: a permanent one is reported
//! in the `Degraded` condition and the `GoServer` waits for a change; a
//! transient one is retried with exponential backoff per object.

mod children;
mod context;
mod dereference;
mod events;
mod requests;
mod update_status;
mod verify;
pub mod watches;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backon::BackoffBuilder as _;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::build;
use crate::crd::GoServer;
use crate::error::{Error, Result};
use children::cached_deployment;
use context::now;
use events::publish_error;
use update_status::{Around, MIN_REQUEUE, Synced, write_status};

pub use context::Context;

/// How often a `GoServer` waiting for a missing Secret looks again: Secrets
/// are not watched, so their creation is no event for the operator.
const MISSING_REFERENCE_RECHECK: Duration = Duration::from_secs(60);
/// Backoff bounds of transient errors, before jitter (which adds up to as
/// much again).
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(150);

/// Brings the children of one `GoServer` in line with its spec.
pub async fn reconcile(gs: Arc<GoServer>, ctx: Arc<Context>) -> Result<Action> {
    let span = info_span!(
        "reconcile",
        namespace = gs.namespace().unwrap_or_default(),
        goserver = gs.name_any(),
        reconcile_id = next_reconcile_id(),
    );
    let started = Instant::now();
    let result = Box::pin(reconcile_inner(&gs, &ctx).instrument(span)).await;
    ctx.metrics.reconciled(
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    result
}

fn next_reconcile_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn reconcile_inner(gs: &GoServer, ctx: &Context) -> Result<Action> {
    if gs.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the children through their owner
        // references; there is nothing to keep in shape any more.
        return Ok(Action::await_change());
    }
    // The controller starts once the GoServer cache is filled, not the
    // child caches: a reconcile that ran before them would take every
    // child it does not find yet for missing (found by the restart test:
    // a restarted operator tried to create ControllerRevisions that
    // existed). Immediate once they are ready.
    ctx.caches.wait_until_ready().await;
    // A view older than our own last rollout write would act on a rollout
    // state that is no more (found by the stale-status test: a reconcile
    // on the status from before a rollback measured again and erased it).
    let gs = ctx.fresh(gs).await?;
    let gs = gs.as_ref();
    debug!(generation = gs.metadata.generation, "reconcile started");
    match Box::pin(sync(gs, ctx)).await {
        Ok(synced) => match Box::pin(update_status::report(gs, ctx, synced)).await {
            Err(Error::StatusConflict { .. }) => {
                info!("the GoServer changed since it was read; looking again");
                Ok(Action::requeue(MIN_REQUEUE))
            }
            other => other,
        },
        Err(err @ Error::Outdated { .. }) => {
            // Nothing is written for an object that is not there: no
            // status, no Event.
            info!(error = %err, "reconcile skipped: the cached GoServer is outdated");
            Err(err)
        }
        Err(err) if err.is_permanent() => {
            warn!(error = %err, category = err.category(), "reconcile stopped by a permanent error");
            let deployment = cached_deployment(ctx, gs).await?;
            let around = Around::read(ctx, gs)?;
            let observed = around.observe(ctx, deployment.as_ref(), None, Some(&err));
            // An unchanged status means this error was reported already:
            // no second Event, no write.
            if write_status(gs, ctx, &observed, None).await?.written {
                publish_error(ctx, gs, &err).await;
            }
            Err(err)
        }
        Err(err) => {
            warn!(error = %err, category = err.category(), "reconcile failed, will retry");
            publish_error(ctx, gs, &err).await;
            Err(err)
        }
    }
}

/// Dereference, validate, build, apply, verify: the live Deployment, the
/// rollout decision, and what is to be told with the status. When the
/// apply fails after a write, the Events for the writes made are published
/// before the error returns.
async fn sync(gs: &GoServer, ctx: &Context) -> Result<Synced> {
    dereference::secrets_exist(ctx, gs).await?;
    build::validate(gs)?;
    let spec_revision = build::spec_revision(gs)?;
    // Requests by annotation change the status this reconcile starts from;
    // the rest of it works on that view.
    let (view, handled) = requests::handle(ctx, gs, &spec_revision.name)?;
    let gs = view.as_ref();
    let now = now();
    let applied = Box::pin(children::apply(ctx, gs, &spec_revision, &now)).await?;
    let decision = verify::decide(ctx, gs, &spec_revision, &applied, &now).await;
    let children::Applied {
        deployment,
        told,
        defaulted,
        ..
    } = applied;
    Ok(Synced {
        deployment,
        decision,
        told,
        defaulted,
        handled,
    })
}

/// Tells the controller when to look at a failed `GoServer` again.
// The signature is the one `Controller::run` asks for.
#[allow(clippy::needless_pass_by_value)]
pub fn error_policy(gs: Arc<GoServer>, err: &Error, ctx: Arc<Context>) -> Action {
    match err {
        Error::SecretNotFound { .. } => Action::requeue(MISSING_REFERENCE_RECHECK),
        err if err.is_permanent() => Action::await_change(),
        _ => {
            let failures = ctx.record_failure(&gs);
            Action::requeue(backoff(failures))
        }
    }
}

/// Delay before retry number `failures` (1-based): 1 s, 2 s, 4 s, ...
/// 150 s, each stretched by a random part of up to as much again, so that
/// GoServers failing together (an apiserver away) do not retry together,
/// and no retry waits 5 min or longer.
pub fn backoff(failures: u32) -> Duration {
    let retry = failures.saturating_sub(1).min(16) as usize;
    backon::ExponentialBuilder::default()
        .with_min_delay(BACKOFF_BASE)
        .with_max_delay(BACKOFF_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(retry)
        .unwrap_or(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        for (failures, base) in [
            (1, 1),
            (2, 2),
            (5, 16),
            (9, 150),
            (10, 150),
            (u32::MAX, 150),
        ] {
            for _ in 0..20 {
                let delay = backoff(failures);
                let (low, high) = (Duration::from_secs(base), Duration::from_secs(2 * base));
                assert!(
                    delay >= low && delay < high,
                    "failure {failures}: {delay:?} is not in [{low:?}, {high:?})"
                );
            }
        }
    }
}
