//! The status of a `GoServer`, computed from its observed Deployment.
//!
//! [`compute`] is pure: the controller hands it the Deployment it just
//! applied (or found) and, on a permanent error, that error; it returns the
//! whole status, keeping the `lastTransitionTime` of every condition whose
//! status did not change. The controller writes the result only when it
//! differs from what is stored.
//!
//! By condition group: `workload.rs` (`Ready`, `Available`, `Progressing`,
//! `Degraded`), `verification.rs` (`Verified`), `children.rs` (`Scaling`,
//! `Monitored`, `Routed`); below them `deployment.rs` (the Deployment's
//! rollout facts), `draft.rs` (condition types and drafts) and
//! `inputs.rs` (what the controller hands in).

mod children;
mod deployment;
mod draft;
mod inputs;
mod verification;
mod workload;

use children::{monitored, routed, scaling};
use deployment::Rollout;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use verification::{canary_aborted, verification_verdicts};
use workload::{available, degraded, progressing, ready};

use crate::build::{self};
use crate::crd::{GoServer, GoServerStatus};

pub use deployment::{deadline_exceeded, rollout_complete};
pub use draft::{
    AVAILABLE, DEGRADED, MONITORED, PROGRESSING, READY, ROUTED, SCALING, VERIFIED, condition,
};
pub use inputs::Inputs;

/// The status `gs` should have.
pub fn compute(gs: &GoServer, observed: &Inputs<'_>, now: &Time) -> GoServerStatus {
    let old = gs.status.clone().unwrap_or_default();
    let generation = gs.metadata.generation;
    let name = gs.metadata.name.as_deref().unwrap_or_default();
    let rollout = observed.deployment.map(Rollout::of);
    // On an early error the rollout state stays as stored.
    let RolloutState {
        revision,
        last_good_revision,
        failed_revision,
        verification,
        baseline,
        history,
        canary,
        outbox,
    } = observed
        .rollout
        .map_or_else(|| RolloutState::stored(&old), RolloutState::decided);
    let (verified, rollout_degraded) = verification_verdicts(
        gs,
        revision.as_deref(),
        failed_revision.as_deref(),
        verification.as_ref(),
    );
    let rollout_degraded = rollout_degraded.or_else(|| {
        canary_aborted(
            revision.as_deref(),
            failed_revision.as_deref(),
            verification.as_ref(),
            canary.as_ref(),
        )
    });

    let mut verdicts = vec![
        ready(observed, rollout.as_ref()),
        available(observed.deployment),
        progressing(revision.as_deref(), rollout.as_ref()),
        match (observed.error, rollout_degraded) {
            (None, Some(verdict)) => verdict,
            _ => degraded(gs, observed, rollout.as_ref()),
        },
    ];
    verdicts.extend(verified);
    if gs.spec.autoscaling.is_some() {
        verdicts.push(scaling(observed.hpa));
    }
    if gs.spec.route.is_some() {
        verdicts.push(routed(observed.routes, observed.route));
    }
    if let Some(monitoring) = gs.spec.monitoring.as_ref().filter(|m| m.service_monitor) {
        verdicts.push(monitored(name, &monitoring.path, observed.service_monitors));
    }
    let conditions = verdicts
        .into_iter()
        .map(|v| {
            let transition = old
                .conditions
                .iter()
                .find(|c| c.type_ == v.type_ && c.status == v.status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: v.type_.to_owned(),
                status: v.status.to_owned(),
                reason: v.reason,
                message: v.message,
                last_transition_time: transition,
                observed_generation: generation,
            }
        })
        .collect();

    GoServerStatus {
        observed_generation: generation,
        conditions,
        desired_replicas: rollout.as_ref().map(|r| r.desired),
        replicas: rollout.as_ref().map(|r| r.replicas),
        ready_replicas: rollout.as_ref().map(|r| r.ready),
        updated_replicas: rollout.as_ref().map(|r| r.updated),
        replica_summary: rollout
            .as_ref()
            .map(|r| format!("{}/{}", r.ready, r.desired)),
        canary_summary: canary_summary(gs, canary.as_ref()),
        selector: Some(build::selector_string(name)),
        url: build::url(gs, observed.route_https),
        revision,
        last_good_revision,
        failed_revision,
        verification,
        baseline,
        history,
        canary,
        outbox,
    }
}

/// `step 2/4, 25%` while a canary runs, for `kubectl get gs`; None once it
/// is promoted or aborted, or without one.
fn canary_summary(gs: &GoServer, canary: Option<&crate::crd::CanaryStatus>) -> Option<String> {
    let canary = canary.filter(|c| {
        matches!(
            c.phase,
            crate::crd::CanaryPhase::Progressing | crate::crd::CanaryPhase::Promoting
        )
    })?;
    let steps = gs.spec.rollout.as_ref().map_or(0, |r| r.steps.len());
    Some(format!(
        "step {}/{steps}, {}%",
        canary.step.saturating_add(1),
        canary.weight
    ))
}

/// The rollout part of the status: the decision's, or on an early error
/// the stored one.
struct RolloutState {
    revision: Option<String>,
    last_good_revision: Option<String>,
    failed_revision: Option<String>,
    verification: Option<crate::crd::VerificationStatus>,
    baseline: Option<crate::crd::Baseline>,
    history: Vec<crate::crd::HistoryEntry>,
    canary: Option<crate::crd::CanaryStatus>,
    outbox: Vec<crate::crd::Notification>,
}

impl RolloutState {
    fn decided(d: &crate::rollout::Decision) -> Self {
        Self {
            revision: Some(d.revision.clone()),
            last_good_revision: d.last_good_revision.clone(),
            failed_revision: d.failed_revision.clone(),
            verification: d.verification.clone(),
            baseline: d.baseline.clone(),
            history: d.history.clone(),
            canary: d.canary.clone(),
            outbox: d.outbox.clone(),
        }
    }

    fn stored(old: &GoServerStatus) -> Self {
        Self {
            revision: old.revision.clone(),
            last_good_revision: old.last_good_revision.clone(),
            failed_revision: old.failed_revision.clone(),
            verification: old.verification.clone(),
            baseline: old.baseline.clone(),
            history: old.history.clone(),
            canary: old.canary.clone(),
            outbox: old.outbox.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
