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
pub mod outbox;
pub mod prometheus;
pub mod request;
pub mod webhook;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::build::Revision;
use crate::crd::{
    Analysis, CanaryStatus, DeadlineAction, GoServer, HistoryEntry, MetricStatus, MetricValue,
    Notification, Verdict as HistoryVerdict, VerificationPhase, VerificationSpec,
    VerificationStatus,
};
use judge::{Outcome, Verdict, count, outcome};
use prometheus::QueryError;

/// History entries kept in status.
pub const HISTORY_LIMIT: usize = 10;

const DEFAULT_WARMUP: Duration = Duration::from_secs(30);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
const DEFAULT_DEADLINE: Duration = Duration::from_secs(900);
const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The reason of a verification whose query Prometheus refuses.
pub const INVALID_QUERY: &str = "InvalidQuery";
/// The reason of a verification held off by Prometheus being away.
pub const PROMETHEUS_UNAVAILABLE: &str = "PrometheusUnavailable";

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
    /// Whether the route's Gateways took its current weights.
    pub routing: canary::Routing,
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
}

/// The queries a due measurement runs, filled in for the revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    pub revision: String,
    pub queries: Vec<DueQuery>,
}

/// One metric's queries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueQuery {
    pub metric: String,
    pub query: String,
    pub traffic: Option<String>,
}

pub use crate::crd::DecisionKind;

/// The rollout part of the status, and what to do next.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub revision: String,
    pub last_good_revision: Option<String>,
    pub failed_revision: Option<String>,
    pub verification: Option<VerificationStatus>,
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

/// The verification's timing, from the analysis in force.
struct Timing {
    warmup: Duration,
    interval: Duration,
    window: Duration,
    post: Duration,
    deadline: Duration,
}

impl Timing {
    fn of(analysis: &Analysis) -> Self {
        Self {
            warmup: duration::or(&analysis.warmup, DEFAULT_WARMUP),
            interval: duration::or(&analysis.interval, DEFAULT_INTERVAL)
                .max(Duration::from_secs(1)),
            window: duration::or(&analysis.window, DEFAULT_WINDOW),
            post: analysis
                .post_verification
                .as_deref()
                .map_or(Duration::ZERO, |p| duration::or(p, Duration::ZERO)),
            deadline: duration::or(&analysis.deadline, DEFAULT_DEADLINE),
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

/// The names of the receivers told of every decision: `webhook` for the
/// `webhook` field, then `receivers` in order.
pub fn receivers(gs: &GoServer) -> Vec<String> {
    let Some(spec) = verification(gs) else {
        return Vec::new();
    };
    spec.webhook
        .as_ref()
        .map(|_| outbox::WEBHOOK.to_owned())
        .into_iter()
        .chain(spec.receivers.iter().map(|r| r.name.clone()))
        .collect()
}

/// The variables a query template is filled in with.
fn variables(gs: &GoServer, revision: &str, analysis: &Analysis) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("name", gs.name_any()),
        ("namespace", gs.namespace().unwrap_or_default()),
        ("revision", revision.to_owned()),
        ("interval", analysis.interval.clone()),
        ("window", analysis.window.clone()),
    ])
}

/// The queries of every metric of `analysis`, with the variables filled in.
pub fn queries(gs: &GoServer, revision: &str, analysis: &Analysis) -> Vec<DueQuery> {
    let variables = variables(gs, revision, analysis);
    analysis
        .metrics
        .iter()
        .map(|m| DueQuery {
            metric: m.name.clone(),
            query: prometheus::fill(&m.query, &variables),
            traffic: m
                .traffic
                .as_ref()
                .map(|t| prometheus::fill(&t.query, &variables)),
        })
        .collect()
}

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

/// The id of a decision recorded by an operator before the outbox: the
/// one its webhook carried, so a receiver that saw it drops the repeat.
fn legacy_id(gs: &GoServer, revision: &str, event: DecisionKind) -> String {
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
    fn carried(gs: &GoServer, observed: &Observation<'_>) -> Self {
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
            history: old.history,
            canary: old.canary,
            outbox,
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

    /// Adds a decision to tell, dropping the oldest one when the outbox is
    /// full.
    fn tell(&mut self, notification: Notification) {
        self.outbox.push(notification);
        let over = self.outbox.len().saturating_sub(outbox::LIMIT);
        self.dropped.extend(self.outbox.drain(..over));
    }

    /// The decision made in the look `id` names, if it made one.
    pub fn made(&self, id: &str) -> Option<&Notification> {
        self.outbox.iter().find(|n| n.id == id)
    }
}

/// A new verification of `revision`, judged by what `spec` asks for now.
fn begin(
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
fn analysis_in_force(spec: &VerificationSpec, v: &mut VerificationStatus) -> Analysis {
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

/// Whether `v` is still open: neither passed nor failed.
fn open(v: &VerificationStatus) -> bool {
    !matches!(
        v.phase,
        VerificationPhase::Passed | VerificationPhase::Failed
    )
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
        samples,
        decision,
    ) else {
        return;
    };
    let trouble = count_all(&analysis, v, samples, held);
    decision.requeue = Some(timing.interval);

    match judge::verdict(&analysis, &v.metrics, now.0 >= window_end.0) {
        Verdict::Failed { message, .. } => fail(gs, observed, v, decision, &message),
        verdict => {
            if !trouble.note(v) {
                match verdict {
                    Verdict::Measuring => {
                        note(v, "Measuring", format!("measuring until {}", window_end.0));
                    }
                    Verdict::NoData { metric } => {
                        note(v, "NoData", no_data(&analysis, &metric));
                    }
                    Verdict::Passed if now.0 < post_end.0 => {
                        v.phase = VerificationPhase::PostVerification;
                        note(
                            v,
                            "Measuring",
                            format!("passed; measuring on until {}", post_end.0),
                        );
                    }
                    Verdict::Passed => pass(gs, observed, v, decision, None),
                    Verdict::Failed { .. } => {}
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
    record_values(decision, &v.revision, &v.metrics);
}

/// The samples of a measurement that is due now, and whether it is held
/// past its window ([`held_past`]); `None` when none is due (the next look
/// is set) or when it is due but not taken yet (the queries to run are
/// set).
#[allow(clippy::too_many_arguments)]
fn due_samples<'s>(
    gs: &GoServer,
    observed: &Observation<'_>,
    v: &mut VerificationStatus,
    analysis: &Analysis,
    first: &Time,
    window_end: &Time,
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
        let queries = queries(gs, &v.revision, analysis)
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
fn held_past(v: &VerificationStatus, window_end: &Time) -> bool {
    v.phase == VerificationPhase::Measuring
        && v.last_measured_at
            .as_ref()
            .is_some_and(|t| t.0 >= window_end.0)
}

/// Whether `metric` is done measuring: while a revision is held past its
/// window ([`held_past`]), a metric with enough valid samples is neither
/// asked nor counted again, so a revision held for another metric's lack
/// of data does not pile up failures past its window.
fn frozen(analysis: &Analysis, v: &VerificationStatus, metric: &str, held: bool) -> bool {
    held && v.metrics.iter().any(|m| {
        m.name == metric && m.passed.saturating_add(m.failed) >= analysis.min_samples.max(1)
    })
}

/// What went wrong with the provider in one measurement.
#[derive(Default)]
struct Trouble {
    /// A query Prometheus refused as invalid (it will not work as written).
    invalid: Option<String>,
    /// Prometheus could not answer (it may later).
    unavailable: Option<String>,
}

impl Trouble {
    /// Notes the trouble as the verification's reason; whether there was
    /// any.
    fn note(&self, v: &mut VerificationStatus) -> bool {
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
enum Overdue {
    /// Nothing more: it holds, `overdueAt` says since when.
    Hold,
    /// It fails, for this reason.
    Fail(String),
    /// It passes.
    Pass,
}

/// The deadline's action on `v`, past its deadline without a verdict;
/// a hold is noted once, in `overdueAt`.
fn at_deadline(
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

fn no_data(analysis: &Analysis, metric: &str) -> String {
    format!(
        "metric {metric} has fewer than {} valid measurements; measuring on",
        analysis.min_samples
    )
}

/// Counts one measurement into `v`; what went wrong with the provider.
/// Metrics that are [`frozen`] are not counted.
fn count_all(
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
        count(counts, outcome(metric, value), value);
    }
    v.metrics = counts;
    trouble
}

/// A decision about `v.revision` to tell, made in the look `observed`.
fn notification(
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

/// Passes `v`; `how` says why when it is not the metrics' verdict.
fn pass(
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
    let previous = decision.last_good_revision.replace(v.revision.clone());
    set_verdict(decision, &v.revision, HistoryVerdict::Passed);
    decision.requeue = None;
    let told = notification(gs, observed, v, DecisionKind::Verified, previous, message);
    decision.tell(told);
}

fn fail(
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
    decision.tell(told);
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
