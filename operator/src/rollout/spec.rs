//! What the spec asks of a verification: its timing, Prometheus, receivers
//! and queries, with their defaults; which revision is in force.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::ResourceExt;

use super::{duration, outbox, prometheus};
use crate::crd::{Analysis, GoServer, VerificationSpec};

pub(super) const DEFAULT_WARMUP: Duration = Duration::from_secs(30);

pub(super) const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

pub(super) const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

pub(super) const DEFAULT_DEADLINE: Duration = Duration::from_secs(900);

pub(super) const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

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

pub(super) fn verification(gs: &GoServer) -> Option<&VerificationSpec> {
    gs.spec.rollout.as_ref()?.verification.as_ref()
}

pub(super) fn auto_rollback(gs: &GoServer) -> bool {
    verification(gs).is_some_and(|v| v.auto_rollback)
}

/// One metric's queries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueQuery {
    pub metric: String,
    pub query: String,
    pub traffic: Option<String>,
    /// For a compared metric of a canary: the same query for its baseline
    /// (the stable revision's pods of the `baseline` track).
    pub baseline: Option<String>,
}

/// The verification's timing, from the analysis in force.
pub(super) struct Timing {
    pub(super) warmup: Duration,
    pub(super) interval: Duration,
    pub(super) window: Duration,
    pub(super) post: Duration,
    pub(super) deadline: Duration,
}

impl Timing {
    pub(super) fn of(analysis: &Analysis) -> Self {
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

/// Whether the canary of `revision` runs a baseline beside it: the
/// analysis it is judged by (its verification's record, or the spec's
/// before that begins) compares a metric.
pub fn compares_beside(gs: &GoServer, revision: &str) -> bool {
    let recorded = gs
        .status
        .as_ref()
        .and_then(|s| s.verification.as_ref())
        .filter(|v| v.revision == revision)
        .and_then(|v| v.analysis.as_ref());
    let metrics = match recorded {
        Some(analysis) => &analysis.metrics,
        None => verification(gs).map_or(&[][..], |v| v.metrics.as_slice()),
    };
    super::compare::baseline::any_compared(metrics)
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
pub(super) fn variables(
    gs: &GoServer,
    revision: &str,
    analysis: &Analysis,
) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("name", gs.name_any()),
        ("namespace", gs.namespace().unwrap_or_default()),
        ("revision", revision.to_owned()),
        ("interval", analysis.interval.clone()),
        ("window", analysis.window.clone()),
        ("track", String::new()),
    ])
}

/// The queries of every metric of `analysis`, with the variables filled
/// in, and for each compared metric its query for the baseline running
/// `baseline` (a canary's), when there is one.
pub fn queries(
    gs: &GoServer,
    revision: &str,
    baseline: Option<&str>,
    analysis: &Analysis,
) -> Vec<DueQuery> {
    let filled = variables(gs, revision, analysis);
    let baseline_variables = baseline.map(|stable| {
        let mut v = variables(gs, stable, analysis);
        v.insert("track", crate::build::canary::BASELINE_TRACK.to_owned());
        v
    });
    let variables = filled;
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
            baseline: baseline_variables
                .as_ref()
                .filter(|_| m.compare.is_some())
                .map(|v| prometheus::fill(&m.query, v)),
        })
        .collect()
}
