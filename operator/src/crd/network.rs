//! How the server is reached and scraped: Service, Ingress and TLS, the
//! Gateway API route, monitoring.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::patterns::{
    ABSOLUTE_PATH_PATTERN, DNS_LABEL_PATTERN, GATEWAY_DURATION_PATTERN, HOST_PATTERN, NAME_PATTERN,
    PROMETHEUS_DURATION_PATTERN,
};

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
