//! The `GoServer` custom resource (`goservers.gantry.dev/v1alpha1`).
//!
//! These types are the single source of the CRD: `gantry-operator crd`
//! prints the schema derived from them, `cargo xtask crds` writes it to
//! `crds/`, and the doc comments below become the field descriptions users
//! see in `kubectl explain`. Every rule that the apiserver can check on its
//! own (bounds, patterns, CEL) sits beside the field it guards, so bad input
//! is rejected at admission with the field's path in the message; the
//! operator only validates what needs other objects (`build::validate` and
//! `controller/dereference.rs`).
//!
//! By area: `workload.rs`, `network.rs`, `autoscaling.rs`, `rollout.rs`,
//! `status.rs`; `patterns.rs` holds the string patterns. The root spec and
//! its cross-field rules stay here.

mod autoscaling;
mod network;
mod patterns;
mod rollout;
mod status;
mod workload;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use patterns::NAME_PATTERN;

pub use autoscaling::AutoscalingSpec;
pub use network::{
    IngressSpec, IssuerKind, IssuerRef, MonitoringSpec, ParentRef, PathType, RoutePath,
    RoutePathType, RouteSpec, RouteTimeouts, ServiceSpec, ServiceType, TlsSpec,
};
pub use rollout::{
    BadChange, CanaryStep, ComparisonSpec, DeadlineAction, GatewayWait, MetricComparison,
    MetricSpec, NoDataPolicy, PrometheusSpec, ReceiverFormat, ReceiverSpec, RolloutSpec,
    RolloutStrategy, TrafficGuard, VerificationSpec, WebhookSpec,
};
pub use status::{
    Analysis, Announcement, Baseline, BaselineMetric, CanaryPhase, CanaryStatus, ComparisonClass,
    ComparisonOutcome, ComparisonStatus, DecisionKind, Delivery, GoServerStatus, HistoryEntry,
    MetricComparisonStatus, MetricStatus, MetricValue, Notification, StepVerdict, Verdict,
    VerificationPhase, VerificationStatus,
};
pub use workload::{ConfigSpec, EnvVar, ImagePullPolicy, Probe, Probes, SecretEnvVar, SecretRef};

/// Desired state of a Gantry-managed HTTP server.
///
/// The operator keeps a Deployment, Service and `ConfigMap` (and, when asked
/// for, an Ingress and a `HorizontalPodAutoscaler`) named after the resource in
/// the shape this spec describes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
// Each printer column repeats `type_`, which the lint mistakes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "gantry.dev",
    version = "v1alpha1",
    kind = "GoServer",
    plural = "goservers",
    shortname = "gs",
    namespaced,
    status = "GoServerStatus",
    derive = "PartialEq",
    doc = "A GoServer deploys one HTTP server: Deployment, Service, ConfigMap, optional Ingress and HPA.",
    // The revision label `<name>-<10 hex>` must fit a label value (63).
    validation = Rule::new("self.metadata.name.size() <= 52").message("metadata.name: a GoServer name has at most 52 characters, so that its revision names fit a label value"),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether every replica of the current revision is ready"
    ),
    printcolumn(
        name = "Verified",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Verified")].status"#,
        description = "Whether the revision in force passed its verification"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "string",
        json_path = ".status.replicaSummary",
        description = "Ready and desired replicas"
    ),
    printcolumn(
        name = "Canary",
        type_ = "string",
        json_path = ".status.canarySummary",
        description = "While a canary runs: its step and traffic weight"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.image",
        description = "The image the spec asks for",
        priority = "1"
    ),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".status.url",
        description = "Where the server is reachable through its Ingress"
    ),
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.revision",
        description = "The revision in force: pod template and config"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.secrets) || !has(self.env) || self.secrets.all(s, !has(s.env) || s.env.all(e, !self.env.exists(v, v.name == e.name)))"
).message("an environment variable is set both in env and in secrets[].env").field_path(".secrets"))]
#[x_kube(validation = Rule::new(
    r"!has(self.podLabels) || self.podLabels.all(k, k.matches(r'^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && self.podLabels[k].matches(r'^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$'))"
).message("keys must be label keys (an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.') and values at most 63 of those, starting and ending with a letter or digit").field_path(".podLabels"))]
#[x_kube(validation = Rule::new(
    r"!has(self.nodeSelector) || self.nodeSelector.all(k, k.matches(r'^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && self.nodeSelector[k].matches(r'^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$'))"
).message("keys must be label keys (an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.') and values at most 63 of those, starting and ending with a letter or digit").field_path(".nodeSelector"))]
#[x_kube(validation = Rule::new(
    r"!has(self.monitoring) || !has(self.monitoring.labels) || self.monitoring.labels.all(k, k.matches(r'^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && self.monitoring.labels[k].matches(r'^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$'))"
).message("keys must be label keys (an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.') and values at most 63 of those, starting and ending with a letter or digit").field_path(".monitoring.labels"))]
#[x_kube(validation = Rule::new(
    r"!has(self.podAnnotations) || self.podAnnotations.all(k, k.matches(r'^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))"
).message("keys must be annotation keys: an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit").field_path(".podAnnotations"))]
#[x_kube(validation = Rule::new(
    r"!has(self.service) || !has(self.service.annotations) || self.service.annotations.all(k, k.matches(r'^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))"
).message("keys must be annotation keys: an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit").field_path(".service.annotations"))]
#[x_kube(validation = Rule::new(
    r"!has(self.ingress) || !has(self.ingress.annotations) || self.ingress.annotations.all(k, k.matches(r'^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))"
).message("keys must be annotation keys: an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit").field_path(".ingress.annotations"))]
#[x_kube(validation = Rule::new(
    r"!has(self.config) || !has(self.config.data) || self.config.data.all(k, k.size() <= 253 && k.matches(r'^[-._a-zA-Z0-9]+$'))"
).message("keys must be at most 253 letters, digits, '-', '_' or '.'").field_path(".config.data"))]
#[x_kube(validation = Rule::new(
    r"!has(self.resources) || !has(self.resources.requests) || self.resources.requests.all(k, (k in ['cpu', 'memory', 'ephemeral-storage'] || k.startsWith('hugepages-') || k.matches(r'^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')) && isQuantity(string(self.resources.requests[k])))"
).message("names must be cpu, memory, ephemeral-storage, hugepages-<size> or a domain-prefixed name, and values quantities such as 250m or 1Gi").field_path(".resources.requests"))]
#[x_kube(validation = Rule::new(
    r"!has(self.resources) || !has(self.resources.limits) || self.resources.limits.all(k, (k in ['cpu', 'memory', 'ephemeral-storage'] || k.startsWith('hugepages-') || k.matches(r'^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')) && isQuantity(string(self.resources.limits[k])))"
).message("names must be cpu, memory, ephemeral-storage, hugepages-<size> or a domain-prefixed name, and values quantities such as 250m or 1Gi").field_path(".resources.limits"))]
#[x_kube(validation = Rule::new(
    r"!has(self.resources) || !has(self.resources.requests) || !has(self.resources.limits) || self.resources.requests.all(k, !(k in self.resources.limits) || !isQuantity(string(self.resources.requests[k])) || !isQuantity(string(self.resources.limits[k])) || quantity(string(self.resources.requests[k])).compareTo(quantity(string(self.resources.limits[k]))) <= 0)"
).message("a request must not exceed the limit of the same resource").field_path(".resources.requests"))]
#[x_kube(validation = Rule::new(
    r"!has(self.rollout) || !has(self.rollout.strategy) || self.rollout.strategy != 'Canary' || (has(self.route) && has(self.rollout.verification))"
).message("the Canary strategy needs route (its weights are the HTTPRoute's) and rollout.verification (each step is judged by it)").field_path(".rollout.strategy"))]
#[x_kube(validation = Rule::new(
    r"!has(self.rollout) || !has(self.rollout.steps) || !has(self.rollout.verification) || self.rollout.steps.all(s, duration(s.pause).getMilliseconds() >= duration(self.rollout.verification.warmup).getMilliseconds() + self.rollout.verification.minSamples * duration(self.rollout.verification.interval).getMilliseconds())"
).message("every step's pause must be at least verification.warmup + verification.minSamples x verification.interval, so that the step can be judged on its own samples").field_path(".rollout.steps"))]
#[x_kube(validation = Rule::new(
    r"!has(self.probes) || !has(self.probes.liveness) || !has(self.probes.liveness.successThreshold) || self.probes.liveness.successThreshold == 1"
).message("must be 1 for a liveness probe").field_path(".probes.liveness.successThreshold"))]
#[x_kube(validation = Rule::new(
    r"!has(self.probes) || !has(self.probes.startup) || !has(self.probes.startup.successThreshold) || self.probes.startup.successThreshold == 1"
).message("must be 1 for a startup probe").field_path(".probes.startup.successThreshold"))]
#[x_kube(validation = Rule::new(
    r"!has(self.probes) || !has(self.probes.readiness) || !has(self.probes.readiness.terminationGracePeriodSeconds)"
).message("cannot be set on a readiness probe, only on liveness and startup probes").field_path(".probes.readiness.terminationGracePeriodSeconds"))]
#[x_kube(validation = Rule::new(
    r"!has(self.preStopDelaySeconds) || self.preStopDelaySeconds == 0 || self.preStopDelaySeconds < (has(self.terminationGracePeriodSeconds) ? self.terminationGracePeriodSeconds : 30)"
).message("must be less than terminationGracePeriodSeconds (30 when unset): the delay is spent out of the grace period, before SIGTERM").field_path(".preStopDelaySeconds"))]
#[serde(rename_all = "camelCase")]
pub struct GoServerSpec {
    /// Container image to run, for example `registry.example.com/hello:1.4.2`.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// When the kubelet pulls the image. Defaults to Kubernetes' own rule
    /// (`Always` for `:latest`, otherwise `IfNotPresent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Names of Secrets in the same namespace holding registry credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253), regex(pattern = NAME_PATTERN)))]
    pub image_pull_secrets: Vec<String>,

    /// Overrides the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub command: Vec<String>,

    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub args: Vec<String>,

    /// Number of pods. Ignored while `autoscaling` is set: the
    /// `HorizontalPodAutoscaler` owns the count then. `kubectl scale gs` sets it.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Port the server listens on inside the pod; probes default to it.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Plain environment variables. Names must be unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,

    /// Configuration data, stored in the `ConfigMap` `<name>-config` and
    /// injected with `envFrom`. A change rolls the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigSpec>,

    /// References to Secrets in the same namespace. Gantry wires them into
    /// the pods and never reads their values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub secrets: Vec<SecretRef>,

    /// Health checks. Without this field the liveness probe asks `/healthz`
    /// and the readiness probe `/readyz` on `port`; there is no startup probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Probes>,

    /// CPU and memory requests and limits of the server container. With
    /// `autoscaling`, a resource it targets that is neither requested nor
    /// limited here is requested at a default (cpu `100m`, memory `128Mi`),
    /// and an Event says so: the autoscaler measures use as a share of the
    /// request and cannot scale without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,

    /// The Service in front of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,

    /// Exposes the Service through an Ingress. Removing the field deletes the
    /// Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,

    /// Exposes the Service through a Gateway API `HTTPRoute`, the successor
    /// of `ingress` (both may be set while moving from one to the other).
    /// Removing the field deletes the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteSpec>,

    /// Scales the Deployment with a `HorizontalPodAutoscaler`. Removing the
    /// field deletes the HPA and `replicas` applies again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// How a new revision replaces the old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,

    /// How Prometheus finds the server's metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,

    /// `ServiceAccount` the pods run as. Defaults to the namespace's `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub service_account_name: Option<String>,

    /// Node labels a node must carry to run the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,

    /// Node and pod affinity of the pods, passed to the pod spec as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// How the pods spread across zones and nodes, passed as is. An empty
    /// `labelSelector` is filled with the server's selector labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// Extra annotations on the pods (for example for a metrics scraper).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    pub pod_annotations: BTreeMap<String, String>,

    /// Extra labels on the pods. The `app.kubernetes.io/*` labels Gantry sets
    /// win over these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    pub pod_labels: BTreeMap<String, String>,

    /// Seconds a pod may take to stop after SIGTERM before it is killed.
    /// Must cover `preStopDelaySeconds` plus the server's own drain time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub termination_grace_period_seconds: Option<i64>,

    /// Seconds the pod keeps serving after it is marked for deletion, so
    /// that Services and Ingresses stop routing to it before SIGTERM
    /// (a `preStop` sleep). Unset means no delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 300))]
    pub pre_stop_delay_seconds: Option<i32>,
}

/// Kubernetes' `ResourceRequirements`, bounded so that the rules above can
/// be checked within the apiserver's cost budget (at most 16 resources, each
/// quantity at most 64 characters), and without `claims`: the pods declare
/// no resource claims for them to name.
fn resources_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = <Option<ResourceRequirements>>::json_schema(generator);
    if let Some(properties) = schema
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    {
        properties.remove("claims");
        for part in ["requests", "limits"] {
            if let Some(list) = properties
                .get_mut(part)
                .and_then(serde_json::Value::as_object_mut)
            {
                list.insert("maxProperties".to_owned(), 16.into());
                if let Some(values) = list
                    .get_mut("additionalProperties")
                    .and_then(serde_json::Value::as_object_mut)
                {
                    values.insert("maxLength".to_owned(), 64.into());
                }
            }
        }
    }
    schema
}

fn default_replicas() -> i32 {
    1
}

fn default_port() -> i32 {
    8080
}

/// The CRD as YAML, as written to `crds/goservers.gantry.dev.yaml`.
///
/// `serde_norway` is a maintained fork of the deprecated `serde_yaml`, with
/// the same output.
pub fn crd_yaml() -> Result<String, serde_norway::Error> {
    use kube::CustomResourceExt;
    let yaml = serde_norway::to_string(&GoServer::crd())?;
    Ok(format!(
        "# Generated by `cargo xtask crds` from operator/src/crd/. Do not edit.\n{yaml}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use pretty_assertions::assert_eq;

    /// What `kubectl apply` reads from the YAML must be the CRD the types
    /// generate: no value lost, retyped (`"1"` vs `1`, `"true"` vs `true`)
    /// or reshaped by the YAML emitter.
    #[test]
    fn crd_yaml_parses_back_to_the_crd() {
        let yaml = crd_yaml().expect("the CRD serializes");
        let parsed: serde_json::Value =
            serde_norway::from_str(&yaml).expect("the generated YAML parses");
        let expected = serde_json::to_value(GoServer::crd()).expect("the CRD is JSON");
        assert_eq!(parsed, expected);
    }
}
