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
pub mod duration;
pub mod http;
pub mod judge;
pub mod prometheus;
pub mod request;
pub mod webhook;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::build::Revision;
use crate::crd::{
    Announcement, CanaryStatus, GoServer, HistoryEntry, MetricStatus, MetricValue,
    Verdict as HistoryVerdict, VerificationPhase, VerificationSpec, VerificationStatus,
};
use judge::{Verdict, count, outcome};
use prometheus::QueryError;

/// History entries kept in status.
pub const HISTORY_LIMIT: usize = 10;

const DEFAULT_WARMUP: Duration = Duration::from_secs(30);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The revision to run: the spec's own, unless that is the revision that
/// was rolled back (by verification or by request), in which case the last
/// good one stays. A replicas edit keeps the spec's revision, so it does
/// not redeploy the bad one; any change to the template or config does,
/// and so does a retry (see [`request`]).
pub fn in_force(gs: &GoServer, spec_revision: &str) -> String {
    let status = gs.status.as_ref();
    let failed = status.and_then(|s| s.failed_revision.as_deref());
    let last_good = status.and_then(|s| s.last_good_revision.as_deref());
    match (failed, last_good) {
        (Some(failed), Some(good)) if failed == spec_revision => good.to_owned(),
        _ => spec_revision.to_owned(),
    }
}

fn verification(gs: &GoServer) -> Option<&VerificationSpec> {
    gs.spec.rollout.as_ref()?.verification.as_ref()
}

fn auto_rollback(gs: &GoServer) -> bool {
    verification(gs).is_some_and(|v| v.auto_rollback)
}

/// What the controller saw of the revision in force.
pub struct Observation<'a> {
    pub now: &'a Time,
    /// The revision the spec asks for.
    pub spec_revision: &'a str,
    /// The revision the Deployment runs now.
    pub in_force: &'a Revision,
    /// Every replica of the Deployment is updated and available.
    pub complete: bool,
    /// The Deployment gave up on its progress deadline.
    pub deadline_exceeded: bool,
    /// The canary's Deployment, while one runs.
    pub canary: Option<canary::Observed<'a>>,
}

/// One metric's measurement: a value, no data (`None`), or a provider error.
pub type Measurement = Result<Option<f64>, QueryError>;

pub use crate::crd::DecisionKind;

/// A decision to tell people about: an Event and the webhook.
#[derive(Clone, Debug, PartialEq)]
pub struct Decided {
    pub event: DecisionKind,
    pub revision: String,
    pub previous_good_revision: Option<String>,
    pub message: String,
    pub measurements: Vec<MetricStatus>,
}

/// The rollout part of the status, and what to do next.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub revision: String,
    pub last_good_revision: Option<String>,
    pub failed_revision: Option<String>,
    pub verification: Option<VerificationStatus>,
    pub history: Vec<HistoryEntry>,
    pub canary: Option<CanaryStatus>,
    /// A measurement is due: query the revision under verification and
    /// call [`progress`] again with the results.
    pub measure: bool,
    pub decided: Option<Decided>,
    /// Look again after this long (the next measurement), if sooner than
    /// the regular resync.
    pub requeue: Option<Duration>,
}

/// The verification's timing, from the spec.
struct Timing {
    warmup: Duration,
    interval: Duration,
    window: Duration,
    post: Duration,
}

impl Timing {
    fn of(spec: &VerificationSpec) -> Self {
        Self {
            warmup: duration::or(&spec.warmup, DEFAULT_WARMUP),
            interval: duration::or(&spec.interval, DEFAULT_INTERVAL).max(Duration::from_secs(1)),
            window: duration::or(&spec.window, DEFAULT_WINDOW),
            post: spec
                .post_verification
                .as_deref()
                .map_or(Duration::ZERO, |p| duration::or(p, Duration::ZERO)),
        }
    }
}

/// The timeout of one query.
pub fn query_timeout(spec: &VerificationSpec) -> Duration {
    spec.prometheus.as_ref().map_or(DEFAULT_QUERY_TIMEOUT, |p| {
        duration::or(&p.timeout, DEFAULT_QUERY_TIMEOUT)
    })
}

/// The spec's verification settings, if any.
pub fn spec(gs: &GoServer) -> Option<&VerificationSpec> {
    verification(gs)
}

/// The queries of every metric, with the variables filled in.
pub fn queries(gs: &GoServer, revision: &str, spec: &VerificationSpec) -> Vec<String> {
    let variables = BTreeMap::from([
        ("name", gs.name_any()),
        ("namespace", gs.namespace().unwrap_or_default()),
        ("revision", revision.to_owned()),
        ("interval", spec.interval.clone()),
        ("window", spec.window.clone()),
    ]);
    spec.metrics
        .iter()
        .map(|m| prometheus::fill(&m.query, &variables))
        .collect()
}

/// Moves the verification of the revision in force along.
///
/// Without `measurements`, a due measurement is only announced
/// (`Decision::measure`); with them (one per metric, in spec order), they
/// are counted and judged.
///
/// A decision made now, or made earlier and not yet told (its announcement
/// is still in the status), is in `Decision::decided`.
pub fn progress(
    gs: &GoServer,
    observed: &Observation<'_>,
    measurements: Option<&[Measurement]>,
) -> Decision {
    let mut decision = match &observed.canary {
        Some(c) if c.revision.name != observed.in_force.name => {
            canary::judge(gs, observed, c, measurements)
        }
        _ => {
            let mut decision = step(gs, observed, measurements);
            canary::promoting(observed, &mut decision);
            canary::ended(observed, &mut decision);
            decision
        }
    };
    decision.decided = decision.verification.as_ref().and_then(Decided::pending);
    decision
}

impl Decided {
    /// The same for every telling of this decision about `gs`: its UID,
    /// the revision and the event.
    pub fn id(&self, gs: &GoServer) -> String {
        format!(
            "{}:{}:{}",
            gs.uid().unwrap_or_default(),
            self.revision,
            self.event.as_str()
        )
    }

    /// The decision `v` ended in, while it waits to be told.
    fn pending(v: &VerificationStatus) -> Option<Self> {
        let announcement = v.announcement.as_ref()?;
        Some(Self {
            event: announcement.event,
            revision: v.revision.clone(),
            previous_good_revision: announcement.previous_good_revision.clone(),
            message: announcement.message.clone(),
            measurements: v.metrics.clone(),
        })
    }
}

impl Decision {
    /// The rollout state stored in the status of `gs`, with the revision
    /// in force as observed; a `failedRevision` the spec no longer yields
    /// is dropped.
    fn carried(gs: &GoServer, observed: &Observation<'_>) -> Self {
        let old = gs.status.clone().unwrap_or_default();
        Self {
            revision: observed.in_force.name.clone(),
            last_good_revision: old.last_good_revision,
            failed_revision: old
                .failed_revision
                .filter(|failed| failed == observed.spec_revision),
            verification: old.verification,
            history: old.history,
            canary: old.canary,
            ..Self::default()
        }
    }

    /// Records `revision` as deployed now, at the top of the history.
    fn deployed(&mut self, revision: &Revision, now: &Time, verdict: HistoryVerdict) {
        self.history.insert(
            0,
            HistoryEntry {
                revision: revision.name.clone(),
                image: revision.image(),
                deployed_at: now.clone(),
                verdict,
                metrics: Vec::new(),
            },
        );
        self.history.truncate(HISTORY_LIMIT);
    }

    /// The same, with its decision told: the announcement is cleared.
    #[must_use]
    pub fn told(&self) -> Self {
        let mut told = self.clone();
        if let Some(v) = &mut told.verification {
            v.announcement = None;
        }
        told.decided = None;
        told
    }
}

fn step(
    gs: &GoServer,
    observed: &Observation<'_>,
    measurements: Option<&[Measurement]>,
) -> Decision {
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
        _ => VerificationStatus {
            revision: in_force.clone(),
            phase: VerificationPhase::Pending,
            started_at: Some(observed.now.clone()),
            reason: "Pending".to_owned(),
            message: "waiting for every replica of the revision to be available".to_owned(),
            ..VerificationStatus::default()
        },
    };
    advance(
        gs,
        spec,
        observed,
        measurements,
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
    measurements: Option<&[Measurement]>,
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
                fail(gs, v, decision, &message);
                return;
            } else {
                // The Deployment's own events bring the next look.
                return;
            }
        }
        VerificationPhase::Measuring | VerificationPhase::PostVerification => {}
    }

    let timing = Timing::of(spec);
    let Some(available_at) = v.available_at.clone() else {
        return;
    };
    let first = add(&available_at, timing.warmup);
    let window_end = add(&first, timing.window);
    let post_end = add(&window_end, timing.post);
    let next = v
        .last_measured_at
        .as_ref()
        .map_or_else(|| first.clone(), |t| add(t, timing.interval));
    if now.0 < next.0 {
        decision.requeue = Some(until(now, &next));
        return;
    }
    let Some(results) = measurements else {
        decision.measure = true;
        return;
    };

    v.last_measured_at = Some(now.clone());
    let provider_error = count_all(spec, v, results);
    decision.requeue = Some(timing.interval);

    match judge::verdict(spec, &v.metrics, now.0 >= window_end.0) {
        Verdict::Failed { message, .. } => fail(gs, v, decision, &message),
        _ if provider_error.is_some() => {
            note(
                v,
                "PrometheusUnavailable",
                provider_error.unwrap_or_default(),
            );
        }
        Verdict::Measuring => {
            note(v, "Measuring", format!("measuring until {}", window_end.0));
        }
        Verdict::NoData { metric } => {
            note(v, "NoData", no_data(spec, &metric));
        }
        Verdict::Passed if now.0 < post_end.0 => {
            v.phase = VerificationPhase::PostVerification;
            note(
                v,
                "Measuring",
                format!("passed; measuring on until {}", post_end.0),
            );
        }
        Verdict::Passed => pass(v, decision),
    }
    record_values(decision, &v.revision, &v.metrics);
}

fn no_data(spec: &VerificationSpec, metric: &str) -> String {
    format!(
        "metric {metric} has fewer than {} valid measurements; measuring on",
        spec.min_samples
    )
}

/// Counts one measurement of every metric into `v`; the provider error
/// of the last metric that had one.
fn count_all(
    spec: &VerificationSpec,
    v: &mut VerificationStatus,
    results: &[Measurement],
) -> Option<String> {
    let mut counts: Vec<MetricStatus> = spec
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
    let mut provider_error = None;
    for ((metric, counts), result) in spec.metrics.iter().zip(&mut counts).zip(results) {
        match result {
            Ok(value) => count(counts, outcome(metric, *value), *value),
            Err(err) => provider_error = Some(format!("metric {}: {err}", metric.name)),
        }
    }
    v.metrics = counts;
    provider_error
}

fn pass(v: &mut VerificationStatus, decision: &mut Decision) {
    v.phase = VerificationPhase::Passed;
    note(v, "Passed", "every metric passed".to_owned());
    let previous = decision.last_good_revision.replace(v.revision.clone());
    set_verdict(decision, &v.revision, HistoryVerdict::Passed);
    decision.requeue = None;
    v.announcement = Some(Announcement {
        event: DecisionKind::Verified,
        previous_good_revision: previous,
        message: format!("revision {} passed verification", v.revision),
    });
}

fn fail(gs: &GoServer, v: &mut VerificationStatus, decision: &mut Decision, message: &str) {
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
    v.announcement = Some(Announcement {
        event,
        previous_good_revision: good,
        message,
    });
}

/// Sets the reason of the `Verified` condition and its message.
fn note(v: &mut VerificationStatus, reason: &str, message: impl Into<String>) {
    reason.clone_into(&mut v.reason);
    v.message = message.into();
}

fn set_verdict(decision: &mut Decision, revision: &str, verdict: HistoryVerdict) {
    if let Some(entry) = decision.history.iter_mut().find(|h| h.revision == revision) {
        entry.verdict = verdict;
    }
}

fn record_values(decision: &mut Decision, revision: &str, metrics: &[MetricStatus]) {
    if let Some(entry) = decision.history.iter_mut().find(|h| h.revision == revision) {
        entry.metrics = metrics
            .iter()
            .map(|m| MetricValue {
                name: m.name.clone(),
                value: m.last_value,
            })
            .collect();
    }
}

fn add(time: &Time, duration: Duration) -> Time {
    Time(time.0.checked_add(duration).unwrap_or(time.0))
}

fn until(now: &Time, then: &Time) -> Duration {
    let millis = then
        .0
        .as_millisecond()
        .saturating_sub(now.0.as_millisecond());
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

#[cfg(test)]
mod tests;
