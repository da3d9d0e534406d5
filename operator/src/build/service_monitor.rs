//! The optional prometheus-operator `ServiceMonitor`, named like the
//! `GoServer`.
//!
//! prometheus-operator publishes no Rust types, so [`ServiceMonitor`] is
//! typed here with the fields Gantry sets, nothing more: a server-side apply
//! sends only those, and every other field of the kind stays the user's or
//! the CRD's default. The end-to-end tests apply it against the real CRD
//! from the prometheus-operator module, whose schema rejects a misspelt
//! field.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::canary::TRACK_LABEL;
use super::meta::{Owner, labels, selector_labels};
use super::revision::REVISION_LABEL;
use crate::crd::{GoServer, MonitoringSpec};

/// The `spec` of a `monitoring.coreos.com/v1` `ServiceMonitor`, as far as
/// Gantry writes it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "ServiceMonitor",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// The Services whose endpoints are scraped.
    pub selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
}

/// One scraped port of the selected Services.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relabelings: Vec<Relabeling>,
}

/// A Prometheus `relabel_config`, in prometheus-operator's spelling.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Relabeling {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_label: Option<String>,
}

/// The Prometheus meta label that carries a pod's label `label` during
/// relabeling: every character outside `[a-zA-Z0-9_]` becomes `_`.
fn pod_label_meta(label: &str) -> String {
    let sanitized: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("__meta_kubernetes_pod_label_{sanitized}")
}

pub(super) fn build(gs: &GoServer, owner: &Owner<'_>) -> Option<ServiceMonitor> {
    let MonitoringSpec {
        service_monitor,
        path,
        interval,
        labels: extra,
    } = gs.spec.monitoring.clone()?;
    if !service_monitor {
        return None;
    }
    let mut metadata = owner.meta(owner.name, BTreeMap::new());
    let mut all = extra;
    all.extend(labels(owner.name));
    metadata.labels = Some(all);
    Some(ServiceMonitor {
        metadata,
        spec: ServiceMonitorSpec {
            // The Service carries the selector labels (and more); only
            // the GoServer's own Service matches them.
            selector: LabelSelector {
                match_labels: Some(selector_labels(owner.name)),
                ..LabelSelector::default()
            },
            endpoints: vec![Endpoint {
                port: Some("http".to_owned()),
                path: Some(path),
                interval,
                // The dashboards, alerts and verification queries group
                // by `revision`, and a canary's comparison tells its
                // baseline's pods by `track`; prometheus-operator would
                // otherwise drop the pod labels.
                relabelings: vec![
                    Relabeling {
                        source_labels: vec![pod_label_meta(REVISION_LABEL)],
                        target_label: Some("revision".to_owned()),
                    },
                    Relabeling {
                        source_labels: vec![pod_label_meta(TRACK_LABEL)],
                        target_label: Some("track".to_owned()),
                    },
                ],
            }],
        },
    })
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::super::tests::{goserver, labels, owner_refs};
    use super::*;

    #[test]
    fn no_monitor_unless_asked() {
        for spec in [
            json!({"image": "hello:1"}),
            json!({"image": "hello:1", "monitoring": {}}),
            json!({"image": "hello:1", "monitoring": {"serviceMonitor": false, "interval": "15s"}}),
        ] {
            let gs = goserver(spec);
            assert_eq!(build(&gs, &Owner::of(&gs).unwrap()), None);
        }
    }

    #[test]
    fn monitor_scrapes_the_http_port_and_keeps_the_revision() {
        let gs = goserver(json!({"image": "hello:1", "monitoring": {"serviceMonitor": true}}));
        let owner = Owner::of(&gs).unwrap();
        assert_eq!(
            serde_json::to_value(build(&gs, &owner).unwrap()).unwrap(),
            json!({
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "ServiceMonitor",
                "metadata": {
                    "name": "hello",
                    "namespace": "web",
                    "labels": labels(),
                    "ownerReferences": owner_refs(),
                },
                "spec": {
                    "selector": {"matchLabels": {
                        "app.kubernetes.io/instance": "hello",
                        "app.kubernetes.io/name": "hello",
                    }},
                    "endpoints": [{
                        "port": "http",
                        "path": "/metrics",
                        "relabelings": [{
                            "sourceLabels": ["__meta_kubernetes_pod_label_gantry_dev_revision"],
                            "targetLabel": "revision",
                        }, {
                            "sourceLabels": ["__meta_kubernetes_pod_label_gantry_dev_track"],
                            "targetLabel": "track",
                        }],
                    }],
                },
            })
        );
    }

    #[test]
    fn user_labels_interval_and_path_are_kept_but_not_over_gantrys_labels() {
        let gs = goserver(json!({"image": "hello:1", "monitoring": {
            "serviceMonitor": true,
            "path": "/internal/metrics",
            "interval": "15s",
            "labels": {"release": "kube-prometheus", "app.kubernetes.io/name": "other"},
        }}));
        let monitor = build(&gs, &Owner::of(&gs).unwrap()).unwrap();
        let mut want = labels();
        want["release"] = json!("kube-prometheus");
        assert_eq!(
            serde_json::to_value(&monitor.metadata.labels).unwrap(),
            want
        );
        let endpoint = &monitor.spec.endpoints[0];
        assert_eq!(endpoint.path.as_deref(), Some("/internal/metrics"));
        assert_eq!(endpoint.interval.as_deref(), Some("15s"));
    }

    #[test]
    fn meta_labels_are_sanitized_like_prometheus_does() {
        assert_eq!(
            pod_label_meta("gantry.dev/revision"),
            "__meta_kubernetes_pod_label_gantry_dev_revision"
        );
    }
}
