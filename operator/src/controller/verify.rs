//! Measuring a revision: the due Prometheus queries, run at once.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tracing::{debug, warn};

use super::children::Applied;
use super::context::Context;
use crate::build::{self, Revision};
use crate::crd::GoServer;
use crate::rollout;
use crate::status;

/// Verify: how far the revision in force (and the canary) is, measured
/// against Prometheus when a sample is due, decided by [`rollout::progress`].
pub(super) async fn decide(
    ctx: &Context,
    gs: &GoServer,
    spec_revision: &Revision,
    applied: &Applied,
    now: &Time,
) -> rollout::Decision {
    let Applied {
        in_force,
        deployment,
        ..
    } = applied;
    let runs_in_force = runs(deployment, &in_force.name);
    let canary_observed = match (&applied.canary, &applied.canary_revision) {
        (Some(live), Some(revision)) => Some(rollout::canary::CanaryFacts {
            revision,
            complete: runs(live, &revision.name) && status::rollout_complete(live),
            deadline_exceeded: runs(live, &revision.name) && status::deadline_exceeded(live),
            draining: applied.draining,
        }),
        _ => None,
    };
    let decision_id = decision_id();
    let observation = rollout::Observation {
        now,
        spec_revision: &spec_revision.name,
        in_force,
        complete: runs_in_force && status::rollout_complete(deployment),
        deadline_exceeded: runs_in_force && status::deadline_exceeded(deployment),
        canary: canary_observed,
        routing: rollout::canary::routing(gs, applied.route.as_ref()),
        decision_id: &decision_id,
    };
    let mut decision = rollout::progress(gs, &observation, None);
    if let Some(due) = decision.measure.take() {
        let samples = measure(ctx, gs, &due).await;
        decision = rollout::progress(gs, &observation, Some(&samples));
    }
    decision
}

/// A fresh decision id: a UUID (version 7, so ids sort by time).
pub(super) fn decision_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Runs the due queries (and their traffic guards) once, all at the same
/// time.
pub(super) async fn measure(
    ctx: &Context,
    gs: &GoServer,
    due: &rollout::Due,
) -> Vec<rollout::Sample> {
    let Some(spec) = rollout::spec(gs) else {
        return Vec::new();
    };
    let url = spec.prometheus.as_ref().map(|p| p.url.as_str());
    let timeout = rollout::query_timeout(spec);
    let samples = futures::future::join_all(due.queries.iter().map(|q| async move {
        let (value, traffic, baseline) = tokio::join!(
            ctx.prometheus.query(url, &q.query, timeout),
            optional(ctx, url, q.traffic.as_deref(), timeout),
            optional(ctx, url, q.baseline.as_deref(), timeout),
        );
        rollout::Sample {
            metric: q.metric.clone(),
            value,
            traffic,
            baseline,
        }
    }))
    .await;
    for sample in &samples {
        match &sample.value {
            Ok(value) => {
                debug!(metric = %sample.metric, value = ?value, traffic = ?sample.traffic, "measured");
            }
            Err(err) => warn!(metric = %sample.metric, error = %err, "measurement failed"),
        }
    }
    samples
}

/// `query`'s measurement, when there is a query.
async fn optional(
    ctx: &Context,
    url: Option<&str>,
    query: Option<&str>,
    timeout: std::time::Duration,
) -> Option<rollout::Measurement> {
    match query {
        Some(query) => Some(ctx.prometheus.query(url, query, timeout).await),
        None => None,
    }
}

/// Whether `deployment`'s template is that of `revision`.
fn runs(deployment: &Deployment, revision: &str) -> bool {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get(build::REVISION_LABEL))
        .is_some_and(|r| r == revision)
}
