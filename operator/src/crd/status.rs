//! The status of a `GoServer`: conditions, revisions, the verification
//! and canary in progress, history, the outbox of decisions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::rollout::{ComparisonSpec, DeadlineAction, MetricSpec, VerificationSpec};

/// Observed state, written by the operator only.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GoServerStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Available`, `Progressing`, `Degraded`, and `Verified` when
    /// `rollout.verification` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Pods the Deployment asks for (set by `replicas` or the autoscaler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// Pods of any revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pods that pass their readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Pods of the current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    /// `ready/desired`, as shown by `kubectl get gs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_summary: Option<String>,
    /// While a canary runs (`Progressing` or `Promoting`): its step and
    /// weight, such as `step 2/4, 25%`, as shown by `kubectl get gs`;
    /// absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_summary: Option<String>,
    /// Label selector of the pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Where the server is reachable through its Ingress (`https` with TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `<name>-<10 hex>` of the pod template and config in force: the one
    /// under test while verifying, the restored one after a rollback. Pods
    /// carry it as the label `gantry.dev/revision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The last revision that passed verification (with no verification
    /// configured: the last one that became available).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_revision: Option<String>,
    /// A revision that failed and was rolled back. While the spec still
    /// yields it, `lastGoodRevision` stays in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_revision: Option<String>,
    /// Progress of the verification of the newest revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationStatus>,
    /// The samples of the last verified revision's window, for the metrics
    /// that have `compare`: the baseline the next revision is judged
    /// against. Kept here, not asked of Prometheus again, so a TSDB that
    /// lost that range loses no baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// Revisions deployed, newest first, at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// The newest canary (`rollout.strategy: Canary`): its revision, step
    /// and weight, and the verdict of each step judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
    /// Decisions not yet told in full (their Event, or a receiver that has
    /// not answered), oldest first, at most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<Notification>,
}

/// Where a canary stands; an operator restart resumes from here.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// The revision the canary runs.
    pub revision: String,
    /// `Progressing` (stepping through `rollout.steps`), `Promoting` (every
    /// step passed, or promoted by request: the stable Deployment takes the
    /// revision while the canary keeps its share), `Promoted` (done; the
    /// canary is gone) or `Aborted` (a step failed, or the canary ended
    /// without a verdict when the spec went back to the stable revision or
    /// a rollback was asked for: no traffic to it).
    pub phase: CanaryPhase,
    /// The step in force, from 0.
    pub step: i32,
    /// Percent of the route's traffic the canary gets now.
    pub weight: i32,
    /// When the weight in force was set: a step waits for the Gateways from
    /// here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_set_at: Option<Time>,
    /// When the step in force began judging (its pods available).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// After an abort or a promotion: the canary keeps its pods, at weight
    /// 0, until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_until: Option<Time>,
    /// The steps judged so far, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<StepVerdict>,
}

/// Phases of a canary.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CanaryPhase {
    #[default]
    Progressing,
    Promoting,
    Promoted,
    Aborted,
}

impl CanaryPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Progressing => "Progressing",
            Self::Promoting => "Promoting",
            Self::Promoted => "Promoted",
            Self::Aborted => "Aborted",
        }
    }
}

/// The verdict of one canary step.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepVerdict {
    /// The step, from 0.
    pub step: i32,
    /// Its weight.
    pub weight: i32,
    /// `Passed` or `Failed`.
    pub verdict: Verdict,
    /// When it was decided.
    pub decided_at: Time,
    /// Each metric's counts in the step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricStatus>,
}

/// Where the verification of one revision stands; an operator restart
/// resumes from here.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VerificationStatus {
    /// The revision measured.
    pub revision: String,
    /// `Pending` (not yet fully available), `Measuring`, `PostVerification`,
    /// `Passed` or `Failed`.
    pub phase: VerificationPhase,
    /// When this verification began (the revision came into force).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the revision was first fully available; the warm-up and the
    /// window count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_at: Option<Time>,
    /// When the metrics were last asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_measured_at: Option<Time>,
    /// The reason of the `Verified` condition: `Pending`, `Measuring`,
    /// `NoData`, `PrometheusUnavailable`, `Passed` or `Failed`; `Promoted`
    /// and `RolledBack` when a request decided it (`gantry.dev/promote`,
    /// `gantry.dev/rollback-to`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Why the phase is what it is (the failing metric, value and bound).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Counts per metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricStatus>,
    /// The analysis this verification judges by: the spec's metrics,
    /// bounds and timing when it began. An edit of the spec applies to the
    /// next verification, never to this one (unless this one cannot run:
    /// a query Prometheus refuses is replaced by the edited one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    /// When the verification went past its deadline without a verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue_at: Option<Time>,
    /// The comparison with the baseline, made once when the window is over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<ComparisonStatus>,
    /// Written by earlier operators: a decision not told yet. It is read
    /// once, into `status.outbox`, and never written again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announcement: Option<Announcement>,
}

/// The parts of `spec.rollout.verification` a verification judges by.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// `warmup` as the spec had it.
    pub warmup: String,
    /// `interval` as the spec had it.
    pub interval: String,
    /// `window` as the spec had it.
    pub window: String,
    /// `postVerification` as the spec had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_verification: Option<String>,
    /// `minSamples` as the spec had it.
    pub min_samples: i32,
    /// `failureLimit` as the spec had it.
    pub failure_limit: i32,
    /// `deadline` as the spec had it.
    pub deadline: String,
    /// `onDeadline` as the spec had it.
    pub on_deadline: DeadlineAction,
    /// `comparison` as the spec had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<ComparisonSpec>,
    /// `metrics` as the spec had them.
    pub metrics: Vec<MetricSpec>,
}

impl Analysis {
    /// The analysis `spec` asks for now.
    pub fn of(spec: &VerificationSpec) -> Self {
        Self {
            warmup: spec.warmup.clone(),
            interval: spec.interval.clone(),
            window: spec.window.clone(),
            post_verification: spec.post_verification.clone(),
            min_samples: spec.min_samples,
            failure_limit: spec.failure_limit,
            deadline: spec.deadline.clone(),
            on_deadline: spec.on_deadline,
            comparison: spec.comparison.clone(),
            metrics: spec.metrics.clone(),
        }
    }
}

/// A decision to tell: its Event and one POST per receiver. It is written
/// in the status write that records the decision and leaves once every
/// part is told, so an operator that stops in between tells the rest after
/// its restart, and a receiver that is down is retried until it answers.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// The decision's id: the same in its Event's name, in every delivery
    /// of it (`webhook-id`), and in no other decision.
    pub id: String,
    /// `Verified`, `Failed` or `RolledBack`.
    pub event: DecisionKind,
    /// The revision decided on.
    pub revision: String,
    /// The last good revision before this decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_good_revision: Option<String>,
    /// The Event's note and the webhook's message.
    pub message: String,
    /// When the decision was made.
    pub decided_at: Time,
    /// Each metric's counts at the decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<MetricStatus>,
    /// Whether its Event is recorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recorded: bool,
    /// Receivers that have not answered 2xx yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Delivery>,
}

/// A delivery not yet acknowledged by its receiver.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The receiver's name (`webhook` for the `webhook` field).
    pub receiver: String,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: i32,
    /// When the next attempt is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Time>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A verification decision waiting to be told.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Announcement {
    /// `Verified`, `Failed` or `RolledBack`.
    pub event: DecisionKind,
    /// The last good revision before this decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_good_revision: Option<String>,
    /// The Event's note and the webhook's message.
    pub message: String,
}

/// The decisions a verification ends in.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionKind {
    Verified,
    Failed,
    RolledBack,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "Verified",
            Self::Failed => "Failed",
            Self::RolledBack => "RolledBack",
        }
    }
}

/// Phases of a verification.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VerificationPhase {
    #[default]
    Pending,
    Measuring,
    PostVerification,
    Passed,
    Failed,
}

/// Measurements of one metric for one revision.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MetricStatus {
    /// The metric's name in the spec.
    pub name: String,
    /// Measurements within the bounds (and, with `noData: Pass`, without data).
    pub passed: i32,
    /// Measurements outside the bounds (and, with `noData: Fail`, without data).
    pub failed: i32,
    /// Measurements without data that count neither way.
    pub inconclusive: i32,
    /// The last value measured; absent when there was no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_value: Option<f64>,
    /// For a metric with `compare`: the valid values of the window, in the
    /// order measured (at most 120).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<f64>,
    /// For a metric with `compare` of a canary: the baseline's values,
    /// measured beside the canary's (at most 120).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseline_samples: Vec<f64>,
    /// For a metric with `compare`: how it compared with the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<MetricComparisonStatus>,
}

/// One metric of a revision against the baseline.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricComparisonStatus {
    /// `High`, `Low`, `Pass` or `NoData` (too few samples on a side).
    pub class: ComparisonClass,
    /// The median of the revision's samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_median: Option<f64>,
    /// The median of the baseline's samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_median: Option<f64>,
    /// The shift of the revision over the baseline (Hodges-Lehmann) as a
    /// share of the baseline's median: `0.31` is 31 % higher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_change: Option<f64>,
    /// The shift in the metric's unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<f64>,
    /// The low end of the shift's interval at the spec's confidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift_low: Option<f64>,
    /// The high end of the shift's interval at the spec's confidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift_high: Option<f64>,
    /// The Mann-Whitney p-value of a change in the bad direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<f64>,
}

/// The class of one compared metric.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComparisonClass {
    High,
    Low,
    Pass,
    NoData,
}

impl ComparisonClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "High",
            Self::Low => "Low",
            Self::Pass => "Pass",
            Self::NoData => "NoData",
        }
    }
}

/// The comparison of a revision with its baseline.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComparisonStatus {
    /// The revision compared with; absent when there was none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_revision: Option<String>,
    /// `Pass`, `Marginal` (held for a person), `Fail`, or `NoBaseline`
    /// (nothing to compare with: judged by its bounds alone).
    pub outcome: ComparisonOutcome,
    /// The weighted share of the compared metrics with data that passed,
    /// 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Each compared metric's class, relative change and p, in one line.
    pub message: String,
    /// When it was made.
    pub compared_at: Time,
}

/// What a comparison says of the revision.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComparisonOutcome {
    Pass,
    Marginal,
    Fail,
    NoBaseline,
}

impl ComparisonOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "Pass",
            Self::Marginal => "Marginal",
            Self::Fail => "Fail",
            Self::NoBaseline => "NoBaseline",
        }
    }
}

/// The last verified revision's samples.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Baseline {
    /// The revision they are of: `lastGoodRevision` when they are in use.
    pub revision: String,
    /// When it was first fully available (its warm-up and window count
    /// from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Time>,
    /// When it was verified.
    pub to: Time,
    /// Each compared metric's samples.
    pub metrics: Vec<BaselineMetric>,
}

/// One metric's samples in a baseline.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct BaselineMetric {
    /// The metric's name in the spec.
    pub name: String,
    /// Its valid values over the window, in the order measured.
    pub samples: Vec<f64>,
}

/// One revision in the history.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The revision, as in `status.revision`.
    pub revision: String,
    /// The image it ran.
    pub image: String,
    /// When it first came into force.
    pub deployed_at: Time,
    /// `Unverified`, `Passed`, `Failed` or `RolledBack`.
    pub verdict: Verdict,
    /// The last value of each metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricValue>,
    /// The revision it was compared with, for metrics with `compare`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compared_with: Option<String>,
}

/// What became of a revision.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Unverified,
    Passed,
    Failed,
    RolledBack,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unverified => "Unverified",
            Self::Passed => "Passed",
            Self::Failed => "Failed",
            Self::RolledBack => "RolledBack",
        }
    }
}

/// A metric's last value.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricValue {
    /// The metric's name in the spec.
    pub name: String,
    /// Its last value; absent when there was no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// For a compared metric: its shift against `comparedWith`, as a share
    /// of that revision's median.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_change: Option<f64>,
    /// For a compared metric: its class against `comparedWith`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<ComparisonClass>,
}
