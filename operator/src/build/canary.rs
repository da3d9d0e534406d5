//! The canary of a new revision (`rollout.strategy: Canary`): a second
//! Deployment and a Service, both `<name>-canary`, beside the stable ones;
//! and, when its metrics are compared, its baseline: a Deployment and a
//! Service `<name>-baseline` running the stable revision at the canary's
//! size, fresh pods started with the canary (long-running pods are not a
//! fair baseline), their pods labelled `gantry.dev/track: baseline`.
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

/// What a baseline's objects add to the `GoServer`'s name.
pub const BASELINE_SUFFIX: &str = "-baseline";

/// The label telling a baseline's pods from the stable ones, which run the
/// same revision.
pub const TRACK_LABEL: &str = "gantry.dev/track";

/// The baseline's pods' track: their [`TRACK_LABEL`], and `${track}` in
/// the queries asked of them (empty for every other pod).
pub const BASELINE_TRACK: &str = "baseline";

/// The name of the baseline's Deployment and Service, and of its pods'
/// instance label.
pub fn baseline_name(goserver: &str) -> String {
    format!("{goserver}{BASELINE_SUFFIX}")
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
    /// Run a baseline of the stable revision beside it, with as many pods
    /// and the same share of the traffic.
    pub baseline: bool,
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
    /// The baseline beside it, when its metrics are compared.
    pub baseline: Option<BaselineChildren>,
}

/// The baseline's Deployment and Service.
#[derive(Clone, Debug, PartialEq)]
pub struct BaselineChildren {
    pub deployment: Deployment,
    pub service: Service,
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

/// The children of the canary `run` beside the stable revision `stable`
/// (whose `ConfigMap` is `stable_config_map`).
pub(super) fn build(
    gs: &GoServer,
    owner: &Owner<'_>,
    run: CanaryRun,
    stable: &Revision,
    stable_config_map: &str,
) -> CanaryChildren {
    let canary = name(owner.name);
    let (deployment, service) = track(gs, owner, &run.revision, &canary, run.replicas, None);
    let baseline = run.baseline.then(|| {
        let (deployment, service) = track(
            gs,
            owner,
            stable,
            &baseline_name(owner.name),
            run.replicas,
            Some(BASELINE_TRACK),
        );
        BaselineChildren {
            deployment,
            service,
        }
    });
    let config_map = config::build(owner, &run.revision.data.config);
    let config_map =
        (config_map.metadata.name.as_deref() != Some(stable_config_map)).then_some(config_map);
    CanaryChildren {
        deployment,
        service,
        config_map,
        revision: run.revision,
        weight: run.weight,
        baseline,
    }
}

/// A Deployment and a Service `name` running `revision` beside the stable
/// ones: their pods' instance label is `name`, so the stable Service,
/// `status.selector` and the HPA (all of which select `instance: <name of
/// the GoServer>`) never count them; `track` labels the pods.
fn track(
    gs: &GoServer,
    owner: &Owner<'_>,
    revision: &Revision,
    name: &str,
    replicas: i32,
    track: Option<&str>,
) -> (Deployment, Service) {
    let relabel = |labels: &mut Option<BTreeMap<String, String>>| {
        labels
            .get_or_insert_with(BTreeMap::new)
            .insert(INSTANCE_LABEL.to_owned(), name.to_owned());
    };

    let mut deployment = deployment::build(gs, owner, revision);
    deployment.metadata.name = Some(name.to_owned());
    if let Some(spec) = deployment.spec.as_mut() {
        spec.replicas = Some(replicas);
        relabel(&mut spec.selector.match_labels);
        let pod_labels = &mut spec
            .template
            .metadata
            .get_or_insert_with(Default::default)
            .labels;
        relabel(pod_labels);
        if let Some(track) = track {
            pod_labels
                .get_or_insert_with(BTreeMap::new)
                .insert(TRACK_LABEL.to_owned(), track.to_owned());
        }
    }

    let mut service = service::build(gs, owner);
    service.metadata.name = Some(name.to_owned());
    // Only the route sends traffic here: no load balancer, no node port,
    // and none of the stable Service's annotations (which configure those).
    service.metadata.annotations = None;
    if let Some(spec) = service.spec.as_mut() {
        spec.type_ = Some("ClusterIP".to_owned());
        relabel(&mut spec.selector);
    }
    (deployment, service)
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
            baseline: false,
        };
        let children = build(&gs, &owner, run, &revision, "hello-config-stable");
        assert_eq!(children.baseline, None);
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
                revision: revision.clone(),
                weight: 10,
                replicas: 1,
                baseline: false,
            },
            &revision,
            &config::config_map_name("hello", &[("A".to_owned(), "2".to_owned())].into()),
        );
        assert_eq!(same.config_map, None);
    }

    #[test]
    fn the_baseline_runs_the_stable_revision_on_its_own_track() {
        let gs = goserver(json!({"image": "hello:2", "replicas": 4}));
        let owner = Owner::of(&gs).unwrap();
        let canary = super::super::spec_revision(&gs).unwrap();
        let stable_gs = goserver(json!({"image": "hello:1", "replicas": 4}));
        let stable = super::super::spec_revision(&stable_gs).unwrap();
        let run = CanaryRun {
            revision: canary.clone(),
            weight: 25,
            replicas: 1,
            baseline: true,
        };
        let children = build(&gs, &owner, run, &stable, "hello-config-stable");
        let baseline = children.baseline.unwrap();
        let deployment = serde_json::to_value(&baseline.deployment).unwrap();
        assert_eq!(deployment["metadata"]["name"], "hello-baseline");
        assert_eq!(deployment["spec"]["replicas"], 1);
        let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
        assert_eq!(pod_labels["app.kubernetes.io/instance"], "hello-baseline");
        assert_eq!(pod_labels["gantry.dev/track"], "baseline");
        assert_eq!(pod_labels["gantry.dev/revision"], json!(stable.name));
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["image"],
            "hello:1"
        );
        let service = serde_json::to_value(&baseline.service).unwrap();
        assert_eq!(service["metadata"]["name"], "hello-baseline");
        assert_eq!(
            service["spec"]["selector"],
            json!({"app.kubernetes.io/name": "hello", "app.kubernetes.io/instance": "hello-baseline"})
        );
        // The canary's own pods carry no track.
        let canary_pods = serde_json::to_value(&children.deployment).unwrap();
        assert_eq!(
            canary_pods["spec"]["template"]["metadata"]["labels"].get("gantry.dev/track"),
            None
        );
    }
}
