//! What a look at a rollout sees ([`Observation`], [`Sample`]) and what it
//! decides ([`Decision`]): the status to write, the decisions to tell.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::outbox;
use super::prometheus::QueryError;
use super::spec::{DueQuery, receivers};
use crate::build::Revision;
use crate::crd::{
    Baseline, CanaryStatus, DecisionKind, GoServer, HistoryEntry, MetricValue, Notification,
    Verdict as HistoryVerdict, VerificationStatus,
};

/// History entries kept in status.
pub const HISTORY_LIMIT: usize = 10;

/// The reason of a verification whose query Prometheus refuses.
pub const INVALID_QUERY: &str = "InvalidQuery";

/// The reason of a verification held for a person: its comparison with
/// the baseline scored between the marginal and the pass threshold.
pub const MARGINAL: &str = "Marginal";

/// The reason of a verification held off by Prometheus being away.
pub const PROMETHEUS_UNAVAILABLE: &str = "PrometheusUnavailable";

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
    pub canary: Option<CanaryFacts<'a>>,
    /// Whether the route's Gateways took its current weights.
    pub routing: Routing,
    /// The id of a decision made in this look: a fresh one every look, so
    /// that no two decisions share one (a revision retried and failing
    /// again is another decision).
    pub decision_id: &'a str,
}

/// One metric's measurement: a value, no data (`None`), or a provider error.
pub type Measurement = Result<Option<f64>, QueryError>;

/// One metric's sample: its value and, for a metric with a traffic guard,
/// the requests behind it.
#[derive(Debug)]
pub struct Sample {
    pub metric: String,
    pub value: Measurement,
    pub traffic: Option<Measurement>,
    /// For a compared metric of a canary: its baseline's value.
    pub baseline: Option<Measurement>,
}

/// The queries a due measurement runs, filled in for the revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    pub revision: String,
    pub queries: Vec<DueQuery>,
}

/// The rollout part of the status, and what to do next.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub revision: String,
    pub last_good_revision: Option<String>,
    pub failed_revision: Option<String>,
    pub verification: Option<VerificationStatus>,
    /// The last verified revision's samples, to compare the next one with.
    pub baseline: Option<Baseline>,
    pub history: Vec<HistoryEntry>,
    pub canary: Option<CanaryStatus>,
    /// Decisions still to be told, with the one made now, if any.
    pub outbox: Vec<Notification>,
    /// Decisions that left the outbox untold because it was full.
    pub dropped: Vec<Notification>,
    /// A measurement is due: run these queries and call [`progress`]
    /// again with the samples.
    pub measure: Option<Due>,
    /// Look again after this long (the next measurement), if sooner than
    /// the regular resync.
    pub requeue: Option<Duration>,
}

/// The id of a decision recorded by an operator before the outbox: the
/// one its webhook carried, so a receiver that saw it drops the repeat.
pub(super) fn legacy_id(gs: &GoServer, revision: &str, event: DecisionKind) -> String {
    format!(
        "{}:{revision}:{}",
        gs.uid().unwrap_or_default(),
        event.as_str()
    )
}

impl Decision {
    /// The rollout state stored in the status of `gs`, with the revision
    /// in force as observed; a `failedRevision` the spec no longer yields
    /// is dropped.
    pub(super) fn carried(gs: &GoServer, observed: &Observation<'_>) -> Self {
        let old = gs.status.clone().unwrap_or_default();
        let mut outbox = old.outbox;
        let mut verification = old.verification;
        // Earlier operators kept a decision not yet told in the
        // verification's announcement: it moves to the outbox, under the
        // id its webhook had.
        if let Some(v) = verification.as_mut()
            && let Some(a) = v.announcement.take()
        {
            let id = legacy_id(gs, &v.revision, a.event);
            if !outbox.iter().any(|n| n.id == id) {
                outbox.push(Notification {
                    id,
                    event: a.event,
                    revision: v.revision.clone(),
                    previous_good_revision: a.previous_good_revision,
                    message: a.message,
                    decided_at: v
                        .last_measured_at
                        .clone()
                        .unwrap_or_else(|| observed.now.clone()),
                    measurements: v.metrics.clone(),
                    recorded: false,
                    pending: outbox::deliveries(&receivers(gs)),
                });
            }
        }
        Self {
            revision: observed.in_force.name.clone(),
            last_good_revision: old.last_good_revision,
            failed_revision: old
                .failed_revision
                .filter(|failed| failed == observed.spec_revision),
            verification,
            baseline: old.baseline,
            history: old.history,
            canary: old.canary,
            outbox,
            ..Self::default()
        }
    }

    /// Records `revision` as deployed now, at the top of the history.
    pub(super) fn deployed(&mut self, revision: &Revision, now: &Time, verdict: HistoryVerdict) {
        self.history.insert(
            0,
            HistoryEntry {
                revision: revision.name.clone(),
                image: revision.image(),
                deployed_at: now.clone(),
                verdict,
                metrics: Vec::new(),
                compared_with: None,
            },
        );
        self.history.truncate(HISTORY_LIMIT);
    }

    /// Adds a decision to tell, dropping the oldest one when the outbox is
    /// full.
    pub(super) fn queue(&mut self, notification: Notification) {
        self.outbox.push(notification);
        let over = self.outbox.len().saturating_sub(outbox::LIMIT);
        self.dropped.extend(self.outbox.drain(..over));
    }

    /// The decision made in the look `id` names, if it made one.
    pub fn made(&self, id: &str) -> Option<&Notification> {
        self.outbox.iter().find(|n| n.id == id)
    }
}

/// A decision about `v.revision` to tell, made in the look `observed`.
pub(super) fn notification(
    gs: &GoServer,
    observed: &Observation<'_>,
    v: &VerificationStatus,
    event: DecisionKind,
    previous_good_revision: Option<String>,
    message: String,
) -> Notification {
    Notification {
        id: observed.decision_id.to_owned(),
        event,
        revision: v.revision.clone(),
        previous_good_revision,
        message,
        decided_at: observed.now.clone(),
        measurements: v.metrics.clone(),
        recorded: false,
        pending: outbox::deliveries(&receivers(gs)),
    }
}

/// Sets the reason of the `Verified` condition and its message.
pub(super) fn note(v: &mut VerificationStatus, reason: &str, message: impl Into<String>) {
    reason.clone_into(&mut v.reason);
    v.message = message.into();
}

pub(super) fn set_verdict(decision: &mut Decision, revision: &str, verdict: HistoryVerdict) {
    if let Some(entry) = decision.history.iter_mut().find(|h| h.revision == revision) {
        entry.verdict = verdict;
    }
}

pub(super) fn record_values(decision: &mut Decision, v: &VerificationStatus) {
    if let Some(entry) = decision
        .history
        .iter_mut()
        .find(|h| h.revision == v.revision)
    {
        entry.metrics = v
            .metrics
            .iter()
            .map(|m| MetricValue {
                name: m.name.clone(),
                value: m.last_value,
                relative_change: m.comparison.as_ref().and_then(|c| c.relative_change),
                class: m.comparison.as_ref().map(|c| c.class),
            })
            .collect();
        entry.compared_with = v
            .comparison
            .as_ref()
            .and_then(|c| c.baseline_revision.clone());
    }
}

pub(super) fn add(time: &Time, duration: Duration) -> Time {
    Time(time.0.checked_add(duration).unwrap_or(time.0))
}

pub(super) fn until(now: &Time, then: &Time) -> Duration {
    let millis = then
        .0
        .as_millisecond()
        .saturating_sub(now.0.as_millisecond());
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// What the controller saw of the canary's Deployment.
pub struct CanaryFacts<'a> {
    /// The revision it runs.
    pub revision: &'a Revision,
    /// Every replica of it is updated and available.
    pub complete: bool,
    /// It gave up on its progress deadline.
    pub deadline_exceeded: bool,
    /// It is only kept to drain (the plan said so): no step of it is judged.
    pub draining: bool,
}

/// What the controller saw of the route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    /// The canary backend's weight in the live route; `None` without one.
    pub canary_weight: Option<i32>,
    /// Whether every parent Gateway accepted the route's current
    /// generation, or which did not and why.
    pub accepted: Result<(), String>,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            canary_weight: None,
            accepted: Ok(()),
        }
    }
}
