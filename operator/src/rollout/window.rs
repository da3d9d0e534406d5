//! A verification window, shared by both strategies: when samples are
//! due, how they count, and how a window ends (passed, failed, no data,
//! past its deadline).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::compare;
use super::decision::note;
use super::decision::{
    Decision, Due, INVALID_QUERY, Observation, PROMETHEUS_UNAVAILABLE, Sample, add, notification,
    set_verdict, until,
};
use super::judge::{Outcome, count, outcome};
use super::spec::{Timing, auto_rollback, queries};
use crate::crd::{
    Analysis, Baseline, ComparisonOutcome, DeadlineAction, DecisionKind, GoServer, MetricStatus,
    Verdict as HistoryVerdict, VerificationPhase, VerificationSpec, VerificationStatus,
};

/// A new verification of `revision`, judged by what `spec` asks for now.
pub(super) fn begin(
    revision: String,
    spec: &VerificationSpec,
    now: &Time,
    message: String,
) -> VerificationStatus {
    VerificationStatus {
        revision,
        phase: VerificationPhase::Pending,
        started_at: Some(now.clone()),
        reason: "Pending".to_owned(),
        message,
        analysis: Some(Analysis::of(spec)),
        ..VerificationStatus::default()
    }
}

/// The analysis `v` judges by: its record, or, for a verification begun by
/// an operator that kept none, what the spec asks for now (recorded from
/// here on). A record whose query Prometheus refused gives way to an edited
/// spec: it cannot run as it stands.
pub(super) fn analysis_in_force(spec: &VerificationSpec, v: &mut VerificationStatus) -> Analysis {
    let asked = Analysis::of(spec);
    match &v.analysis {
        Some(recorded) if v.reason == INVALID_QUERY && *recorded != asked => {
            v.metrics.clear();
            v.last_measured_at = None;
            v.overdue_at = None;
            note(
                v,
                "Measuring",
                "the analysis was edited after a query was refused; measuring with the new one",
            );
            v.analysis = Some(asked.clone());
            asked
        }
        Some(recorded) => recorded.clone(),
        None => {
            v.analysis = Some(asked.clone());
            asked
        }
    }
}

/// Whether `v` is still open: neither passed nor failed.
pub(super) fn open(v: &VerificationStatus) -> bool {
    !matches!(
        v.phase,
        VerificationPhase::Passed | VerificationPhase::Failed
    )
}

/// The samples of a measurement that is due now, and whether it is held
/// past its window ([`held_past`]); `None` when none is due (the next look
/// is set) or when it is due but not taken yet (the queries to run are
/// set).
#[allow(clippy::too_many_arguments)]
pub(super) fn due_samples<'s>(
    gs: &GoServer,
    observed: &Observation<'_>,
    v: &mut VerificationStatus,
    analysis: &Analysis,
    first: &Time,
    window_end: &Time,
    baseline: Option<&str>,
    samples: Option<&'s [Sample]>,
    decision: &mut Decision,
) -> Option<(&'s [Sample], bool)> {
    let now = observed.now;
    let timing = Timing::of(analysis);
    let next = v
        .last_measured_at
        .as_ref()
        .map_or_else(|| first.clone(), |t| add(t, timing.interval));
    if now.0 < next.0 {
        decision.requeue = Some(until(now, &next));
        return None;
    }
    let held = held_past(v, window_end);
    let Some(samples) = samples else {
        let queries = queries(gs, &v.revision, baseline, analysis)
            .into_iter()
            .zip(&analysis.metrics)
            .filter(|(_, metric)| !frozen(analysis, v, &metric.name, held))
            .map(|(query, _)| query)
            .collect();
        decision.measure = Some(Due {
            revision: v.revision.clone(),
            queries,
        });
        return None;
    };
    v.last_measured_at = Some(now.clone());
    Some((samples, held))
}

/// Whether `v` is measured past its window because it has no verdict yet:
/// the window was over at the last measurement already, and this is no
/// post-verification (whose every sample counts).
pub(super) fn held_past(v: &VerificationStatus, window_end: &Time) -> bool {
    v.phase == VerificationPhase::Measuring
        && v.last_measured_at
            .as_ref()
            .is_some_and(|t| t.0 >= window_end.0)
}

/// Whether `metric` is done measuring: while a revision is held past its
/// window ([`held_past`]), a metric with enough valid samples is neither
/// asked nor counted again, so a revision held for another metric's lack
/// of data does not pile up failures past its window.
pub(super) fn frozen(
    analysis: &Analysis,
    v: &VerificationStatus,
    metric: &str,
    held: bool,
) -> bool {
    held && v.metrics.iter().any(|m| {
        m.name == metric && m.passed.saturating_add(m.failed) >= analysis.min_samples.max(1)
    })
}

/// What went wrong with the provider in one measurement.
#[derive(Default)]
pub(super) struct Trouble {
    /// A query Prometheus refused as invalid (it will not work as written).
    invalid: Option<String>,
    /// Prometheus could not answer (it may later).
    unavailable: Option<String>,
}

impl Trouble {
    /// Notes the trouble as the verification's reason; whether there was
    /// any.
    pub(super) fn note(&self, v: &mut VerificationStatus) -> bool {
        if let Some(message) = &self.invalid {
            note(v, INVALID_QUERY, message.clone());
            true
        } else if let Some(message) = &self.unavailable {
            note(v, PROMETHEUS_UNAVAILABLE, message.clone());
            true
        } else {
            false
        }
    }
}

/// What the deadline does to a verification still without a verdict.
pub(super) enum Overdue {
    /// Nothing more: it holds, `overdueAt` says since when.
    Hold,
    /// It fails, for this reason.
    Fail(String),
    /// It passes.
    Pass,
}

/// The deadline's action on `v`, past its deadline without a verdict;
/// a hold is noted once, in `overdueAt`.
pub(super) fn at_deadline(
    observed: &Observation<'_>,
    analysis: &Analysis,
    v: &mut VerificationStatus,
) -> Overdue {
    match analysis.on_deadline {
        DeadlineAction::Hold => {
            if v.overdue_at.is_none() {
                v.overdue_at = Some(observed.now.clone());
            }
            Overdue::Hold
        }
        DeadlineAction::Rollback => Overdue::Fail(format!(
            "no verdict {} after the window ({}: {})",
            analysis.deadline, v.reason, v.message
        )),
        DeadlineAction::Pass => Overdue::Pass,
    }
}

pub(super) fn no_data(analysis: &Analysis, metric: &str) -> String {
    format!(
        "metric {metric} has fewer than {} valid measurements; measuring on",
        analysis.min_samples
    )
}

/// Counts one measurement into `v`; what went wrong with the provider.
/// Metrics that are [`frozen`] are not counted.
pub(super) fn count_all(
    analysis: &Analysis,
    v: &mut VerificationStatus,
    samples: &[Sample],
    held: bool,
) -> Trouble {
    let mut counts: Vec<MetricStatus> = analysis
        .metrics
        .iter()
        .map(|m| {
            v.metrics
                .iter()
                .find(|c| c.name == m.name)
                .cloned()
                .unwrap_or_else(|| MetricStatus {
                    name: m.name.clone(),
                    ..MetricStatus::default()
                })
        })
        .collect();
    let mut trouble = Trouble::default();
    for (metric, counts) in analysis.metrics.iter().zip(&mut counts) {
        if frozen(analysis, v, &metric.name, held) {
            continue;
        }
        let Some(sample) = samples.iter().find(|s| s.metric == metric.name) else {
            continue;
        };
        let value = match (&sample.value, &sample.traffic) {
            (Err(err), _) | (_, Some(Err(err))) => {
                let message = format!("metric {}: {err}", metric.name);
                if err.is_invalid() {
                    trouble.invalid = Some(message);
                } else {
                    trouble.unavailable = Some(message);
                }
                continue;
            }
            (Ok(value), traffic) => {
                let guard = metric.traffic.as_ref();
                let too_little = match (guard, traffic) {
                    (Some(guard), Some(Ok(requests))) => requests.is_none_or(|r| r < guard.min),
                    _ => false,
                };
                if too_little {
                    count(counts, Outcome::Inconclusive, *value);
                    continue;
                }
                *value
            }
        };
        let outcome = outcome(metric, value);
        count(counts, outcome, value);
        if outcome != Outcome::Inconclusive {
            let baseline = match &sample.baseline {
                Some(Ok(value)) => *value,
                _ => None,
            };
            compare::baseline::keep(metric, counts, value, baseline);
        }
    }
    v.metrics = counts;
    trouble
}

/// What the comparison with the baseline says of a revision whose every
/// bound held over its window.
pub(super) enum Compared {
    /// Passed, or nothing to compare.
    Pass,
    /// Marginal: held for a person, for this reason.
    Hold(String),
    /// Failed, for this reason.
    Fail(String),
}

/// The comparison of `v` with `baseline`, made once (the first time every
/// bound held over the whole window) and kept in `v.comparison`; later
/// looks read it from there, so a revision is tested once, not at every
/// interval. `baseline` is asked for only when the comparison is made.
pub(super) fn compared(
    observed: &Observation<'_>,
    analysis: &Analysis,
    v: &mut VerificationStatus,
    baseline: impl FnOnce(&VerificationStatus) -> Option<Baseline>,
) -> Compared {
    if !compare::baseline::compares(analysis) {
        return Compared::Pass;
    }
    let outcome = if let Some(done) = &v.comparison {
        done.outcome
    } else {
        let baseline = baseline(v);
        compare::baseline::compare(analysis, v, baseline.as_ref(), observed.now)
    };
    let message = v
        .comparison
        .as_ref()
        .map(|c| c.message.clone())
        .unwrap_or_default();
    match outcome {
        ComparisonOutcome::Pass | ComparisonOutcome::NoBaseline => Compared::Pass,
        ComparisonOutcome::Marginal => Compared::Hold(format!(
            "{message}; held for a person: `kubectl gantry promote` or `rollback`"
        )),
        ComparisonOutcome::Fail => Compared::Fail(message),
    }
}

/// Passes `v`; `how` says why when it is not the metrics' verdict.
pub(super) fn pass(
    gs: &GoServer,
    observed: &Observation<'_>,
    v: &mut VerificationStatus,
    decision: &mut Decision,
    how: Option<&str>,
) {
    v.phase = VerificationPhase::Passed;
    let message = match how {
        None => {
            note(v, "Passed", "every metric passed".to_owned());
            format!("revision {} passed verification", v.revision)
        }
        Some(how) => {
            let message = format!(
                "revision {} passed {how} ({}: {})",
                v.revision, v.reason, v.message
            );
            note(v, "PassedAtDeadline", message.clone());
            message
        }
    };
    decision.baseline = compare::baseline::left_by(v, observed.now);
    let previous = decision.last_good_revision.replace(v.revision.clone());
    set_verdict(decision, &v.revision, HistoryVerdict::Passed);
    decision.requeue = None;
    let told = notification(gs, observed, v, DecisionKind::Verified, previous, message);
    decision.queue(told);
}

pub(super) fn fail(
    gs: &GoServer,
    observed: &Observation<'_>,
    v: &mut VerificationStatus,
    decision: &mut Decision,
    message: &str,
) {
    v.phase = VerificationPhase::Failed;
    note(v, "Failed", message);
    decision.requeue = None;
    let good = decision.last_good_revision.clone();
    let rollback = auto_rollback(gs) && good.is_some();
    if let (true, Some(good)) = (rollback, &good) {
        // Held from now on: the next reconcile runs the good revision.
        decision.failed_revision = Some(v.revision.clone());
        decision.revision.clone_from(good);
        set_verdict(decision, &v.revision, HistoryVerdict::RolledBack);
        decision.requeue = Some(Duration::ZERO);
    } else {
        set_verdict(decision, &v.revision, HistoryVerdict::Failed);
    }
    let (event, message) = if rollback {
        (
            DecisionKind::RolledBack,
            format!(
                "revision {} failed verification ({message}); rolled back to {}",
                v.revision,
                good.as_deref().unwrap_or_default()
            ),
        )
    } else {
        (
            DecisionKind::Failed,
            format!("revision {} failed verification: {message}", v.revision),
        )
    };
    let told = notification(gs, observed, v, event, good, message);
    decision.queue(told);
}
