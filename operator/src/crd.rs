//! The `GoServer` custom resource (`goservers.gantry.dev/v1alpha1`).
//!
//! These types are the single source of the CRD: `gantry-operator crd`
//! prints the schema derived from them, `cargo xtask crds` writes it to
//! `crds/`, and the doc comments below become the field descriptions users
//! see in `kubectl explain`. Every rule that the apiserver can check on its
//! own (bounds, patterns, CEL) sits beside the field it guards, so bad input
//! is rejected at admission with the field's path in the message; the
//! operator only validates what needs other objects (see `controller.rs`).

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A DNS-1123 subdomain, optionally behind a leading `*.` wildcard label.
const HOST_PATTERN: &str =
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A DNS-1123 subdomain: the names of Secrets, `ServiceAccounts`, classes.
const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Environment variable names that every shell and runtime accepts.
const ENV_NAME_PATTERN: &str = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$";
/// Keys of `ConfigMap` and Secret data.
const DATA_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// An absolute path: probes, ingress paths and mount points.
const ABSOLUTE_PATH_PATTERN: &str = r"^/";
/// A duration in Go's notation, as Kubernetes writes them: `30s`, `5m`,
/// `1h30m`, `250ms`. Parsed by [`crate::rollout::duration`].
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";
/// A DNS-1123 label: a namespace name.
const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A Gateway API duration (`1h`, `10s`, `1m30s`, `500ms`).
const GATEWAY_DURATION_PATTERN: &str = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$";
/// A Prometheus duration, as the `ServiceMonitor` CRD accepts it.
const PROMETHEUS_DURATION_PATTERN: &str =
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$";
/// A metric name: lower-case words joined by `-` or `_`.
const METRIC_NAME_PATTERN: &str = r"^[a-z0-9]([-_a-z0-9]*[a-z0-9])?$";

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

/// When the kubelet pulls the image.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// One plain environment variable.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct EnvVar {
    /// Variable name: letters, digits, `_`, `-` and `.`, not starting with a digit.
    #[schemars(length(min = 1, max = 253), regex(pattern = ENV_NAME_PATTERN))]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub value: String,
}

/// Configuration stored in a `ConfigMap` owned by the `GoServer`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSpec {
    /// Keys and values. Keys that are valid environment variable names become
    /// variables in the container; all keys become files under `mountPath`.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 256, "additionalProperties" = {"type": "string", "maxLength": 262_144}))]
    pub data: BTreeMap<String, String>,
    /// Also mount the data as files in this directory. Mounted files follow
    /// changes in place; the pods are rolled on every change either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = ABSOLUTE_PATH_PATTERN))]
    pub mount_path: Option<String>,
}

/// A reference to a Secret in the `GoServer`'s namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret. It must exist: a missing Secret is reported in
    /// the `Degraded` condition.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// Environment variables taken from keys of the Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub env: Vec<SecretEnvVar>,
    /// Also mount every key of the Secret as a file in this directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = ABSOLUTE_PATH_PATTERN))]
    pub mount_path: Option<String>,
}

/// An environment variable read from one key of a Secret.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct SecretEnvVar {
    /// Variable name: letters, digits, `_`, `-` and `.`, not starting with a digit.
    #[schemars(length(min = 1, max = 253), regex(pattern = ENV_NAME_PATTERN))]
    pub name: String,
    /// Key in the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = DATA_KEY_PATTERN))]
    pub key: String,
}

/// Liveness, readiness and startup probes, all HTTP GETs on the server.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
pub struct Probes {
    /// Restarts the container when it fails. Default path `/healthz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Probe>,
    /// Takes the pod out of the Service when it fails. Default path `/readyz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Probe>,
    /// Holds the other probes back until the server has started. Only set
    /// when given; default path `/healthz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<Probe>,
}

/// One HTTP probe. Unset tuning fields keep Kubernetes' defaults.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// Path to GET; must start with `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = ABSOLUTE_PATH_PATTERN))]
    pub path: Option<String>,
    /// Port to probe. Defaults to `spec.port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Seconds after the container starts before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub initial_delay_seconds: Option<i32>,
    /// Seconds between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: Option<i32>,
    /// Seconds after which one probe counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<i32>,
    /// Consecutive successes after a failure to count as healthy again
    /// (must be 1 for liveness and startup probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: Option<i32>,
    /// Consecutive failures before the probe gives up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub failure_threshold: Option<i32>,
    /// Grace period for a pod killed by this probe, overriding the pod's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub termination_grace_period_seconds: Option<i64>,
}

/// The Service in front of the pods.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Port the Service listens on; it forwards to `spec.port`.
    #[serde(default = "default_service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Annotations on the Service (for example for a cloud load balancer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    pub annotations: BTreeMap<String, String>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            type_: ServiceType::default(),
            port: default_service_port(),
            annotations: BTreeMap::new(),
        }
    }
}

fn default_service_port() -> i32 {
    80
}

/// Kubernetes Service types Gantry supports.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// An Ingress routing a host and path to the Service.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.tls) || has(self.host)").message("tls needs a host").field_path(".tls"))]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Host name (a DNS-1123 subdomain, optionally starting with `*.`).
    /// Without a host the Ingress matches every host and cannot have TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = HOST_PATTERN))]
    pub host: Option<String>,
    /// Path to route; must start with `/`.
    #[serde(default = "default_ingress_path")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = ABSOLUTE_PATH_PATTERN))]
    pub path: String,
    /// How `path` matches.
    #[serde(default)]
    pub path_type: PathType,
    /// `IngressClass` to use. Defaults to the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub class_name: Option<String>,
    /// Annotations on the Ingress (controller-specific settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    pub annotations: BTreeMap<String, String>,
    /// Serve HTTPS for `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

fn default_ingress_path() -> String {
    "/".to_owned()
}

/// How an Ingress path matches.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PathType {
    #[default]
    Prefix,
    Exact,
    ImplementationSpecific,
}

impl PathType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prefix => "Prefix",
            Self::Exact => "Exact",
            Self::ImplementationSpecific => "ImplementationSpecific",
        }
    }
}

/// A Gateway API `HTTPRoute` sending a host and path to the Service.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// The Gateways (and optionally their listeners) the route attaches to.
    #[schemars(length(min = 1, max = 32))]
    pub parent_refs: Vec<ParentRef>,
    /// Host names the route matches (as the `Host` header); none matches
    /// every host the listener accepts. The first gives `status.url`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253), regex(pattern = HOST_PATTERN)))]
    pub hostnames: Vec<String>,
    /// The path the route matches; every path (`PathPrefix /`) by default.
    #[serde(default)]
    pub path: RoutePath,
    /// Time limits of a request through the Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RouteTimeouts>,
}

/// A Gateway the route attaches to.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// Name of the Gateway.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// Namespace of the Gateway; the GoServer's own by default. The
    /// Gateway's listener must allow routes from the GoServer's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub namespace: Option<String>,
    /// One listener of the Gateway, by name; all of them by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub section_name: Option<String>,
}

/// The path an `HTTPRoute` matches, with the Gateway API's own rules.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!self.value.contains('//')").message("must not contain '//'").field_path(".value"))]
#[x_kube(validation = Rule::new("!self.value.contains('/./')").message("must not contain '/./'").field_path(".value"))]
#[x_kube(validation = Rule::new("!self.value.contains('/../')").message("must not contain '/../'").field_path(".value"))]
#[x_kube(validation = Rule::new("!self.value.lowerAscii().contains('%2f')").message("must not contain an encoded slash (%2f)").field_path(".value"))]
#[x_kube(validation = Rule::new("!self.value.contains('#')").message("must not contain '#'").field_path(".value"))]
#[x_kube(validation = Rule::new("!self.value.endsWith('/..')").message("must not end with '/..'").field_path(".value"))]
#[x_kube(validation = Rule::new("!self.value.endsWith('/.')").message("must not end with '/.'").field_path(".value"))]
#[serde(rename_all = "camelCase")]
pub struct RoutePath {
    /// How `value` matches.
    #[serde(default, rename = "type")]
    pub type_: RoutePathType,
    /// The path; must start with `/`.
    #[serde(default = "default_ingress_path")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = ABSOLUTE_PATH_PATTERN))]
    pub value: String,
}

impl Default for RoutePath {
    fn default() -> Self {
        Self {
            type_: RoutePathType::default(),
            value: default_ingress_path(),
        }
    }
}

/// How an `HTTPRoute` path matches.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RoutePathType {
    /// Every path starting with the value, element by element.
    #[default]
    PathPrefix,
    /// Only the value itself.
    Exact,
}

impl RoutePathType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PathPrefix => "PathPrefix",
            Self::Exact => "Exact",
        }
    }
}

/// Gateway API timeouts, in its duration syntax (`10s`, `1m30s`, `500ms`).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new(
    "!(has(self.request) && has(self.backendRequest) && duration(self.request) != duration('0s') && duration(self.backendRequest) > duration(self.request))"
).message("must not be longer than request").field_path(".backendRequest"))]
#[serde(rename_all = "camelCase")]
pub struct RouteTimeouts {
    /// How long the Gateway waits for the whole response to a client's
    /// request; `0s` for no limit. The Gateway's own default otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = GATEWAY_DURATION_PATTERN))]
    pub request: Option<String>,
    /// How long the Gateway waits for one request to the server (a retry
    /// makes another); at most `request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = GATEWAY_DURATION_PATTERN))]
    pub backend_request: Option<String>,
}

/// How Prometheus finds the server's metrics.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Creates a prometheus-operator `ServiceMonitor` named like the
    /// `GoServer`, scraping `path` on the Service's `http` port and keeping
    /// the pods' `gantry.dev/revision` label as the series label `revision`.
    /// Needs the `monitoring.coreos.com` CRDs; without them the `Monitored`
    /// condition says so, and the monitor is created once they are
    /// installed. Turning it off deletes the monitor.
    #[serde(default)]
    pub service_monitor: bool,
    /// Path of the metrics endpoint.
    #[serde(default = "default_metrics_path")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = ABSOLUTE_PATH_PATTERN))]
    pub path: String,
    /// Scrape interval, in Prometheus' duration syntax (`30s`, `1m`).
    /// Defaults to the Prometheus' own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = PROMETHEUS_DURATION_PATTERN))]
    pub interval: Option<String>,
    /// Labels on the `ServiceMonitor`, for the `serviceMonitorSelector` of
    /// the Prometheus that should pick it up (for example `release: kube-prometheus`).
    /// The `app.kubernetes.io/*` labels Gantry sets win over these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    pub labels: BTreeMap<String, String>,
}

fn default_metrics_path() -> String {
    "/metrics".to_owned()
}

/// TLS for the Ingress: an existing certificate Secret, or a cert-manager
/// issuer that creates one.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.secretName) || has(self.issuer)").message("tls needs a secretName or an issuer"))]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret holding the certificate. With an `issuer` it defaults to
    /// `<name>-tls` and cert-manager fills it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub secret_name: Option<String>,
    /// cert-manager issuer that provisions the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<IssuerRef>,
}

/// A cert-manager Issuer or `ClusterIssuer`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct IssuerRef {
    /// Name of the issuer.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// `Issuer` (same namespace) or `ClusterIssuer`.
    #[serde(default)]
    pub kind: IssuerKind,
}

/// Kinds of cert-manager issuers.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IssuerKind {
    #[default]
    Issuer,
    ClusterIssuer,
}

/// A `HorizontalPodAutoscaler` (autoscaling/v2) for the Deployment.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas").field_path(".minReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Fewest pods.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Most pods.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU use, in percent of the request, to aim for. When neither
    /// target is set, 80 % CPU is used.
    #[serde(
        default,
        rename = "targetCPUUtilizationPercentage",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 1000))]
    pub target_cpu_utilization_percentage: Option<i32>,
    /// Average memory use, in percent of the request, to aim for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub target_memory_utilization_percentage: Option<i32>,
    /// Scaling behavior (autoscaling/v2), passed to the HPA whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

fn default_min_replicas() -> i32 {
    1
}

/// How new revisions roll out, and how they are judged.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.strategy) || self.strategy != 'Canary' || (has(self.steps) && size(self.steps) > 0)").message("the Canary strategy needs at least one step").field_path(".steps"))]
#[x_kube(validation = Rule::new("!has(self.strategy) || self.strategy != 'Canary' || !has(self.verification) || !has(self.verification.postVerification)").message("postVerification is not supported with the Canary strategy: every step is already judged on live traffic, the last one before the promotion").field_path(".verification.postVerification"))]
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
#[x_kube(validation = Rule::new("has(self.min) || has(self.max)").message("a metric needs min or max"))]
#[x_kube(validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max").message("min must not exceed max").field_path(".min"))]
#[serde(rename_all = "camelCase")]
pub struct MetricSpec {
    /// Name shown in status, Events and the webhook.
    #[schemars(length(min = 1, max = 63), regex(pattern = METRIC_NAME_PATTERN))]
    pub name: String,
    /// A `PromQL` query returning one value. `${name}`, `${namespace}`,
    /// `${revision}`, `${interval}` and `${window}` are replaced first.
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
pub struct MetricValue {
    /// The metric's name in the spec.
    pub name: String,
    /// Its last value; absent when there was no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// The CRD as YAML, as written to `crds/goservers.gantry.dev.yaml`.
///
/// `serde_norway` is a maintained fork of the deprecated `serde_yaml`, with
/// the same output.
pub fn crd_yaml() -> Result<String, serde_norway::Error> {
    use kube::CustomResourceExt;
    let yaml = serde_norway::to_string(&GoServer::crd())?;
    Ok(format!(
        "# Generated by `cargo xtask crds` from operator/src/crd.rs. Do not edit.\n{yaml}"
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
