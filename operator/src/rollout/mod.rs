//! Rollout verification: every new revision is judged by its own metrics,
//! and a bad one is rolled back to the last revision that passed.
//!
//! ```text
//! spec revision ─> in_force() ─> (children applied) ─> progress(.., None)
//!                                                       │ measure due?
//!                       Prometheus queries <────────────┘
//!                              └──> progress(.., Some(results)) ─> Decision
//!                                    status (verification, history,
//!                                    lastGoodRevision, failedRevision),
//!                                    an Event and a webhook call per decision,
//!                                    when to look again
//! ```
//!
//! Everything here but the clients is pure: the state lives in the
//! `GoServer`'s status, so an operator restart resumes a verification where
//! it stood, and a rollback is a status transition made once (the next
//! reconcile finds `failedRevision` set and keeps the good revision in
//! force). Time comes in as `now`.
//!
//! - [`judge`]: measurements to a verdict.
//! - [`prometheus`]: the query client and query templates.
//! - [`duration`]: Go-style durations of the spec.
//! - [`webhook`]: the signed POST of each decision.
//! - [`request`]: rollback, promotion and retry asked for by annotation.
//! - [`canary`]: the `Canary` strategy, which judges a new revision step
//!   by step beside the stable one.

pub mod canary;
pub mod compare;
mod decision;
pub mod duration;
pub mod http;
pub mod judge;
pub mod outbox;
pub mod prometheus;
pub mod request;
mod spec;
pub mod webhook;
mod window;

pub use crate::crd::DecisionKind;
use crate::crd::{
    GoServer, Verdict as HistoryVerdict, VerificationPhase, VerificationSpec, VerificationStatus,
};
pub use decision::{
    Decision, Due, HISTORY_LIMIT, INVALID_QUERY, MARGINAL, Measurement, Observation,
    PROMETHEUS_UNAVAILABLE, Sample,
};
use decision::{add, note, record_values};
use judge::Standing;
pub use spec::{DueQuery, compares_beside, in_force, query_timeout, receivers, spec};
use spec::{Timing, verification};
use window::{
    Compared, Overdue, analysis_in_force, at_deadline, begin, compared, count_all, due_samples,
    fail, no_data, open, pass,
};

/// Moves the verification of the revision in force along.
///
/// Without `samples`, a due measurement is only announced
/// (`Decision::measure`); with them, they are counted and judged. A
/// decision made now is added to `Decision::outbox`, with the id the
/// observation brings.
pub fn progress(gs: &GoServer, observed: &Observation<'_>, samples: Option<&[Sample]>) -> Decision {
    let mut decision = match &observed.canary {
        // The spec's revision beside the stable one: its steps are judged.
        Some(c)
            if c.revision.name != observed.in_force.name
                && c.revision.name == observed.spec_revision =>
        {
            canary::judge(gs, observed, c, samples)
        }
        _ => {
            let mut decision = step(gs, observed, samples);
            canary::promoting(observed, &mut decision);
            canary::ended(observed, &mut decision);
            decision
        }
    };
    canary::drain(gs, observed, &mut decision);
    decision
}

fn step(gs: &GoServer, observed: &Observation<'_>, samples: Option<&[Sample]>) -> Decision {
    let in_force = observed.in_force.name.clone();
    let mut decision = Decision::carried(gs, observed);
    if in_force == observed.spec_revision
        && decision.history.first().map(|h| h.revision.as_str()) != Some(in_force.as_str())
    {
        // A spec back on the verified revision deploys it again; it is
        // verified already.
        let verdict = if verification(gs).is_some()
            && decision.last_good_revision.as_deref() == Some(in_force.as_str())
        {
            HistoryVerdict::Passed
        } else {
            HistoryVerdict::Unverified
        };
        decision.deployed(observed.in_force, observed.now, verdict);
    }

    let Some(spec) = verification(gs) else {
        // Without verification every available revision counts as good.
        decision.verification = None;
        if observed.complete {
            decision.last_good_revision = Some(in_force);
        }
        return decision;
    };

    if decision.last_good_revision.as_deref() == Some(in_force.as_str()) {
        // Verified already: after a rollback the failed verification stays
        // on show; a spec back on the good revision needs no new one.
        let keep = decision.verification.as_ref().is_some_and(|v| {
            v.revision == in_force || decision.failed_revision.as_deref() == Some(&v.revision)
        });
        if !keep {
            decision.verification = Some(VerificationStatus {
                revision: in_force,
                phase: VerificationPhase::Passed,
                started_at: Some(observed.now.clone()),
                reason: "Passed".to_owned(),
                message: "this revision passed verification before".to_owned(),
                ..VerificationStatus::default()
            });
        }
        return decision;
    }

    let mut verification = match decision.verification.take() {
        Some(v) if v.revision == in_force => v,
        // A new revision restarts verification, whatever stood before.
        _ => begin(
            in_force.clone(),
            spec,
            observed.now,
            "waiting for every replica of the revision to be available".to_owned(),
        ),
    };
    advance(
        gs,
        spec,
        observed,
        samples,
        &mut verification,
        &mut decision,
    );
    decision.verification = Some(verification);
    decision
}

fn advance(
    gs: &GoServer,
    spec: &VerificationSpec,
    observed: &Observation<'_>,
    samples: Option<&[Sample]>,
    v: &mut VerificationStatus,
    decision: &mut Decision,
) {
    let now = observed.now;
    match v.phase {
        VerificationPhase::Passed | VerificationPhase::Failed => return,
        VerificationPhase::Pending => {
            if observed.complete {
                v.phase = VerificationPhase::Measuring;
                v.available_at = Some(now.clone());
                note(
                    v,
                    "Measuring",
                    "available; warming up before the first measurement",
                );
            } else if observed.deadline_exceeded && spec.auto_rollback {
                let message = format!(
                    "revision {} did not become available within the Deployment's progress deadline",
                    v.revision
                );
                fail(gs, observed, v, decision, &message);
                return;
            } else {
                // The Deployment's own events bring the next look.
                return;
            }
        }
        VerificationPhase::Measuring | VerificationPhase::PostVerification => {}
    }

    let analysis = analysis_in_force(spec, v);
    let timing = Timing::of(&analysis);
    let Some(available_at) = v.available_at.clone() else {
        return;
    };
    let first = add(&available_at, timing.warmup);
    let window_end = add(&first, timing.window);
    let post_end = add(&window_end, timing.post);
    let overdue = add(&window_end, timing.deadline);
    let Some((samples, held)) = due_samples(
        gs,
        observed,
        v,
        &analysis,
        &first,
        &window_end,
        None,
        samples,
        decision,
    ) else {
        return;
    };
    let trouble = count_all(&analysis, v, samples, held);
    decision.requeue = Some(timing.interval);

    match judge::standing(&analysis, &v.metrics, now.0 >= window_end.0) {
        Standing::Failed { message, .. } => fail(gs, observed, v, decision, &message),
        verdict => {
            if !trouble.note(v) {
                match verdict {
                    Standing::Measuring => {
                        note(v, "Measuring", format!("measuring until {}", window_end.0));
                    }
                    Standing::NoData { metric } => {
                        note(v, "NoData", no_data(&analysis, &metric));
                    }
                    Standing::Passed => match compared(observed, &analysis, v, |_| {
                        compare::baseline::usable(
                            decision.baseline.as_ref(),
                            decision.last_good_revision.as_deref(),
                        )
                        .cloned()
                    }) {
                        Compared::Fail(message) => fail(gs, observed, v, decision, &message),
                        Compared::Hold(message) => note(v, MARGINAL, message),
                        Compared::Pass if now.0 < post_end.0 => {
                            v.phase = VerificationPhase::PostVerification;
                            note(
                                v,
                                "Measuring",
                                format!("passed; measuring on until {}", post_end.0),
                            );
                        }
                        Compared::Pass => pass(gs, observed, v, decision, None),
                    },
                    Standing::Failed { .. } => {}
                }
            }
            if open(v) && v.phase != VerificationPhase::PostVerification && now.0 >= overdue.0 {
                match at_deadline(observed, &analysis, v) {
                    Overdue::Hold => {}
                    Overdue::Fail(why) => fail(gs, observed, v, decision, &why),
                    Overdue::Pass => pass(
                        gs,
                        observed,
                        v,
                        decision,
                        Some("at its deadline, without a verdict"),
                    ),
                }
            }
        }
    }
    record_values(decision, v);
}

#[cfg(test)]
mod tests;
