//! Measuring a revision: the due Prometheus queries, run at once.

use tracing::{debug, warn};

use super::context::Context;
use crate::crd::GoServer;
use crate::rollout::{self};

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
        let (value, traffic) = tokio::join!(ctx.prometheus.query(url, &q.query, timeout), async {
            match &q.traffic {
                Some(traffic) => Some(ctx.prometheus.query(url, traffic, timeout).await),
                None => None,
            }
        });
        rollout::Sample {
            metric: q.metric.clone(),
            value,
            traffic,
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
