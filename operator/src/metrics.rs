//! Prometheus metrics of the operator, served on `/metrics` by [`crate::http`].
//!
//! The controller's own metrics have static, low-cardinality labels: a
//! reconcile's `result` is `ok` or `error`, an error's `category` is
//! [`crate::Error::category`].
//!
//! The one exception is the `gantry_goserver_*` family, which follows
//! kube-state-metrics: series labelled `namespace` and `name`, computed at
//! each scrape from the leader's `GoServer` cache, so a deleted GoServer's
//! series are gone at the next scrape and nothing is kept per object in
//! between. They are what dashboards and alerts need per GoServer (its
//! revision, conditions, replicas and verification), and cost one series
//! per fact per GoServer. Only the leader has the cache, so only the
//! leader exports them.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, gauge::ConstGauge};
use prometheus_client::registry::Registry;

use crate::crd::{CanaryPhase, GoServer, GoServerStatus, VerificationPhase};

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
    deliveries: Family<ResultLabels, Counter>,
    goservers: Arc<OnceLock<Store<GoServer>>>,
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
        // Both results exist from the start, at 0: a rate over them (the
        // reconcile-error alert's) has data before the first failure.
        for result in ["ok", "error"] {
            let _ = reconciles.get_or_create(&ResultLabels { result });
        }
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
        let deliveries = Family::<ResultLabels, Counter>::default();
        registry.register(
            "gantry_webhook_deliveries",
            "Attempts to deliver a decision to a receiver, by result (delivered: it answered 2xx)",
            deliveries.clone(),
        );
        for result in ["delivered", "failed"] {
            let _ = deliveries.get_or_create(&ResultLabels { result });
        }
        let goservers = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(GoServerSeries(Arc::clone(&goservers))));
        Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
            requests,
            deliveries,
            goservers,
        }
    }

    /// Counts one delivery attempt of a decision to a receiver.
    pub fn delivered(&self, ok: bool) {
        let result = if ok { "delivered" } else { "failed" };
        self.deliveries
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Exports the `gantry_goserver_*` series from `store` from now on
    /// (the controller calls it once it runs, that is once it leads).
    pub fn export_goservers(&self, store: Store<GoServer>) {
        // A second call (none is made) would keep the first store.
        let _ = self.goservers.set(store);
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

/// The `gantry_goserver_*` series, read from the `GoServer` cache at each
/// scrape.
#[derive(Debug)]
struct GoServerSeries(Arc<OnceLock<Store<GoServer>>>);

/// Condition statuses, each a series of its own as in kube-state-metrics:
/// 1 for the current one, 0 for the others, so `== 1` selects.
const CONDITION_STATUSES: [&str; 3] = ["True", "False", "Unknown"];

impl Collector for GoServerSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(store) = self.0.get() else {
            return Ok(());
        };
        let mut goservers = store.state();
        // A stable order, so one scrape compares with the next.
        goservers.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        let objects: Vec<Object<'_>> = goservers
            .iter()
            .filter_map(|gs| {
                Some(Object {
                    namespace: gs.metadata.namespace.as_deref()?,
                    name: gs.metadata.name.as_deref()?,
                    status: gs.status.as_ref()?,
                    image: &gs.spec.image,
                })
            })
            .collect();
        encode_condition_counts(&mut encoder, &objects)?;
        encode_revisions(&mut encoder, &objects)?;
        encode_conditions(&mut encoder, &objects)?;
        encode_replicas(&mut encoder, &objects)?;
        encode_verdicts(&mut encoder, &objects)?;
        encode_verifications(&mut encoder, &objects)
    }
}

/// One `GoServer` with a status, as its series need it.
struct Object<'a> {
    namespace: &'a str,
    name: &'a str,
    status: &'a GoServerStatus,
    image: &'a str,
}

impl Object<'_> {
    fn labels(&self) -> [(&str, &str); 2] {
        [("namespace", self.namespace), ("name", self.name)]
    }
}

/// Controller-level: how many `GoServers` hold each condition status.
fn encode_condition_counts(
    encoder: &mut DescriptorEncoder,
    objects: &[Object<'_>],
) -> Result<(), std::fmt::Error> {
    let mut counts = std::collections::BTreeMap::<(&str, &str), i64>::new();
    for c in objects.iter().flat_map(|o| &o.status.conditions) {
        *counts
            .entry((c.type_.as_str(), c.status.as_str()))
            .or_default() += 1;
    }
    let mut family = encoder.encode_descriptor(
        "gantry_goservers",
        "GoServers by condition and its status",
        None,
        MetricType::Gauge,
    )?;
    for ((condition, status), count) in counts {
        ConstGauge::new(count)
            .encode(family.encode_family(&[("condition", condition), ("status", status)])?)?;
    }
    Ok(())
}

fn encode_revisions(
    encoder: &mut DescriptorEncoder,
    objects: &[Object<'_>],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "gantry_goserver_revision_info",
        "1 per GoServer, labelled with the revision in force and its image; a change marks a deploy",
        None,
        MetricType::Gauge,
    )?;
    for o in objects {
        let Some(revision) = o.status.revision.as_deref() else {
            continue;
        };
        let image = o
            .status
            .history
            .iter()
            .find(|h| h.revision == revision)
            .map_or(o.image, |h| h.image.as_str());
        let [namespace, name] = o.labels();
        ConstGauge::new(1).encode(family.encode_family(&[
            namespace,
            name,
            ("revision", revision),
            ("image", image),
        ])?)?;
    }
    let mut family = encoder.encode_descriptor(
        "gantry_goserver_failed_revision_info",
        "1 while a GoServer's spec still yields a revision that failed verification and was rolled back",
        None,
        MetricType::Gauge,
    )?;
    for o in objects {
        if let Some(failed) = o.status.failed_revision.as_deref() {
            let [namespace, name] = o.labels();
            ConstGauge::new(1).encode(family.encode_family(&[
                namespace,
                name,
                ("revision", failed),
            ])?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "gantry_goserver_canary_weight",
        "Percent of the route's traffic a GoServer's canary gets, while one runs",
        None,
        MetricType::Gauge,
    )?;
    for o in objects {
        let Some(canary) = o
            .status
            .canary
            .as_ref()
            .filter(|c| c.phase != CanaryPhase::Promoted)
        else {
            continue;
        };
        let [namespace, name] = o.labels();
        ConstGauge::new(i64::from(canary.weight)).encode(family.encode_family(&[
            namespace,
            name,
            ("revision", canary.revision.as_str()),
            ("phase", canary.phase.as_str()),
        ])?)?;
    }
    Ok(())
}

fn encode_conditions(
    encoder: &mut DescriptorEncoder,
    objects: &[Object<'_>],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "gantry_goserver_condition",
        "A GoServer's conditions: 1 for the status each holds, 0 for the others",
        None,
        MetricType::Gauge,
    )?;
    for o in objects {
        let [namespace, name] = o.labels();
        for c in &o.status.conditions {
            for status in CONDITION_STATUSES {
                ConstGauge::new(i64::from(c.status == status)).encode(family.encode_family(
                    &[
                        namespace,
                        name,
                        ("type", c.type_.as_str()),
                        ("status", status),
                    ],
                )?)?;
            }
        }
    }
    Ok(())
}

/// A replica count of a status, with its metric's name and help.
type ReplicaCount = (
    &'static str,
    &'static str,
    fn(&GoServerStatus) -> Option<i32>,
);

const REPLICA_COUNTS: [ReplicaCount; 3] = [
    (
        "gantry_goserver_replicas_desired",
        "Pods a GoServer's Deployment asks for",
        |s| s.desired_replicas,
    ),
    (
        "gantry_goserver_replicas_ready",
        "A GoServer's pods that pass their readiness probe",
        |s| s.ready_replicas,
    ),
    (
        "gantry_goserver_replicas_updated",
        "A GoServer's pods of the revision in force",
        |s| s.updated_replicas,
    ),
];

fn encode_replicas(
    encoder: &mut DescriptorEncoder,
    objects: &[Object<'_>],
) -> Result<(), std::fmt::Error> {
    for (metric, help, count) in REPLICA_COUNTS {
        let mut family = encoder.encode_descriptor(metric, help, None, MetricType::Gauge)?;
        for o in objects {
            if let Some(value) = count(o.status) {
                ConstGauge::new(i64::from(value)).encode(family.encode_family(&o.labels())?)?;
            }
        }
    }
    Ok(())
}

fn encode_verdicts(
    encoder: &mut DescriptorEncoder,
    objects: &[Object<'_>],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "gantry_goserver_revision_verdict",
        "1 per revision in a GoServer's history (at most 10), labelled with its verdict",
        None,
        MetricType::Gauge,
    )?;
    for o in objects {
        let [namespace, name] = o.labels();
        for entry in &o.status.history {
            ConstGauge::new(1).encode(family.encode_family(&[
                namespace,
                name,
                ("revision", entry.revision.as_str()),
                ("verdict", entry.verdict.as_str()),
            ])?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "gantry_goserver_revision_comparison",
        "Per compared metric of a revision in a GoServer's history: its shift against the revision it was compared with (baseline), as a share of that one's median; class High, Low, Pass or NoData",
        None,
        MetricType::Gauge,
    )?;
    for o in objects {
        let [namespace, name] = o.labels();
        for entry in &o.status.history {
            let Some(baseline) = entry.compared_with.as_deref() else {
                continue;
            };
            for m in &entry.metrics {
                let Some(class) = m.class else { continue };
                ConstGauge::new(m.relative_change.unwrap_or(f64::NAN)).encode(
                    family.encode_family(&[
                        namespace,
                        name,
                        ("revision", entry.revision.as_str()),
                        ("baseline", baseline),
                        ("metric", m.name.as_str()),
                        ("class", class.as_str()),
                    ])?,
                )?;
            }
        }
    }
    let mut family = encoder.encode_descriptor(
        "gantry_goserver_revision_previous",
        "1 per revision in a GoServer's history that has an older one, labelled with the revision deployed before it: what a dashboard compares a revision with",
        None,
        MetricType::Gauge,
    )?;
    for o in objects {
        let [namespace, name] = o.labels();
        for pair in o.status.history.windows(2) {
            ConstGauge::new(1).encode(family.encode_family(&[
                namespace,
                name,
                ("revision", pair[0].revision.as_str()),
                ("previous", pair[1].revision.as_str()),
            ])?)?;
        }
    }
    Ok(())
}

fn encode_verifications(
    encoder: &mut DescriptorEncoder,
    objects: &[Object<'_>],
) -> Result<(), std::fmt::Error> {
    let verifications: Vec<_> = objects
        .iter()
        .filter_map(|o| Some((o.labels(), o.status.verification.as_ref()?)))
        .collect();
    let mut family = encoder.encode_descriptor(
        "gantry_goserver_verification_measurements",
        "Measurements of the revision under (or last through) verification, by metric and result",
        None,
        MetricType::Gauge,
    )?;
    for ([namespace, name], v) in &verifications {
        for m in &v.metrics {
            for (result, count) in [
                ("passed", m.passed),
                ("failed", m.failed),
                ("inconclusive", m.inconclusive),
            ] {
                ConstGauge::new(i64::from(count)).encode(family.encode_family(&[
                    *namespace,
                    *name,
                    ("revision", v.revision.as_str()),
                    ("metric", m.name.as_str()),
                    ("result", result),
                ])?)?;
            }
        }
    }
    let mut family = encoder.encode_descriptor(
        "gantry_goserver_verification_value",
        "The last value each verification metric measured for the revision under (or last through) verification",
        None,
        MetricType::Gauge,
    )?;
    for ([namespace, name], v) in &verifications {
        for m in &v.metrics {
            if let Some(value) = m.last_value {
                ConstGauge::new(value).encode(family.encode_family(&[
                    *namespace,
                    *name,
                    ("revision", v.revision.as_str()),
                    ("metric", m.name.as_str()),
                ])?)?;
            }
        }
    }
    let mut family = encoder.encode_descriptor(
        "gantry_goserver_verification_overdue",
        "1 while a revision is held past its verification deadline without a verdict (onDeadline: Hold)",
        None,
        MetricType::Gauge,
    )?;
    for ([namespace, name], v) in &verifications {
        let open = !matches!(
            v.phase,
            VerificationPhase::Passed | VerificationPhase::Failed
        );
        if open && v.overdue_at.is_some() {
            ConstGauge::new(1).encode(family.encode_family(&[
                *namespace,
                *name,
                ("revision", v.revision.as_str()),
            ])?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "gantry_goserver_decisions_untold",
        "Decisions whose Event or a receiver's delivery is still outstanding",
        None,
        MetricType::Gauge,
    )?;
    for object in objects {
        let untold = object.status.outbox.len();
        if untold > 0 {
            ConstGauge::new(i64::try_from(untold).unwrap_or(i64::MAX))
                .encode(family.encode_family(&object.labels())?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
