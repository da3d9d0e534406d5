//! The reconcile loop: fetch, validate, build, apply, prune, report.
//!
//! ```text
//! GoServer or child event
//!   -> fetch     referenced Secrets exist? (metadata only: values are never read)
//!   -> validate  what the schema cannot check (build::validate)
//!   -> build     pure: &GoServer -> Children
//!   -> apply     apply::Applier: compare with the caches, server-side apply
//!                what differs, prune what the spec no longer wants
//!   -> events    what the applier changed (one Event for the children created)
//!   -> status    computed from the Deployment, written only when it changed
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
mod events;
mod requests;
mod update_status;
mod verify;
mod watches;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::apply::{self, Applier, Told};
use crate::build::{self};
use crate::crd::GoServer;
use crate::error::{Error, Result};
use crate::fault;
use crate::gateway::{self};
use crate::rollout::request::Handled;
use crate::rollout::{self, outbox};
use crate::status::{self, Observed};
use children::{
    cached_child, cached_deployment, canary_run, defaulted_note, runs, stored_revision,
};
use context::{namespaced, now};
use events::{publish_changes, publish_defaulted, publish_dropped, publish_error};
use requests::{finish_requests, handle_requests};
use update_status::{observed, write_status};
use verify::{decision_id, measure};

pub use context::{Context, Settings};
pub use watches::run;

/// How long reconciles in flight may take to finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A `GoServer` is reconciled at least this often, even without events.
const RESYNC: Duration = Duration::from_secs(600);
/// How often a `GoServer` waiting for a missing Secret looks again: Secrets
/// are not watched, so their creation is no event for the operator.
const MISSING_REFERENCE_RECHECK: Duration = Duration::from_secs(60);
/// Backoff bounds of transient errors.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// The soonest a verification asks to be looked at again.
const MIN_REQUEUE: Duration = Duration::from_millis(200);

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
        Ok(synced) => match Box::pin(report(gs, ctx, synced)).await {
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
            let hpa = cached_child(&ctx.caches.hpas, gs, gs.spec.autoscaling.is_some())?;
            let route = cached_child(&ctx.caches.routes.store, gs, gs.spec.route.is_some())?;
            let observed = Observed {
                deployment: deployment.as_ref(),
                rollout: None,
                error: Some(&err),
                hpa: hpa.as_ref(),
                service_monitors: ctx.caches.service_monitors.presence(),
                routes: ctx.caches.routes.presence(),
                route: route.as_ref(),
                route_https: gateway::serves_https(gs, &ctx.caches.gateways.store)?,
            };
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

/// Fetch, validate, build, apply, observe. Returns the live Deployment,
/// the rollout decision and the Events to publish; when it fails after a
/// write, it publishes those Events itself.
async fn sync(gs: &GoServer, ctx: &Context) -> Result<Synced> {
    // Fetch: every referenced Secret must exist. Only metadata is requested.
    let secrets = namespaced::<Secret>(ctx, gs)?;
    for secret in &gs.spec.secrets {
        match secrets.get_metadata_opt(&secret.name).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(Error::SecretNotFound {
                    name: secret.name.clone(),
                });
            }
            // Without `get` on Secrets the check cannot be made; the pods
            // then report a missing Secret themselves.
            Err(kube::Error::Api(status)) if status.code == 403 => {
                warn!(
                    secret = %secret.name,
                    "not allowed to check that referenced Secrets exist; skipping the check"
                );
                break;
            }
            Err(e) => return Err(Error::kube(format!("get Secret {}", secret.name), e)),
        }
    }

    build::validate(gs)?;
    let spec_revision = build::spec_revision(gs)?;
    // Requests by annotation change the status this reconcile starts from;
    // the rest of it works on that view.
    let (view, handled) = handle_requests(ctx, gs, &spec_revision.name)?;
    let gs = view.as_ref();
    let now = now();
    let mut plan = rollout::canary::plan(gs, &spec_revision.name, &now);
    let in_force = if plan.stable == spec_revision.name {
        spec_revision.clone()
    } else {
        stored_revision(ctx, gs, &plan.stable).await?
    };
    let canary = canary_run(ctx, gs, &mut plan, &spec_revision).await?;
    let canary_revision = canary.as_ref().map(|c| c.revision.clone());
    let children = build::build_with_canary(gs, in_force.clone(), canary)?;
    let applier = Applier {
        client: &ctx.client,
        caches: &ctx.caches,
        written: &ctx.written,
        gs,
    };
    let mut changes = Vec::new();
    let phase = match &plan.canary {
        Some(c) if c.draining => "drain",
        Some(_) => "canary",
        None if plan.stable != spec_revision.name => "rollback",
        None => "apply",
    };
    let outcome = fault::in_phase(phase, Box::pin(applier.apply(children, &mut changes))).await;
    let defaulted = defaulted_note(gs, &changes);
    let told = apply::tell(&changes);
    // Every write made is told, also when a later one failed.
    let apply::Applied {
        deployment,
        canary: live_canary,
        route,
    } = match outcome {
        Ok(live) => live,
        Err(err) => {
            publish_changes(ctx, gs, told).await;
            return Err(err);
        }
    };

    // Observe: how far the revision in force is, and its verification.
    let runs_in_force = runs(&deployment, &in_force.name);
    let canary_observed = match (&live_canary, &canary_revision) {
        (Some(live), Some(revision)) => Some(rollout::canary::Observed {
            revision,
            complete: runs(live, &revision.name) && status::rollout_complete(live),
            deadline_exceeded: runs(live, &revision.name) && status::deadline_exceeded(live),
            draining: plan.canary.as_ref().is_some_and(|c| c.draining),
        }),
        _ => None,
    };
    let decision_id = decision_id();
    let observation = rollout::Observation {
        now: &now,
        spec_revision: &spec_revision.name,
        in_force: &in_force,
        complete: runs_in_force && status::rollout_complete(&deployment),
        deadline_exceeded: runs_in_force && status::deadline_exceeded(&deployment),
        canary: canary_observed,
        routing: rollout::canary::routing(gs, route.as_ref()),
        decision_id: &decision_id,
    };
    let mut decision = rollout::progress(gs, &observation, None);
    if let Some(due) = decision.measure.take() {
        let samples = measure(ctx, gs, &due).await;
        decision = rollout::progress(gs, &observation, Some(&samples));
    }
    Ok(Synced {
        deployment,
        decision,
        told,
        defaulted,
        handled,
    })
}

/// What [`sync`] did and saw.
struct Synced {
    deployment: Deployment,
    decision: rollout::Decision,
    /// The Events for the writes made, not yet published.
    told: Vec<Told>,
    /// The note of a `DefaultedRequests` Event to publish with them.
    defaulted: Option<String>,
    /// Requests by annotation, applied to the status to write.
    handled: Vec<Handled>,
}

/// Writes what a successful [`sync`] found, then tells its decisions: the
/// status first (the decision recorded), the Events and the deliveries
/// after, and a second status write for the Events recorded.
async fn report(gs: &GoServer, ctx: &Context, synced: Synced) -> Result<Action> {
    let Synced {
        deployment,
        mut decision,
        told,
        defaulted,
        handled,
    } = synced;
    let hpa = cached_child(&ctx.caches.hpas, gs, gs.spec.autoscaling.is_some())?;
    let route = cached_child(&ctx.caches.routes.store, gs, gs.spec.route.is_some())?;
    let route_https = gateway::serves_https(gs, &ctx.caches.gateways.store)?;
    let receivers = rollout::receivers(gs);
    ctx.notifier.drop_gone(|object, uid| {
        ctx.goservers
            .get(object)
            .is_some_and(|live| live.uid().as_deref() == Some(uid))
    });
    // What this process learnt since its last write (Events recorded,
    // deliveries answered) goes into this one.
    let learnt = ctx.notifier.learnt(gs);
    outbox::settle(&mut decision.outbox, &learnt, &receivers);
    // A status that carries requests is written only over the version of
    // the GoServer they were read from: a cached copy older than the live
    // one (whose requests may be done already) gets a conflict and a retry
    // on a fresh copy. The same holds for every write that changes the
    // rollout state (see `Error::StatusConflict`).
    let requests = !handled.is_empty();
    // The Events are not waited for before the status: a Deployment that
    // comes up meanwhile is seen one round trip sooner.
    let written = {
        let first = observed(
            ctx,
            &deployment,
            &decision,
            hpa.as_ref(),
            route.as_ref(),
            route_https,
        );
        let ((), (), written) = tokio::join!(
            publish_changes(ctx, gs, told),
            publish_defaulted(ctx, gs, defaulted),
            write_status(gs, ctx, &first, Some(requests))
        );
        written?
    };
    ctx.notifier.forget(gs, &learnt);
    finish_requests(ctx, gs, handled).await?;
    publish_dropped(ctx, gs, &decision.dropped).await;

    // Told only once recorded: an operator stopped before this point tells
    // it after its restart, and nothing is told of a decision that was
    // never recorded.
    let mut requeue = decision.requeue;
    if ctx.notifier.record_events(gs, &decision.outbox).await {
        // The recorded Events leave the outbox now, not at the next write.
        let mut after = gs.clone();
        after.status = Some(written.status.clone());
        after.metadata.resource_version = written.resource_version.clone();
        let learnt = ctx.notifier.learnt(&after);
        outbox::settle(&mut decision.outbox, &learnt, &receivers);
        let second = observed(
            ctx,
            &deployment,
            &decision,
            hpa.as_ref(),
            route.as_ref(),
            route_https,
        );
        write_status(&after, ctx, &second, Some(false)).await?;
        ctx.notifier.forget(&after, &learnt);
    }
    let now = now();
    ctx.notifier.deliver(gs, &decision.outbox, &now);
    if let Some(next) = outbox::next_due(&decision.outbox, &now) {
        requeue = Some(requeue.map_or(next, |r| r.min(next)));
    }
    ctx.clear_failures(gs);
    info!(outcome = "ok", "reconcile finished");
    let next = requeue.map_or(RESYNC, |d| d.clamp(MIN_REQUEUE, RESYNC));
    Ok(Action::requeue(next))
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

/// Delay before retry number `failures` (1-based): 1 s, 2 s, 4 s, ... 5 min.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
