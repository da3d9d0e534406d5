//! The rollout part of the spec: strategy, canary steps, the Gateway
//! wait, verification against Prometheus, receivers of decisions.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::patterns::{DURATION_PATTERN, METRIC_NAME_PATTERN};

/// How new revisions roll out, and how they are judged.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.strategy) || self.strategy != 'Canary' || (has(self.steps) && size(self.steps) > 0)").message("the Canary strategy needs at least one step").field_path(".steps"))]
#[x_kube(validation = Rule::new("!has(self.strategy) || self.strategy != 'Canary' || !has(self.verification) || !has(self.verification.postVerification)").message("postVerification is not supported with the Canary strategy: every step is already judged on live traffic, the last one before the promotion").field_path(".verification.postVerification"))]
#[x_kube(validation = Rule::new("!has(self.strategy) || self.strategy != 'Canary' || !has(self.verification) || self.verification.metrics.all(m, !has(m.compare)) || !has(self.steps) || self.steps.all(s, s.weight <= 50)").message("with compare, a canary step gives at most 50 percent: its baseline gets the same share as the canary").field_path(".steps"))]
#[x_kube(validation = Rule::new("!has(self.strategy) || self.strategy != 'Canary' || !has(self.verification) || self.verification.metrics.all(m, !has(m.compare) || m.query.contains('${track}'))").message("with the Canary strategy, a metric with compare must select track=\"${track}\" in its query: the baseline's pods run the stable revision beside the stable pods, told apart by their track label").field_path(".verification.metrics"))]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// `RollingUpdate` (default): the Deployment replaces its pods, and the
    /// share of traffic a new revision gets follows its pod count.
    /// `Canary`: a new revision runs beside the stable one as
    /// `<name>-canary` and gets the share of the route's traffic each step
    /// names; every step is judged by `verification`. Needs `route` and
    /// `verification`.
    #[serde(default, skip_serializing_if = "RolloutStrategy::is_default")]
    pub strategy: RolloutStrategy,
    /// The canary's steps, in order: each sends `weight` percent of the
    /// route's traffic to the new revision for `pause`, then judges it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub steps: Vec<CanaryStep>,
    /// Pods above the desired count during a rollout (number or percentage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// Pods that may be unavailable during a rollout (number or percentage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Old revisions kept: the Deployment's old `ReplicaSets` and the
    /// `ControllerRevisions` recording each revision (default 10). The
    /// revision in force and the last verified one are never pruned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub revision_history_limit: Option<i32>,
    /// How long a rollout may go without progress before the Deployment
    /// reports `ProgressDeadlineExceeded` (default 600). With verification
    /// and `autoRollback`, a revision that misses it fails and is rolled
    /// back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub progress_deadline_seconds: Option<i32>,
    /// Judge every new revision by its own metrics in Prometheus, and roll a
    /// bad one back to the last revision that passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationSpec>,
    /// Canary only: how a step waits for the Gateways of the route. A step
    /// is judged only once every parent Gateway reports the route
    /// `Accepted` for its current weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayWait>,
}

/// How a canary waits for its Gateways.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayWait {
    /// How long a step, an abort or a promotion waits for every parent
    /// Gateway to accept the route's new weights (default 2m). A step not
    /// accepted in time is aborted; an abort or a promotion drains anyway.
    #[serde(default = "default_gateway_timeout")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub timeout: String,
    /// How long the canary keeps its pods after its weight went to 0 and
    /// the Gateways accepted that, before it is deleted or scaled to 0
    /// (default 30s): requests a Gateway already sent it can finish.
    #[serde(default = "default_drain")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub drain: String,
    /// Do not wait for the route's status: for Gateway implementations
    /// that write none. Steps then start when the canary's pods are
    /// available, and the drain starts at weight 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_route_status: bool,
}

impl Default for GatewayWait {
    fn default() -> Self {
        Self {
            timeout: default_gateway_timeout(),
            drain: default_drain(),
            ignore_route_status: false,
        }
    }
}

fn default_gateway_timeout() -> String {
    "2m".to_owned()
}

fn default_drain() -> String {
    "30s".to_owned()
}

/// How a new revision reaches the pods.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RolloutStrategy {
    /// The Deployment's rolling update.
    #[default]
    RollingUpdate,
    /// Weighted steps through the route, each judged by its metrics.
    Canary,
}

impl RolloutStrategy {
    // By reference: the signature `skip_serializing_if` asks for.
    #[allow(clippy::trivially_copy_pass_by_ref)]
    fn is_default(&self) -> bool {
        *self == Self::RollingUpdate
    }
}

/// One step of a canary.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStep {
    /// Percent of the route's traffic the new revision gets.
    #[schemars(range(min = 1, max = 99))]
    pub weight: i32,
    /// How long the step lasts once the canary's pods are available; it is
    /// judged on the samples taken in that time (after `warmup`).
    #[schemars(length(min = 1, max = 32), regex(pattern = DURATION_PATTERN))]
    pub pause: String,
}

/// How a new revision is verified. A revision is measured for `window`
/// after it is fully available and `warmup` has passed: every `interval`,
/// each metric's query is run once and its value checked against `min` and
/// `max`. It passes when every metric has at least `minSamples` valid
/// measurements and no more than `failureLimit` failed ones; one failure
/// more fails it at once. Too few samples never pass: the revision then
/// stays unverified (reason `NoData`) and is measured on.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.webhook) || !has(self.receivers) || self.receivers.all(r, r.name != 'webhook')").message("the name webhook is taken by the webhook field").field_path(".receivers"))]
#[serde(rename_all = "camelCase")]
pub struct VerificationSpec {
    /// The Prometheus to ask. Default: the operator's `--prometheus-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSpec>,
    /// Wait after the revision is fully available before the first
    /// measurement, so start-up effects are not judged.
    #[serde(default = "default_warmup")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub warmup: String,
    /// Time between two measurements of a metric.
    #[serde(default = "default_interval")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub interval: String,
    /// How long a revision is measured before it is judged.
    #[serde(default = "default_window")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub window: String,
    /// Valid measurements each metric needs to pass.
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_samples: i32,
    /// Failed measurements tolerated per metric; one more fails the revision.
    #[serde(default = "default_failure_limit")]
    #[schemars(range(min = 0, max = 1000))]
    pub failure_limit: i32,
    /// Put the last verified revision back when a revision fails. Without it
    /// a failed revision stays and the `GoServer` is `Degraded`.
    #[serde(default = "default_true")]
    pub auto_rollback: bool,
    /// Keep measuring a revision this long after it passed; a failure then
    /// still rolls it back. It counts as verified only afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub post_verification: Option<String>,
    /// How long after the window a revision may go without a verdict (no
    /// data, Prometheus unavailable, a query Prometheus refuses) before
    /// `onDeadline` is taken (default 15m).
    #[serde(default = "default_deadline")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub deadline: String,
    /// What happens at the deadline: `Hold` (default: the revision stays
    /// unverified and in force, `Degraded` says so and an alert fires),
    /// `Rollback` (it fails, as a failed measurement would) or `Pass` (it
    /// counts as verified).
    #[serde(default)]
    pub on_deadline: DeadlineAction,
    /// How metrics with `compare` are judged together against the last
    /// verified revision: the test's confidence and the score's thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<ComparisonSpec>,
    /// Told of every decision (`Verified`, `Failed`, `RolledBack`) by a
    /// POST. The same as a receiver named `webhook` in `receivers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    /// Told of every decision, each by a POST retried until it answers 2xx.
    /// Names must be unique (and not `webhook` when `webhook` is set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub receivers: Vec<ReceiverSpec>,
    /// The measurements. Names must be unique.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub metrics: Vec<MetricSpec>,
}

fn default_warmup() -> String {
    "30s".to_owned()
}

fn default_interval() -> String {
    "30s".to_owned()
}

fn default_window() -> String {
    "5m".to_owned()
}

fn default_deadline() -> String {
    "15m".to_owned()
}

fn default_min_samples() -> i32 {
    3
}

fn default_failure_limit() -> i32 {
    1
}

fn default_true() -> bool {
    true
}

/// How the metrics that have `compare` are judged against the baseline
/// (the last verified revision's samples). Once the window is over and
/// every bound held, each such metric is High, Low, Pass or `NoData`; the
/// weighted share of the metrics with data that pass is the score, 0 to
/// 100. At or above `pass` the revision passes; below `marginal`, or a
/// critical metric High or Low, it fails; in between it is held (reason
/// `Marginal`) for a person to promote or roll back, until `deadline`
/// takes `onDeadline`.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.marginal <= self.pass").message("marginal must not exceed pass").field_path(".marginal"))]
#[serde(rename_all = "camelCase")]
pub struct ComparisonSpec {
    /// The two-sided confidence of each metric's test (default 0.98, as
    /// Kayenta's): a change counts only when the lower end of the interval
    /// of the shift lies past the allowed change.
    #[serde(default = "default_confidence")]
    #[schemars(range(min = 0.5, max = 0.9999))]
    pub confidence: f64,
    /// The lowest score that passes (default 95).
    #[serde(default = "default_pass_score")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub pass: f64,
    /// The lowest score held for a person rather than failed (default 75).
    #[serde(default = "default_marginal_score")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub marginal: f64,
}

impl Default for ComparisonSpec {
    fn default() -> Self {
        Self {
            confidence: default_confidence(),
            pass: default_pass_score(),
            marginal: default_marginal_score(),
        }
    }
}

fn default_confidence() -> f64 {
    0.98
}

fn default_pass_score() -> f64 {
    95.0
}

fn default_marginal_score() -> f64 {
    75.0
}

/// One metric judged against the baseline: its samples over the window
/// (one per `interval`, so the query should look back one `interval`)
/// against the last verified revision's.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricComparison {
    /// The change that is bad: `Increase` (default, a latency or an error
    /// ratio), `Decrease` (a throughput) or `Either`.
    #[serde(default)]
    pub bad: BadChange,
    /// How far the revision may move from the baseline before it counts:
    /// a share of the baseline's median (`10%`, the default) or an amount
    /// in the metric's unit (`0.01`, one point of a ratio).
    #[serde(default = "default_allowed")]
    #[schemars(length(min = 1, max = 16), regex(pattern = r"^[0-9]+(\.[0-9]+)?%?$"))]
    pub allowed: String,
    /// A High or Low of a critical metric fails the revision whatever the
    /// score.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub critical: bool,
    /// The metric's share of the score, relative to the others' (default 1).
    #[serde(default = "default_weight")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub weight: f64,
}

fn default_allowed() -> String {
    "10%".to_owned()
}

fn default_weight() -> f64 {
    1.0
}

/// Which change of a compared metric is bad.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BadChange {
    /// Higher than the baseline.
    #[default]
    Increase,
    /// Lower than the baseline.
    Decrease,
    /// Either way.
    Either,
}

/// Where Prometheus answers.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSpec {
    /// Base URL of the Prometheus HTTP API, for example
    /// `http://prometheus.monitoring:9090`. The operator's bearer token is
    /// never sent here, only to its own `--prometheus-url`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub url: String,
    /// How long one query may take.
    #[serde(default = "default_query_timeout")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub timeout: String,
}

fn default_query_timeout() -> String {
    "10s".to_owned()
}

/// A receiver of verification decisions.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct WebhookSpec {
    /// URL to POST to.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub url: String,
}

/// What a verification without a verdict does at its deadline.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeadlineAction {
    /// Stay unverified, in force, measuring on; `Degraded` and an alert
    /// say it is overdue.
    #[default]
    Hold,
    /// Fail the revision (and roll it back with `autoRollback`).
    Rollback,
    /// Count the revision as verified.
    Pass,
}

/// A receiver of verification decisions.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct ReceiverSpec {
    /// Names the receiver in status and Events; deliveries are keyed by it.
    #[schemars(length(min = 1, max = 63), regex(pattern = METRIC_NAME_PATTERN))]
    pub name: String,
    /// URL to POST to.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub url: String,
    /// The body's shape: `Generic` (default), Gantry's signed JSON.
    #[serde(default)]
    pub format: ReceiverFormat,
}

/// Body shapes of a receiver.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReceiverFormat {
    /// Gantry's JSON body, signed as Standard Webhooks specify.
    #[default]
    Generic,
}

/// The traffic behind a measurement: a sample counts only when the
/// revision served at least `min` requests in it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficGuard {
    /// A `PromQL` query giving the requests in the sample, for example
    /// `sum(increase(http_requests_total{revision="${revision}"}[1m]))`;
    /// the same variables as `query`.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// Fewer requests than this (or no data) make the sample inconclusive,
    /// whatever the metric's value: one error in two requests is no 50 %
    /// error ratio.
    #[schemars(range(min = 0.0))]
    pub min: f64,
}

/// One `PromQL` measurement with its bounds.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.min) || has(self.max) || has(self.compare)").message("a metric needs min, max or compare"))]
#[x_kube(validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max").message("min must not exceed max").field_path(".min"))]
#[serde(rename_all = "camelCase")]
pub struct MetricSpec {
    /// Name shown in status, Events and the webhook.
    #[schemars(length(min = 1, max = 63), regex(pattern = METRIC_NAME_PATTERN))]
    pub name: String,
    /// A `PromQL` query returning one value. `${name}`, `${namespace}`,
    /// `${revision}`, `${interval}`, `${window}` and `${track}` (empty;
    /// `baseline` in the query of a canary's baseline) are replaced first.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// Lowest value that passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest value that passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The verdict for an empty result or `NaN`: no traffic is not failure.
    #[serde(default)]
    pub no_data: NoDataPolicy,
    /// Count a sample only when the revision served enough requests in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficGuard>,
    /// Judge the metric against the last verified revision as well, once
    /// the window is over (see `comparison`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<MetricComparison>,
}

/// What a measurement without data counts as.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NoDataPolicy {
    /// Neither passed nor failed; it does not count toward `minSamples`.
    #[default]
    Inconclusive,
    /// A failed measurement.
    Fail,
    /// A passed (and valid) measurement.
    Pass,
}
