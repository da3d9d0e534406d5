//! The `Canary` strategy: a new revision runs beside the stable one and
//! gets the share of the route's traffic each step names; each step is
//! judged on its own samples by `rollout.verification`.
//!
//! ```text
//! new spec revision ─> plan: stable = last good, canary = spec at step 0
//!   Pending     until the canary's pods are available and every parent
//!               Gateway accepted the route with the step's weight
//!               (`rollout.gateway.timeout` at most: then aborted)
//!   Measuring   warmup, then a sample every interval until `pause` is up
//!     passed    ─> next step (Pending again, counts reset)
//!     last step ─> Promoting: the stable Deployment takes the revision,
//!                  the canary keeps its share until that is rolled out
//!                  ─> Promoted: weight 0
//!     failed    ─> Aborted: weight 0 at once; with autoRollback the
//!                  revision is held off (failedRevision)
//!   Promoted or Aborted, weight 0: once the Gateways accepted it, the
//!   canary keeps its pods for `rollout.gateway.drain`, then it is deleted
//!   (promoted, or rolled back) or scaled to 0 (aborted, the spec still on
//!   its revision)
//! ```
//!
//! All of it lives in `status.canary` and `status.verification`: an
//! operator restart resumes at the same step, with the samples taken.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub use super::decision::{CanaryFacts, Routing};
use super::decision::{Decision, MARGINAL, Observation, Sample, add, note, record_values, until};
use super::spec::{DEFAULT_INTERVAL, DEFAULT_WARMUP, Timing, in_force, verification};
use super::window::at_deadline;
use super::window::{
    Compared, Overdue, analysis_in_force, begin, compared, count_all, due_samples, fail, no_data,
    open, pass,
};
use super::{compare, duration, judge};
use crate::crd::{
    CanaryPhase, CanaryStatus, CanaryStep, GatewayWait, GoServer, RolloutStrategy, StepVerdict,
    Verdict as HistoryVerdict, VerificationPhase, VerificationSpec, VerificationStatus,
};
use judge::Standing;
pub use routing::routing;

/// Which revision each Deployment runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The stable Deployment's: [`super::in_force`]'s answer, or the last
    /// good revision while a canary runs.
    pub stable: String,
    /// The canary, while one runs or drains.
    pub canary: Option<CanaryPlan>,
}

/// A canary to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanaryPlan {
    pub revision: String,
    /// Percent of the route's traffic.
    pub weight: i32,
    /// At weight 0 and keeping its pods until its drain is over: it is
    /// neither created again nor resized.
    pub draining: bool,
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

/// How the spec waits for its Gateways.
fn gateway_wait(gs: &GoServer) -> GatewayWait {
    gs.spec
        .rollout
        .as_ref()
        .and_then(|r| r.gateway.clone())
        .unwrap_or_default()
}

/// Durations of the Gateway wait: its timeout and the drain.
fn wait_times(gs: &GoServer) -> (Duration, Duration, bool) {
    let wait = gateway_wait(gs);
    (
        duration::or(&wait.timeout, Duration::from_secs(120)),
        duration::or(&wait.drain, Duration::from_secs(30)),
        wait.ignore_route_status,
    )
}

/// Whether `c`, unless the plan runs it as the canary, leaves the traffic
/// and keeps its pods meanwhile: a canary recorded as running (which the
/// spec no longer wants) and one ended but not drained yet.
fn leaving(c: &CanaryStatus, now: &Time) -> bool {
    match c.phase {
        CanaryPhase::Progressing | CanaryPhase::Promoting => true,
        CanaryPhase::Promoted | CanaryPhase::Aborted => {
            c.drain_until.as_ref().is_none_or(|t| now.0 < t.0)
        }
    }
}

/// Whether `c` has ended and still keeps its pods.
fn draining(c: &CanaryStatus, now: &Time) -> bool {
    matches!(c.phase, CanaryPhase::Promoted | CanaryPhase::Aborted) && leaving(c, now)
}

fn drain_plan(c: &CanaryStatus) -> CanaryPlan {
    CanaryPlan {
        revision: c.revision.clone(),
        weight: 0,
        draining: true,
    }
}

/// The revisions to run for a spec whose revision is `spec_revision`.
///
/// A canary runs when the spec's revision is new and there is a last good
/// revision to compare it with: the first revision of a `GoServer` is
/// verified as with `RollingUpdate`. It keeps running while it is being
/// promoted, until the stable Deployment has taken its revision, and,
/// at weight 0, while it drains.
pub fn plan(gs: &GoServer, spec_revision: &str, now: &Time) -> Plan {
    let stable = in_force(gs, spec_revision);
    let status = gs.status.as_ref();
    let recorded = status.and_then(|s| s.canary.as_ref());
    let drained_out = recorded.filter(|c| leaving(c, now)).map(drain_plan);
    let Some(steps) = steps(gs) else {
        return Plan {
            stable,
            canary: drained_out,
        };
    };
    let canary = recorded.filter(|c| c.revision == spec_revision);
    let last_good = status.and_then(|s| s.last_good_revision.as_deref());
    match last_good {
        // Held off after a rollback (the aborted canary drains), or
        // nothing to compare with.
        _ if stable != spec_revision => Plan {
            stable,
            canary: drained_out,
        },
        None => Plan {
            stable,
            canary: None,
        },
        // Passed (or promoted by request): the canary keeps its share
        // until the stable Deployment runs the revision, then drains.
        Some(good) if good == spec_revision => Plan {
            canary: canary
                .filter(|c| matches!(c.phase, CanaryPhase::Progressing | CanaryPhase::Promoting))
                .map(|c| CanaryPlan {
                    revision: c.revision.clone(),
                    weight: c.weight,
                    draining: false,
                })
                .or(drained_out),
            stable,
        },
        Some(good) => Plan {
            stable: good.to_owned(),
            canary: Some(CanaryPlan {
                revision: spec_revision.to_owned(),
                weight: canary.map_or(steps[0].weight, |c| c.weight),
                draining: canary.is_some_and(|c| draining(c, now)),
            }),
        },
    }
}

/// Moves a canary that is being promoted along: `Promoted` once the stable
/// Deployment runs its revision, every replica available.
pub(super) fn promoting(observed: &Observation<'_>, decision: &mut Decision) {
    let Some(running) = observed.canary.as_ref().filter(|c| !c.draining) else {
        return;
    };
    let Some(c) = decision.canary.as_mut().filter(|c| {
        c.revision == running.revision.name
            && matches!(c.phase, CanaryPhase::Progressing | CanaryPhase::Promoting)
    }) else {
        return;
    };
    if observed.complete {
        c.phase = CanaryPhase::Promoted;
        set_weight(c, 0, observed.now);
        // The next reconcile takes the canary's backend to weight 0.
        decision.requeue = Some(Duration::ZERO);
    } else {
        c.phase = CanaryPhase::Promoting;
    }
}

/// A canary recorded as running when none runs any more (or one is only
/// kept to drain) has ended without a verdict of its own: the spec went
/// back to the stable revision, a rollback was asked for, or the strategy
/// changed. It is recorded as aborted, at weight 0.
pub(super) fn ended(observed: &Observation<'_>, decision: &mut Decision) {
    if observed.canary.as_ref().is_some_and(|c| !c.draining) {
        return;
    }
    if let Some(c) = decision
        .canary
        .as_mut()
        .filter(|c| matches!(c.phase, CanaryPhase::Progressing | CanaryPhase::Promoting))
    {
        c.phase = CanaryPhase::Aborted;
        set_weight(c, 0, observed.now);
    }
}

fn set_weight(c: &mut CanaryStatus, weight: i32, now: &Time) {
    c.weight = weight;
    c.weight_set_at = Some(now.clone());
}

/// Starts the drain of a canary that left the traffic, once the route
/// carries weight 0 for it and its Gateways accepted that (or the Gateway
/// timeout is up, or the spec does not wait for them); asks to look again
/// when the drain or the wait is over.
pub(super) fn drain(gs: &GoServer, observed: &Observation<'_>, decision: &mut Decision) {
    let now = observed.now;
    let Some(c) = decision
        .canary
        .as_mut()
        .filter(|c| matches!(c.phase, CanaryPhase::Promoted | CanaryPhase::Aborted))
    else {
        return;
    };
    let (timeout, drain, ignore_status) = wait_times(gs);
    let wake = if let Some(until) = &c.drain_until {
        until.clone()
    } else {
        // A canary recorded before weights were timed drains from now.
        let set = c.weight_set_at.get_or_insert_with(|| now.clone()).clone();
        let off_route = observed.routing.canary_weight.unwrap_or(0) == 0;
        let taken = off_route && (ignore_status || observed.routing.accepted.is_ok());
        // No canary Deployment to drain: one ended long ago, or by an
        // operator that did not drain.
        let gone = observed.canary.is_none();
        let timed_out = now.0 >= add(&set, timeout).0;
        if !(taken || timed_out || gone) {
            soonest(decision, until(now, &add(&set, timeout)));
            return;
        }
        let until = if gone { now.clone() } else { add(now, drain) };
        c.drain_until = Some(until.clone());
        until
    };
    if now.0 < wake.0 {
        soonest(decision, until(now, &wake));
    }
}

/// Asks to look again after `after`, unless sooner is asked already.
fn soonest(decision: &mut Decision, after: Duration) {
    decision.requeue = Some(decision.requeue.map_or(after, |r| r.min(after)));
}

/// Judges the canary's step in force.
pub(super) fn judge(
    gs: &GoServer,
    observed: &Observation<'_>,
    canary: &CanaryFacts<'_>,
    samples: Option<&[Sample]>,
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
            weight_set_at: Some(observed.now.clone()),
            ..CanaryStatus::default()
        });
    let mut v = match decision.verification.take() {
        Some(v) if v.revision == revision => v,
        _ => begin(
            revision,
            spec,
            observed.now,
            format!(
                "step 1 of {}: waiting for the canary's pods to be available",
                steps.len()
            ),
        ),
    };
    if canary.draining && matches!(c.phase, CanaryPhase::Progressing | CanaryPhase::Promoting) {
        // Ended by a request (a rollback asked for mid-step).
        c.phase = CanaryPhase::Aborted;
        set_weight(&mut c, 0, observed.now);
    }
    if c.phase == CanaryPhase::Progressing && open(&v) {
        let mut step = Step {
            gs,
            spec,
            steps,
            observed,
            v: &mut v,
            c: &mut c,
            decision: &mut decision,
        };
        step.advance(canary, samples);
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
    observed: &'a Observation<'a>,
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

    /// `step 2 of 3 (50% of the traffic)`.
    fn name(&self) -> String {
        format!(
            "step {} of {} ({}% of the traffic)",
            self.index() + 1,
            self.steps.len(),
            self.c.weight
        )
    }

    /// Whether the route carries the step's weight and every parent
    /// Gateway took it; otherwise why not, for the condition.
    fn routed(&self) -> Result<(), String> {
        let routing = &self.observed.routing;
        if routing.canary_weight != Some(self.c.weight) {
            return Err("the route does not carry the step's weight yet".to_owned());
        }
        let (_, _, ignore_status) = wait_times(self.gs);
        if ignore_status {
            return Ok(());
        }
        routing.accepted.clone()
    }

    fn advance(&mut self, canary: &CanaryFacts<'_>, samples: Option<&[Sample]>) {
        let now = self.observed.now;
        if self.v.phase == VerificationPhase::Pending {
            let set = self
                .c
                .weight_set_at
                .get_or_insert_with(|| now.clone())
                .clone();
            let (timeout, _, _) = wait_times(self.gs);
            let routed = self.routed();
            if canary.complete && routed.is_ok() {
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
            } else if let Err(why) = routed {
                if now.0 >= add(&set, timeout).0 {
                    let message = format!(
                        "the route's weights were not taken within {}: {why}",
                        gateway_wait(self.gs).timeout
                    );
                    self.abort(&message);
                } else {
                    let message = format!("{}: waiting for the Gateway: {why}", self.name());
                    note(self.v, "WaitingForGateway", message);
                    soonest(self.decision, until(now, &add(&set, timeout)));
                }
                return;
            } else {
                // The canary Deployment's own events bring the next look.
                return;
            }
        }

        let analysis = analysis_in_force(self.spec, self.v);
        let timing = Timing::of(&analysis);
        let warmup = duration::or(&analysis.warmup, DEFAULT_WARMUP);
        let interval =
            duration::or(&analysis.interval, DEFAULT_INTERVAL).max(Duration::from_secs(1));
        let pause = duration::or(&self.steps[self.index()].pause, warmup + interval);
        let Some(started) = self.v.available_at.clone() else {
            return;
        };
        let first = add(&started, warmup);
        let step_end = add(&started, pause);
        let overdue = add(&step_end, timing.deadline);
        // The baseline beside the canary runs the stable revision.
        let baseline =
            compare::baseline::compares(&analysis).then_some(self.observed.in_force.name.as_str());
        let Some((samples, held)) = due_samples(
            self.gs,
            self.observed,
            self.v,
            &analysis,
            &first,
            &step_end,
            baseline,
            samples,
            self.decision,
        ) else {
            return;
        };
        let trouble = count_all(&analysis, self.v, samples, held);
        record_values(self.decision, self.v);
        self.decision.requeue = Some(interval);

        match judge::standing(&analysis, &self.v.metrics, now.0 >= step_end.0) {
            Standing::Failed { message, .. } => self.abort(&message),
            verdict => {
                // A step is never passed on a provider error: it holds
                // until Prometheus answers again (or its deadline).
                let name = self.name();
                if trouble.note(self.v) {
                    self.v.message = format!("{name}: held: {}", self.v.message);
                } else {
                    match verdict {
                        Standing::Measuring => {
                            let message = format!("{name}: measuring until {}", step_end.0);
                            note(self.v, "Measuring", message);
                        }
                        Standing::NoData { metric } => {
                            let message = format!("{name}: {}", no_data(&analysis, &metric));
                            note(self.v, "NoData", message);
                        }
                        Standing::Passed => {
                            if self.compared(&analysis, &name) {
                                return;
                            }
                        }
                        Standing::Failed { .. } => {}
                    }
                }
                if now.0 >= overdue.0 {
                    self.at_deadline(&analysis);
                }
            }
        }
    }

    /// Every bound held over the step: its comparison with the baseline
    /// measured beside it decides, or holds it for a person (`false`).
    fn compared(&mut self, analysis: &crate::crd::Analysis, name: &str) -> bool {
        let stable = self.observed.in_force.name.clone();
        let now = self.observed.now;
        match compared(self.observed, analysis, self.v, |v| {
            compare::baseline::beside(v, &stable, now)
        }) {
            Compared::Pass => self.passed(),
            Compared::Fail(message) => self.abort(&message),
            Compared::Hold(message) => {
                note(self.v, MARGINAL, format!("{name}: {message}"));
                return false;
            }
        }
        true
    }

    /// The deadline's action on a step without a verdict.
    fn at_deadline(&mut self, analysis: &crate::crd::Analysis) {
        match at_deadline(self.observed, analysis, self.v) {
            Overdue::Hold => {}
            Overdue::Fail(why) => self.abort(&why),
            Overdue::Pass => self.passed(),
        }
    }

    fn verdict(&mut self, verdict: HistoryVerdict) {
        self.c.verdicts.push(StepVerdict {
            step: self.c.step,
            weight: self.c.weight,
            verdict,
            decided_at: self.observed.now.clone(),
            metrics: self.v.metrics.clone(),
        });
    }

    fn passed(&mut self) {
        self.verdict(HistoryVerdict::Passed);
        let passed = self.name();
        let next = self.index() + 1;
        if let Some(step) = self.steps.get(next) {
            // The next step starts once the canary has its new size and the
            // Gateways its new weight; its samples are its own.
            self.c.step = self.c.step.saturating_add(1);
            set_weight(self.c, step.weight, self.observed.now);
            self.c.step_started_at = None;
            self.v.phase = VerificationPhase::Pending;
            self.v.available_at = None;
            self.v.last_measured_at = None;
            self.v.overdue_at = None;
            self.v.metrics.clear();
            self.v.comparison = None;
            let message = format!("{passed} passed; next: {}", self.name());
            note(self.v, "StepPassed", message);
        } else {
            pass(self.gs, self.observed, self.v, self.decision, None);
            self.c.phase = CanaryPhase::Promoting;
            let message = format!(
                "canary {} passed all {} steps; promoting it",
                self.v.revision,
                self.steps.len()
            );
            if let Some(told) = self.decision.outbox.last_mut() {
                told.message = message;
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
        set_weight(self.c, 0, self.observed.now);
        fail(self.gs, self.observed, self.v, self.decision, &message);
        self.decision.requeue = Some(Duration::ZERO);
    }
}

mod routing;
#[cfg(test)]
mod tests;
