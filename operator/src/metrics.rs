//! Prometheus metrics of the operator, served on `/metrics` by [`crate::http`].
//!
//! Labels are static and low-cardinality: a reconcile's `result` is `ok` or
//! `error`, an error's `category` is [`crate::Error::category`]. Object
//! names never become labels; the log has them.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: &'static str,
}

/// One request to the apiserver, as [`crate::client`] classifies it. The
/// kind is a resource's plural (`deployments`, `goservers/status`), a
/// short fixed set: the operator only talks about the kinds it manages.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub kind: String,
    pub verb: &'static str,
}

/// The registry and the handles the controller and the elector update.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<CategoryLabels, Counter>,
    duration: Histogram,
    leader: Gauge,
    requests: Family<RequestLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ResultLabels, Counter>::default();
        // prometheus-client appends `_total` to counters.
        registry.register(
            "gantry_reconciles",
            "Reconciles of GoServers, by result",
            reconciles.clone(),
        );
        let errors = Family::<CategoryLabels, Counter>::default();
        registry.register(
            "gantry_reconcile_errors",
            "Failed reconciles, by error category",
            errors.clone(),
        );
        // A reconcile is a handful of apiserver round trips: milliseconds
        // when nothing changed, seconds when the apiserver is slow.
        let duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]);
        registry.register(
            "gantry_reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "gantry_leader",
            "1 while this process holds the leader Lease (or runs without leader election)",
            leader.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "gantry_kubernetes_requests",
            "Requests the operator sent to the Kubernetes apiserver, by HTTP method, resource and verb",
            requests.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
            requests,
        }
    }

    /// Records one finished reconcile; `error_category` is `None` on success.
    pub fn reconciled(&self, elapsed: Duration, error_category: Option<&'static str>) {
        self.duration.observe(elapsed.as_secs_f64());
        let result = if error_category.is_some() {
            "error"
        } else {
            "ok"
        };
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        if let Some(category) = error_category {
            self.errors
                .get_or_create(&CategoryLabels { category })
                .inc();
        }
    }

    /// Whether this process is the one that writes.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Counts one request to the apiserver.
    pub fn requested(&self, labels: &RequestLabels) {
        self.requests.get_or_create(labels).inc();
    }

    /// The `OpenMetrics` text exposition, which Prometheus scrapes natively.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_counted_by_result_and_category() {
        let metrics = Metrics::new();
        metrics.reconciled(Duration::from_millis(20), None);
        metrics.reconciled(Duration::from_millis(30), Some("kube_api"));
        metrics.set_leader(true);
        let text = metrics.encode();
        assert!(
            text.contains("gantry_reconciles_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("gantry_reconciles_total{result=\"error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("gantry_reconcile_errors_total{category=\"kube_api\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("gantry_reconcile_duration_seconds_count 2"),
            "{text}"
        );
        assert!(text.contains("gantry_leader 1"), "{text}");
    }
}
