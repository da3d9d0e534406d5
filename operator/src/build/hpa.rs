//! The optional `HorizontalPodAutoscaler` (autoscaling/v2) of the Deployment.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use super::Owner;
use crate::crd::{AutoscalingSpec, GoServer};

/// CPU target when the spec names none, as the HPA itself would assume.
const DEFAULT_CPU_TARGET: i32 = 80;

pub(super) fn build(gs: &GoServer, owner: &Owner<'_>) -> Option<HorizontalPodAutoscaler> {
    let AutoscalingSpec {
        min_replicas,
        max_replicas,
        target_cpu_utilization_percentage,
        target_memory_utilization_percentage,
        behavior,
    } = gs.spec.autoscaling.clone()?;

    let cpu = match (
        target_cpu_utilization_percentage,
        target_memory_utilization_percentage,
    ) {
        (None, None) => Some(DEFAULT_CPU_TARGET),
        (cpu, _) => cpu,
    };
    let metrics = [
        ("cpu", cpu),
        ("memory", target_memory_utilization_percentage),
    ]
    .into_iter()
    .filter_map(|(resource, target)| {
        target.map(|percent| MetricSpec {
            type_: "Resource".to_owned(),
            resource: Some(ResourceMetricSource {
                name: resource.to_owned(),
                target: MetricTarget {
                    type_: "Utilization".to_owned(),
                    average_utilization: Some(percent),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        })
    })
    .collect();

    Some(HorizontalPodAutoscaler {
        metadata: owner.meta(owner.name, BTreeMap::new()),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: owner.name.to_owned(),
            },
            min_replicas: Some(min_replicas),
            max_replicas,
            metrics: Some(metrics),
            behavior,
        },
        ..HorizontalPodAutoscaler::default()
    })
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::super::tests::{goserver, labels, owner_refs};
    use super::*;

    #[test]
    fn no_hpa_without_autoscaling() {
        let gs = goserver(json!({"image": "hello:1"}));
        assert_eq!(build(&gs, &Owner::of(&gs).unwrap()), None);
    }

    #[test]
    fn hpa_with_both_targets_and_behavior() {
        let behavior = json!({
            "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 4, "periodSeconds": 60}]},
            "scaleDown": {"stabilizationWindowSeconds": 300, "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}]},
        });
        let gs = goserver(json!({
            "image": "hello:1",
            "autoscaling": {
                "minReplicas": 2,
                "maxReplicas": 10,
                "targetCPUUtilizationPercentage": 70,
                "targetMemoryUtilizationPercentage": 75,
                "behavior": behavior,
            },
        }));
        assert_eq!(
            serde_json::to_value(build(&gs, &Owner::of(&gs).unwrap()).unwrap()).unwrap(),
            json!({
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {
                    "name": "hello",
                    "namespace": "web",
                    "labels": labels(),
                    "ownerReferences": owner_refs(),
                },
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hello"},
                    "minReplicas": 2,
                    "maxReplicas": 10,
                    "metrics": [
                        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
                        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 75}}},
                    ],
                    "behavior": behavior,
                },
            })
        );
    }

    #[test]
    fn hpa_defaults_to_cpu() {
        let gs = goserver(json!({"image": "hello:1", "autoscaling": {"maxReplicas": 3}}));
        let hpa = serde_json::to_value(build(&gs, &Owner::of(&gs).unwrap()).unwrap()).unwrap();
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(
            hpa["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}])
        );
    }
}
