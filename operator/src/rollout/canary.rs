//! The `Canary` strategy: a new revision runs beside the stable one and
//! gets the share of the route's traffic each step names; each step is
//! judged on its own samples by `rollout.verification`.
//!
//! ```text
//! new spec revision ─> plan: stable = last good, canary = spec at step 0
//!   Pending     until the canary's pods are available
//!   Measuring   warmup, then a sample every interval until `pause` is up
//!     passed    ─> next step (Pending again, counts reset)
//!     last step ─> Promoting: the stable Deployment takes the revision,
//!                  the canary keeps its share until that is rolled out
//!                  ─> Promoted: the canary is deleted, one backend again
//!     failed    ─> Aborted: weight 0 at once; with autoRollback the
//!                  revision is held off (failedRevision) and the canary
//!                  deleted, without it the canary stays at weight 0
//! ```
//!
//! All of it lives in `status.canary` and `status.verification`: an
//! operator restart resumes at the same step, with the samples taken.

use std::time::Duration;

use super::{
    DEFAULT_INTERVAL, DEFAULT_WARMUP, Decision, Measurement, Observation, count_all, duration,
    fail, judge, no_data, note, pass, record_values, verification,
};
use crate::build::Revision;
use crate::crd::{
    CanaryPhase, CanaryStatus, CanaryStep, GoServer, RolloutStrategy, StepVerdict,
    Verdict as HistoryVerdict, VerificationPhase, VerificationSpec, VerificationStatus,
};
use judge::Verdict;

/// Which revision each Deployment runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The stable Deployment's: [`super::in_force`]'s answer, or the last
    /// good revision while a canary runs.
    pub stable: String,
    /// The canary, while one runs. It always runs the spec's revision.
    pub canary: Option<CanaryPlan>,
}

/// A canary to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanaryPlan {
    pub revision: String,
    /// Percent of the route's traffic.
    pub weight: i32,
}

/// What the controller saw of the canary's Deployment.
pub struct Observed<'a> {
    /// The revision it runs.
    pub revision: &'a Revision,
    /// Every replica of it is updated and available.
    pub complete: bool,
    /// It gave up on its progress deadline.
    pub deadline_exceeded: bool,
}

/// The steps of a canary, when the spec asks for canaries and can have
/// them (the schema makes sure of both).
pub fn steps(gs: &GoServer) -> Option<&[CanaryStep]> {
    let rollout = gs.spec.rollout.as_ref()?;
    let usable = rollout.strategy == RolloutStrategy::Canary
        && rollout.verification.is_some()
        && gs.spec.route.is_some()
        && !rollout.steps.is_empty();
    usable.then_some(rollout.steps.as_slice())
}

/// The revisions to run for a spec whose revision is `spec_revision`.
///
/// A canary runs when the spec's revision is new and there is a last good
/// revision to compare it with: the first revision of a `GoServer` is
/// verified as with `RollingUpdate`. It keeps running while it is being
/// promoted, until the stable Deployment has taken its revision.
pub fn plan(gs: &GoServer, spec_revision: &str) -> Plan {
    let stable = super::in_force(gs, spec_revision);
    let Some(steps) = steps(gs) else {
        return Plan {
            stable,
            canary: None,
        };
    };
    let status = gs.status.as_ref();
    let canary = status
        .and_then(|s| s.canary.as_ref())
        .filter(|c| c.revision == spec_revision);
    let last_good = status.and_then(|s| s.last_good_revision.as_deref());
    match last_good {
        // Held off after a rollback, or nothing to compare with.
        _ if stable != spec_revision => Plan {
            stable,
            canary: None,
        },
        None => Plan {
            stable,
            canary: None,
        },
        // Passed (or promoted by request): the canary keeps its share
        // until the stable Deployment runs the revision.
        Some(good) if good == spec_revision => Plan {
            canary: canary
                .filter(|c| matches!(c.phase, CanaryPhase::Progressing | CanaryPhase::Promoting))
                .map(|c| CanaryPlan {
                    revision: c.revision.clone(),
                    weight: c.weight,
                }),
            stable,
        },
        Some(good) => Plan {
            stable: good.to_owned(),
            canary: Some(CanaryPlan {
                revision: spec_revision.to_owned(),
                weight: canary.map_or(steps[0].weight, |c| c.weight),
            }),
        },
    }
}

/// Moves a canary that is being promoted along: `Promoted` once the stable
/// Deployment runs its revision, every replica available.
pub(super) fn promoting(observed: &Observation<'_>, decision: &mut Decision) {
    let Some(running) = &observed.canary else {
        return;
    };
    let Some(c) = decision
        .canary
        .as_mut()
        .filter(|c| c.revision == running.revision.name)
    else {
        return;
    };
    if observed.complete {
        c.phase = CanaryPhase::Promoted;
        c.weight = 0;
        // The next reconcile deletes the canary and its backend.
        decision.requeue = Some(Duration::ZERO);
    } else {
        c.phase = CanaryPhase::Promoting;
    }
}

/// A canary recorded as running when none runs any more has ended
/// without a verdict of its own: the spec went back to the stable
/// revision, a rollback was asked for, or the strategy changed. It is
/// recorded as aborted, at weight 0.
pub(super) fn ended(observed: &Observation<'_>, decision: &mut Decision) {
    if observed.canary.is_some() {
        return;
    }
    if let Some(c) = decision
        .canary
        .as_mut()
        .filter(|c| matches!(c.phase, CanaryPhase::Progressing | CanaryPhase::Promoting))
    {
        c.phase = CanaryPhase::Aborted;
        c.weight = 0;
    }
}

/// Judges the canary's step in force.
pub(super) fn judge(
    gs: &GoServer,
    observed: &Observation<'_>,
    canary: &Observed<'_>,
    measurements: Option<&[Measurement]>,
) -> Decision {
    let revision = canary.revision.name.clone();
    let mut decision = Decision::carried(gs, observed);
    if decision.history.first().map(|h| h.revision.as_str()) != Some(revision.as_str()) {
        decision.deployed(canary.revision, observed.now, HistoryVerdict::Unverified);
    }
    let (Some(spec), Some(steps)) = (verification(gs), steps(gs)) else {
        return decision;
    };
    let mut c = decision
        .canary
        .take()
        .filter(|c| c.revision == revision)
        .unwrap_or_else(|| CanaryStatus {
            revision: revision.clone(),
            phase: CanaryPhase::Progressing,
            step: 0,
            weight: steps[0].weight,
            ..CanaryStatus::default()
        });
    let mut v = match decision.verification.take() {
        Some(v) if v.revision == revision => v,
        _ => VerificationStatus {
            revision,
            phase: VerificationPhase::Pending,
            started_at: Some(observed.now.clone()),
            reason: "Pending".to_owned(),
            message: format!(
                "step 1 of {}: waiting for the canary's pods to be available",
                steps.len()
            ),
            ..VerificationStatus::default()
        },
    };
    let open = !matches!(
        v.phase,
        VerificationPhase::Passed | VerificationPhase::Failed
    );
    if c.phase == CanaryPhase::Progressing && open {
        let mut step = Step {
            gs,
            spec,
            steps,
            now: observed.now,
            v: &mut v,
            c: &mut c,
            decision: &mut decision,
        };
        step.advance(canary, measurements);
    }
    decision.verification = Some(v);
    decision.canary = Some(c);
    decision
}

/// One look at the step in force.
struct Step<'a> {
    gs: &'a GoServer,
    spec: &'a VerificationSpec,
    steps: &'a [CanaryStep],
    now: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    v: &'a mut VerificationStatus,
    c: &'a mut CanaryStatus,
    decision: &'a mut Decision,
}

impl Step<'_> {
    fn index(&self) -> usize {
        usize::try_from(self.c.step)
            .unwrap_or(0)
            .min(self.steps.len() - 1)
    }

    /// `step 2 of 3 (50%)`.
    fn name(&self) -> String {
        format!(
            "step {} of {} ({}% of the traffic)",
            self.index() + 1,
            self.steps.len(),
            self.c.weight
        )
    }

    fn advance(&mut self, canary: &Observed<'_>, measurements: Option<&[Measurement]>) {
        let now = self.now;
        if self.v.phase == VerificationPhase::Pending {
            if canary.complete {
                self.v.phase = VerificationPhase::Measuring;
                self.v.available_at = Some(now.clone());
                self.c.step_started_at = Some(now.clone());
                let message = format!("{}: warming up before the first measurement", self.name());
                note(self.v, "Measuring", message);
            } else if canary.deadline_exceeded {
                self.abort(
                    "the canary's pods did not become available within the Deployment's \
                     progress deadline",
                );
                return;
            } else {
                // The canary Deployment's own events bring the next look.
                return;
            }
        }

        let warmup = duration::or(&self.spec.warmup, DEFAULT_WARMUP);
        let interval =
            duration::or(&self.spec.interval, DEFAULT_INTERVAL).max(Duration::from_secs(1));
        let pause = duration::or(&self.steps[self.index()].pause, warmup + interval);
        let Some(started) = self.v.available_at.clone() else {
            return;
        };
        let first = super::add(&started, warmup);
        let step_end = super::add(&started, pause);
        let next = self
            .v
            .last_measured_at
            .as_ref()
            .map_or_else(|| first.clone(), |t| super::add(t, interval));
        if now.0 < next.0 {
            self.decision.requeue = Some(super::until(now, &next));
            return;
        }
        let Some(results) = measurements else {
            self.decision.measure = true;
            return;
        };
        self.v.last_measured_at = Some(now.clone());
        let provider_error = count_all(self.spec, self.v, results);
        record_values(self.decision, &self.v.revision, &self.v.metrics);
        self.decision.requeue = Some(interval);

        match judge::verdict(self.spec, &self.v.metrics, now.0 >= step_end.0) {
            Verdict::Failed { message, .. } => self.abort(&message),
            // A step is never passed on a provider error: it holds until
            // Prometheus answers again.
            _ if provider_error.is_some() => {
                let message = format!(
                    "{}: held: {}",
                    self.name(),
                    provider_error.unwrap_or_default()
                );
                note(self.v, "PrometheusUnavailable", message);
            }
            Verdict::Measuring => {
                let message = format!("{}: measuring until {}", self.name(), step_end.0);
                note(self.v, "Measuring", message);
            }
            Verdict::NoData { metric } => {
                let message = format!("{}: {}", self.name(), no_data(self.spec, &metric));
                note(self.v, "NoData", message);
            }
            Verdict::Passed => self.passed(),
        }
    }

    fn verdict(&mut self, verdict: HistoryVerdict) {
        self.c.verdicts.push(StepVerdict {
            step: self.c.step,
            weight: self.c.weight,
            verdict,
            decided_at: self.now.clone(),
            metrics: self.v.metrics.clone(),
        });
    }

    fn passed(&mut self) {
        self.verdict(HistoryVerdict::Passed);
        let passed = self.name();
        let next = self.index() + 1;
        if let Some(step) = self.steps.get(next) {
            // The next step starts once the canary has its new size; its
            // samples are its own.
            self.c.step = self.c.step.saturating_add(1);
            self.c.weight = step.weight;
            self.c.step_started_at = None;
            self.v.phase = VerificationPhase::Pending;
            self.v.available_at = None;
            self.v.last_measured_at = None;
            self.v.metrics.clear();
            let message = format!("{passed} passed; next: {}", self.name());
            note(self.v, "StepPassed", message);
        } else {
            pass(self.v, self.decision);
            self.c.phase = CanaryPhase::Promoting;
            if let Some(announcement) = self.v.announcement.as_mut() {
                announcement.message = format!(
                    "canary {} passed all {} steps; promoting it",
                    self.v.revision,
                    self.steps.len()
                );
            }
        }
        // The next reconcile applies the new weight.
        self.decision.requeue = Some(Duration::ZERO);
    }

    /// Every request back to stable at once; the revision follows
    /// `autoRollback`.
    fn abort(&mut self, why: &str) {
        self.verdict(HistoryVerdict::Failed);
        let message = format!("{}: {why}", self.name());
        self.c.phase = CanaryPhase::Aborted;
        self.c.weight = 0;
        fail(self.gs, self.v, self.decision, &message);
        self.decision.requeue = Some(Duration::ZERO);
    }
}

#[cfg(test)]
mod tests;
