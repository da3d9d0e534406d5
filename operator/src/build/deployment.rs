//! The Deployment running the server, named like the `GoServer`.
//!
//! The pod template is where most of the spec lands: image, env (plain,
//! from the `ConfigMap`, from Secret keys), probes, resources, volumes, pod
//! placement, and a security context that meets the Pod Security Standard
//! `restricted`. Two hashes tie it together: the config hash annotation
//! rolls the pods when `spec.config.data` changes (environment variables are
//! read only at start), and the hash of the whole template is the revision
//! reported in status.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, Lifecycle,
    LifecycleHandler, LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    SleepAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::config_map_name;
use super::meta::{Owner, labels, non_empty, non_empty_vec, selector_labels, short_hash};
use super::revision::{self, Revision};
use crate::crd::{GoServer, Probe as GsProbe, RolloutSpec};
use crate::error::{Error, Result};

/// Name of the server container.
pub const CONTAINER_NAME: &str = "server";
/// Pod template annotation carrying the hash of the config data.
pub const CONFIG_HASH_ANNOTATION: &str = "gantry.dev/config-hash";
/// The writable scratch directory under a read-only root filesystem.
pub(super) const TMP_MOUNT_PATH: &str = "/tmp";

const DEFAULT_LIVENESS_PATH: &str = "/healthz";
const DEFAULT_READINESS_PATH: &str = "/readyz";
const DEFAULT_STARTUP_PATH: &str = "/healthz";

/// Builds the Deployment running the revision `in_force`: its template
/// with the revision's label and variables put in. Everything outside the
/// template (replicas, strategy) follows the spec.
pub(super) fn build(gs: &GoServer, owner: &Owner<'_>, in_force: &Revision) -> Deployment {
    let spec = &gs.spec;
    let mut template = in_force.data.template.clone();
    revision::inject(&mut template, &in_force.name, owner.name, &in_force.image());

    let strategy = spec.rollout.as_ref().and_then(
        |RolloutSpec {
             max_surge,
             max_unavailable,
             revision_history_limit: _,
             progress_deadline_seconds: _,
             verification: _,
             strategy: _,
             steps: _,
             gateway: _,
         }| {
            (max_surge.is_some() || max_unavailable.is_some()).then(|| DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: max_surge.clone(),
                    max_unavailable: max_unavailable.clone(),
                }),
            })
        },
    );

    Deployment {
        metadata: owner.meta(owner.name, BTreeMap::new()),
        spec: Some(DeploymentSpec {
            // While an HPA scales the Deployment, leaving `replicas` out of
            // the applied object hands the field to the HPA.
            replicas: if spec.autoscaling.is_some() {
                None
            } else {
                Some(spec.replicas)
            },
            selector: LabelSelector {
                match_labels: Some(selector_labels(owner.name)),
                ..LabelSelector::default()
            },
            revision_history_limit: spec.rollout.as_ref().and_then(|r| r.revision_history_limit),
            progress_deadline_seconds: spec
                .rollout
                .as_ref()
                .and_then(|r| r.progress_deadline_seconds),
            strategy,
            template,
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The pod template the spec asks for, before the revision's own label and
/// variables: what a revision is made of.
pub(super) fn template(gs: &GoServer, owner: &Owner<'_>) -> Result<PodTemplateSpec> {
    pod_template(gs, owner)
}

fn pod_template(gs: &GoServer, owner: &Owner<'_>) -> Result<PodTemplateSpec> {
    let spec = &gs.spec;
    let config_data = spec
        .config
        .as_ref()
        .map(|c| c.data.clone())
        .unwrap_or_default();
    let config_json = serde_json::to_vec(&config_data).map_err(|source| Error::Serialize {
        kind: "ConfigMap data",
        source,
    })?;

    let mut pod_labels = spec.pod_labels.clone();
    pod_labels.extend(labels(owner.name));
    let mut annotations = spec.pod_annotations.clone();
    annotations.insert(
        CONFIG_HASH_ANNOTATION.to_owned(),
        short_hash(&config_json, 16),
    );

    let config_map = config_map_name(owner.name, &config_data);
    let (volumes, volume_mounts) = volumes(gs, &config_map);
    let topology_spread_constraints = spec
        .topology_spread_constraints
        .iter()
        .cloned()
        .map(|mut c| {
            if c.label_selector.is_none() {
                c.label_selector = Some(LabelSelector {
                    match_labels: Some(selector_labels(owner.name)),
                    ..LabelSelector::default()
                });
            }
            c
        })
        .collect();

    Ok(PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container(gs, &config_map, volume_mounts)],
            volumes: Some(volumes),
            service_account_name: spec.service_account_name.clone(),
            // The deprecated `serviceAccount` too, so that gantry owns it:
            // the apiserver copies one into the other whenever one is
            // missing, and an unowned copy would bring a removed
            // `serviceAccountName` back at once (found by the schema
            // fuzzer: the pods could never leave a ServiceAccount again).
            #[allow(deprecated)]
            service_account: spec.service_account_name.clone(),
            // The server does not talk to the Kubernetes API unless its
            // users give it an account of its own.
            automount_service_account_token: spec.service_account_name.is_none().then_some(false),
            image_pull_secrets: non_empty_vec(
                spec.image_pull_secrets
                    .iter()
                    .map(|name| LocalObjectReference { name: name.clone() })
                    .collect(),
            ),
            node_selector: non_empty(spec.node_selector.clone()),
            tolerations: non_empty_vec(spec.tolerations.clone()),
            affinity: spec.affinity.clone(),
            topology_spread_constraints: non_empty_vec(topology_spread_constraints),
            termination_grace_period_seconds: spec.termination_grace_period_seconds,
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            ..PodSpec::default()
        }),
    })
}

fn container(gs: &GoServer, config_map: &str, volume_mounts: Vec<VolumeMount>) -> Container {
    let spec = &gs.spec;
    let probes = spec.probes.clone().unwrap_or_default();

    let mut env: Vec<EnvVar> = spec
        .env
        .iter()
        .map(|e| EnvVar {
            name: e.name.clone(),
            value: Some(e.value.clone()),
            ..EnvVar::default()
        })
        .collect();
    for secret in &spec.secrets {
        env.extend(secret.env.iter().map(|e| EnvVar {
            name: e.name.clone(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.name.clone(),
                    key: e.key.clone(),
                    ..SecretKeySelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }));
    }

    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: non_empty_vec(spec.command.clone()),
        args: non_empty_vec(spec.args.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: spec.port,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        env: non_empty_vec(env),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: config_map.to_owned(),
                ..ConfigMapEnvSource::default()
            }),
            ..EnvFromSource::default()
        }]),
        resources: resources(gs),
        liveness_probe: Some(probe(
            probes.liveness.as_ref(),
            DEFAULT_LIVENESS_PATH,
            spec.port,
        )),
        readiness_probe: Some(probe(
            probes.readiness.as_ref(),
            DEFAULT_READINESS_PATH,
            spec.port,
        )),
        startup_probe: probes
            .startup
            .as_ref()
            .map(|p| probe(Some(p), DEFAULT_STARTUP_PATH, spec.port)),
        lifecycle: spec
            .pre_stop_delay_seconds
            .filter(|&s| s > 0)
            .map(|seconds| Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    sleep: Some(SleepAction {
                        seconds: i64::from(seconds),
                    }),
                    ..LifecycleHandler::default()
                }),
                ..Lifecycle::default()
            }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    }
}

/// The container's resources: the spec's, with the requests autoscaling
/// needs and the spec leaves out filled in (see
/// [`super::hpa::defaulted_requests`]).
fn resources(gs: &GoServer) -> Option<ResourceRequirements> {
    let defaulted = super::hpa::defaulted_requests(gs);
    if defaulted.is_empty() {
        return gs.spec.resources.clone();
    }
    let mut resources = gs.spec.resources.clone().unwrap_or_default();
    let requests = resources.requests.get_or_insert_with(BTreeMap::new);
    for (resource, quantity) in defaulted {
        requests.insert(resource.to_owned(), Quantity(quantity.to_owned()));
    }
    Some(resources)
}

fn probe(given: Option<&GsProbe>, default_path: &str, server_port: i32) -> Probe {
    let GsProbe {
        path,
        port,
        initial_delay_seconds,
        period_seconds,
        timeout_seconds,
        success_threshold,
        failure_threshold,
        termination_grace_period_seconds,
    } = given.cloned().unwrap_or_default();
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.unwrap_or_else(|| default_path.to_owned())),
            port: IntOrString::Int(port.unwrap_or(server_port)),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds,
        period_seconds,
        timeout_seconds,
        success_threshold,
        failure_threshold,
        termination_grace_period_seconds,
        ..Probe::default()
    }
}

fn volumes(gs: &GoServer, config_map: &str) -> (Vec<Volume>, Vec<VolumeMount>) {
    let spec = &gs.spec;
    let mut volumes = vec![Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".to_owned(),
        mount_path: TMP_MOUNT_PATH.to_owned(),
        ..VolumeMount::default()
    }];
    if let Some(path) = spec.config.as_ref().and_then(|c| c.mount_path.clone()) {
        volumes.push(Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map.to_owned(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "config".to_owned(),
            mount_path: path,
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    for (i, secret) in spec.secrets.iter().enumerate() {
        let Some(path) = secret.mount_path.clone() else {
            continue;
        };
        let name = format!("secret-{i}");
        volumes.push(Volume {
            name: name.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name,
            mount_path: path,
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    (volumes, mounts)
}

#[cfg(test)]
mod tests;
