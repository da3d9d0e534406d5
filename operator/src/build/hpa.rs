//! The optional `HorizontalPodAutoscaler` (autoscaling/v2) of the Deployment.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use super::meta::Owner;
use crate::crd::{AutoscalingSpec, GoServer};

/// CPU target when the spec names none, as the HPA itself would assume.
const DEFAULT_CPU_TARGET: i32 = 80;

/// The utilization targets of the HPA, by resource: CPU at 80 % when the
/// spec names neither.
fn targets(cpu: Option<i32>, memory: Option<i32>) -> [(&'static str, Option<i32>); 2] {
    let cpu = match (cpu, memory) {
        (None, None) => Some(DEFAULT_CPU_TARGET),
        (cpu, _) => cpu,
    };
    [("cpu", cpu), ("memory", memory)]
}

/// Requests the server container gets when autoscaling targets a resource
/// the spec requests nothing of: the HPA measures utilization as a share of
/// the request, and without one it never scales ("missing request for
/// cpu"). A limit counts as a request, as Kubernetes copies it into one.
pub const DEFAULT_REQUESTS: [(&str, &str); 2] = [("cpu", "100m"), ("memory", "128Mi")];

/// The requests [`DEFAULT_REQUESTS`] fills in for `gs`: `(resource,
/// quantity)` for each resource its autoscaling targets and its
/// `resources` neither request nor limit.
pub fn defaulted_requests(gs: &GoServer) -> Vec<(&'static str, &'static str)> {
    let Some(autoscaling) = &gs.spec.autoscaling else {
        return Vec::new();
    };
    let resources = gs.spec.resources.as_ref();
    let set = |resource: &str| {
        resources.is_some_and(|r| {
            [&r.requests, &r.limits]
                .into_iter()
                .flatten()
                .any(|values| values.contains_key(resource))
        })
    };
    targets(
        autoscaling.target_cpu_utilization_percentage,
        autoscaling.target_memory_utilization_percentage,
    )
    .into_iter()
    .filter(|(resource, target)| target.is_some() && !set(resource))
    .filter_map(|(resource, _)| DEFAULT_REQUESTS.into_iter().find(|(r, _)| *r == resource))
    .collect()
}

pub(super) fn build(gs: &GoServer, owner: &Owner<'_>) -> Option<HorizontalPodAutoscaler> {
    let AutoscalingSpec {
        min_replicas,
        max_replicas,
        target_cpu_utilization_percentage,
        target_memory_utilization_percentage,
        behavior,
    } = gs.spec.autoscaling.clone()?;

    let metrics = targets(
        target_cpu_utilization_percentage,
        target_memory_utilization_percentage,
    )
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
    fn requests_autoscaling_needs_are_filled_in() {
        let defaulted = |spec: serde_json::Value| defaulted_requests(&goserver(spec));
        // Nothing without autoscaling, even without resources.
        assert_eq!(defaulted(json!({"image": "a:1"})), vec![]);
        // CPU, the default target, with no request.
        assert_eq!(
            defaulted(json!({"image": "a:1", "autoscaling": {"maxReplicas": 3}})),
            vec![("cpu", "100m")]
        );
        // A request or a limit (which Kubernetes copies) is the user's.
        for resources in [
            json!({"requests": {"cpu": "250m"}}),
            json!({"limits": {"cpu": "1"}}),
        ] {
            assert_eq!(
                defaulted(
                    json!({"image": "a:1", "resources": resources, "autoscaling": {"maxReplicas": 3}})
                ),
                vec![]
            );
        }
        // Memory only when memory is a target; CPU then only if named too.
        assert_eq!(
            defaulted(
                json!({"image": "a:1", "resources": {"requests": {"cpu": "1"}},
                "autoscaling": {"maxReplicas": 3, "targetMemoryUtilizationPercentage": 70}})
            ),
            vec![("memory", "128Mi")]
        );
        assert_eq!(
            defaulted(
                json!({"image": "a:1", "resources": {"limits": {"memory": "1Gi"}},
                "autoscaling": {"maxReplicas": 3, "targetCPUUtilizationPercentage": 60,
                    "targetMemoryUtilizationPercentage": 70}})
            ),
            vec![("cpu", "100m")]
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
