//! The patterns the schema checks strings against.

/// A DNS-1123 subdomain, optionally behind a leading `*.` wildcard label.
pub(super) const HOST_PATTERN: &str =
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A DNS-1123 subdomain: the names of Secrets, `ServiceAccounts`, classes.
pub(super) const NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Environment variable names that every shell and runtime accepts.
pub(super) const ENV_NAME_PATTERN: &str = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$";

/// Keys of `ConfigMap` and Secret data.
pub(super) const DATA_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";

/// An absolute path: probes, ingress paths and mount points.
pub(super) const ABSOLUTE_PATH_PATTERN: &str = r"^/";

/// A duration in Go's notation, as Kubernetes writes them: `30s`, `5m`,
/// `1h30m`, `250ms`. Parsed by [`crate::rollout::duration`].
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// A DNS-1123 label: a namespace name.
pub(super) const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A Gateway API duration (`1h`, `10s`, `1m30s`, `500ms`).
pub(super) const GATEWAY_DURATION_PATTERN: &str = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$";

/// A Prometheus duration, as the `ServiceMonitor` CRD accepts it.
pub(super) const PROMETHEUS_DURATION_PATTERN: &str =
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$";

/// A metric name: lower-case words joined by `-` or `_`.
pub(super) const METRIC_NAME_PATTERN: &str = r"^[a-z0-9]([-_a-z0-9]*[a-z0-9])?$";
