//! The canary of a new revision (`rollout.strategy: Canary`): a second
//! Deployment and a Service, both `<name>-canary`, beside the stable ones.
//!
//! The canary's pods carry `app.kubernetes.io/instance: <name>-canary`, so
//! the stable Service, `status.selector` and the HPA (all of which select
//! `instance: <name>`) never count them. The objects themselves keep the
//! `GoServer`'s labels: they are its children, found by the same watches.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};

use super::meta::{INSTANCE_LABEL, Owner};
use super::revision::Revision;
use super::{config, deployment, service};
use crate::crd::GoServer;

/// What a canary's objects add to the `GoServer`'s name.
pub const SUFFIX: &str = "-canary";

/// The name of the canary's Deployment and Service, and of its pods'
/// instance label.
pub fn name(goserver: &str) -> String {
    format!("{goserver}{SUFFIX}")
}

/// The canary to run.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryRun {
    /// The new revision.
    pub revision: Revision,
    /// Percent of the route's traffic it gets.
    pub weight: i32,
    /// Its pods (see [`replicas`]).
    pub replicas: i32,
}

/// The canary's children.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryChildren {
    pub deployment: Deployment,
    pub service: Service,
    /// The revision's config; `None` when it is the stable revision's.
    pub config_map: Option<ConfigMap>,
    pub revision: Revision,
    pub weight: i32,
}

/// The canary's size: its weight's share of the stable Deployment's pods,
/// rounded up, at least one while it gets traffic and none at weight 0.
pub fn replicas(stable: i32, weight: i32) -> i32 {
    if weight <= 0 {
        return 0;
    }
    let stable = i64::from(stable.max(1));
    let share = (stable * i64::from(weight.min(100)) + 99) / 100;
    i32::try_from(share).unwrap_or(i32::MAX).max(1)
}

pub(super) fn build(
    gs: &GoServer,
    owner: &Owner<'_>,
    run: CanaryRun,
    stable_config_map: &str,
) -> CanaryChildren {
    let canary = name(owner.name);
    let relabel = |labels: &mut Option<BTreeMap<String, String>>| {
        labels
            .get_or_insert_with(BTreeMap::new)
            .insert(INSTANCE_LABEL.to_owned(), canary.clone());
    };

    let mut deployment = deployment::build(gs, owner, &run.revision);
    deployment.metadata.name = Some(canary.clone());
    if let Some(spec) = deployment.spec.as_mut() {
        spec.replicas = Some(run.replicas);
        relabel(&mut spec.selector.match_labels);
        relabel(
            &mut spec
                .template
                .metadata
                .get_or_insert_with(Default::default)
                .labels,
        );
    }

    let mut service = service::build(gs, owner);
    service.metadata.name = Some(canary.clone());
    // Only the route sends traffic here: no load balancer, no node port,
    // and none of the stable Service's annotations (which configure those).
    service.metadata.annotations = None;
    if let Some(spec) = service.spec.as_mut() {
        spec.type_ = Some("ClusterIP".to_owned());
        relabel(&mut spec.selector);
    }

    let config_map = config::build(owner, &run.revision.data.config);
    let config_map =
        (config_map.metadata.name.as_deref() != Some(stable_config_map)).then_some(config_map);
    CanaryChildren {
        deployment,
        service,
        config_map,
        revision: run.revision,
        weight: run.weight,
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::super::tests::goserver;
    use super::*;

    #[test]
    fn the_canary_follows_its_weight() {
        assert_eq!(replicas(4, 10), 1);
        assert_eq!(replicas(4, 50), 2);
        assert_eq!(replicas(10, 25), 3);
        assert_eq!(replicas(10, 99), 10);
        assert_eq!(replicas(0, 50), 1);
        assert_eq!(replicas(4, 0), 0);
    }

    #[test]
    fn canary_pods_are_not_the_stable_ones() {
        let gs = goserver(json!({
            "image": "hello:2",
            "replicas": 4,
            "config": {"data": {"A": "2"}},
            "service": {"type": "LoadBalancer", "port": 8080, "annotations": {"lb": "x"}},
        }));
        let owner = Owner::of(&gs).unwrap();
        let revision = super::super::spec_revision(&gs).unwrap();
        let run = CanaryRun {
            revision: revision.clone(),
            weight: 10,
            replicas: 1,
        };
        let children = build(&gs, &owner, run, "hello-config-stable");
        let deployment = serde_json::to_value(&children.deployment).unwrap();
        assert_eq!(deployment["metadata"]["name"], "hello-canary");
        assert_eq!(deployment["spec"]["replicas"], 1);
        assert_eq!(
            deployment["spec"]["selector"]["matchLabels"],
            json!({"app.kubernetes.io/name": "hello", "app.kubernetes.io/instance": "hello-canary"})
        );
        let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
        assert_eq!(pod_labels["app.kubernetes.io/instance"], "hello-canary");
        assert_eq!(pod_labels["gantry.dev/revision"], json!(revision.name));
        // The objects are the GoServer's children, labelled as such.
        assert_eq!(
            deployment["metadata"]["labels"]["app.kubernetes.io/instance"],
            "hello"
        );

        let service = serde_json::to_value(&children.service).unwrap();
        assert_eq!(service["metadata"]["name"], "hello-canary");
        assert_eq!(service["metadata"].get("annotations"), None);
        assert_eq!(service["spec"]["type"], "ClusterIP");
        assert_eq!(service["spec"]["ports"][0]["port"], 8080);
        assert_eq!(
            service["spec"]["selector"],
            json!({"app.kubernetes.io/name": "hello", "app.kubernetes.io/instance": "hello-canary"})
        );
        // Another config than the stable revision's: its own ConfigMap.
        assert!(children.config_map.is_some());
        let same = build(
            &gs,
            &owner,
            CanaryRun {
                revision,
                weight: 10,
                replicas: 1,
            },
            &config::config_map_name("hello", &[("A".to_owned(), "2".to_owned())].into()),
        );
        assert_eq!(same.config_map, None);
    }
}
