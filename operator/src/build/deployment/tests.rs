//! The Deployment built from a spec, compared with literal JSON.

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::super::tests::{goserver, labels, owner_refs};
use super::*;

fn deployment(spec: Value) -> (Value, String) {
    let gs = goserver(spec);
    let revision = crate::build::spec_revision(&gs).unwrap();
    let deployment = build(&gs, &Owner::of(&gs).unwrap(), &revision);
    (serde_json::to_value(deployment).unwrap(), revision.name)
}

/// The pod labels of `revision`.
fn pod_labels(revision: &str) -> Value {
    let mut labels = labels();
    labels["gantry.dev/revision"] = json!(revision);
    labels
}

/// The variables every pod of `revision` gets.
fn revision_env(revision: &str, version: &str) -> Vec<Value> {
    vec![
        json!({"name": "GANTRY_REVISION", "value": revision}),
        json!({"name": "OTEL_SERVICE_NAME", "value": "hello"}),
        json!({"name": "OTEL_RESOURCE_ATTRIBUTES", "value": format!("service.version={version},gantry.revision={revision}")}),
    ]
}

fn config_map(data: &[(&str, &str)]) -> String {
    let data = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    config_map_name("hello", &data)
}

fn restricted_container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
    })
}

#[test]
fn minimal_deployment() {
    let (deployment, revision) = deployment(json!({"image": "hello:1"}));
    assert_eq!(
        deployment,
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "hello",
                "namespace": "web",
                "labels": labels(),
                "ownerReferences": owner_refs(),
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app.kubernetes.io/instance": "hello", "app.kubernetes.io/name": "hello"}},
                "template": {
                    "metadata": {
                        "labels": pod_labels(&revision),
                        "annotations": {"gantry.dev/config-hash": short_hash(b"{}", 16)},
                    },
                    "spec": {
                        "automountServiceAccountToken": false,
                        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{
                            "name": "server",
                            "image": "hello:1",
                            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                            "env": revision_env(&revision, "1"),
                            "envFrom": [{"configMapRef": {"name": config_map(&[])}}],
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
                            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
                            "securityContext": restricted_container_security(),
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }],
                        "volumes": [{"name": "tmp", "emptyDir": {}}],
                    },
                },
            },
        })
    );
    assert!(revision.starts_with("hello-"), "{revision}");
    assert_eq!(revision.len(), "hello-".len() + 10);
}

#[test]
#[allow(clippy::too_many_lines)] // one literal of the whole expected object
fn full_deployment() {
    let (deployment, revision) = deployment(json!({
        "image": "registry.example.com/hello:1.4.2",
        "imagePullPolicy": "IfNotPresent",
        "imagePullSecrets": ["regcred"],
        "command": ["/hello"],
        "args": ["--verbose"],
        "replicas": 2,
        "port": 9000,
        "env": [{"name": "GIN_MODE", "value": "release"}],
        "config": {"data": {"LOG_LEVEL": "info"}, "mountPath": "/etc/hello"},
        "secrets": [
            {"name": "db-secret", "env": [{"name": "DB_PASSWORD", "key": "password"}], "mountPath": "/var/run/secrets/db"},
            {"name": "api", "env": [{"name": "API_TOKENS", "key": "tokens"}]},
        ],
        "probes": {
            "liveness": {"path": "/live", "periodSeconds": 10, "failureThreshold": 3},
            "readiness": {"initialDelaySeconds": 1, "timeoutSeconds": 2, "successThreshold": 2},
            "startup": {"failureThreshold": 30, "port": 9001, "terminationGracePeriodSeconds": 5},
        },
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "rollout": {"maxSurge": "25%", "maxUnavailable": 0, "revisionHistoryLimit": 5},
        "serviceAccountName": "hello",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}
        ]}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}],
        "podAnnotations": {"prometheus.io/scrape": "true"},
        "podLabels": {"team": "web", "app.kubernetes.io/name": "ignored"},
        "terminationGracePeriodSeconds": 40,
        "preStopDelaySeconds": 5,
    }));
    let mut pod_labels = pod_labels(&revision);
    pod_labels["team"] = json!("web");
    let mut env = vec![
        json!({"name": "GIN_MODE", "value": "release"}),
        json!({"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-secret", "key": "password"}}}),
        json!({"name": "API_TOKENS", "valueFrom": {"secretKeyRef": {"name": "api", "key": "tokens"}}}),
    ];
    env.extend(revision_env(&revision, "1.4.2"));
    let selector = json!({"matchLabels": {"app.kubernetes.io/instance": "hello", "app.kubernetes.io/name": "hello"}});
    assert_eq!(
        deployment["spec"],
        json!({
            "replicas": 2,
            "revisionHistoryLimit": 5,
            "selector": selector,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        "gantry.dev/config-hash": short_hash(br#"{"LOG_LEVEL":"info"}"#, 16),
                        "prometheus.io/scrape": "true",
                    },
                },
                "spec": {
                    "serviceAccountName": "hello",
                    "serviceAccount": "hello",
                    "imagePullSecrets": [{"name": "regcred"}],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}],
                    "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 1, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}
                    ]}},
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "topology.kubernetes.io/zone",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": selector,
                    }],
                    "terminationGracePeriodSeconds": 40,
                    "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "server",
                        "image": "registry.example.com/hello:1.4.2",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/hello"],
                        "args": ["--verbose"],
                        "ports": [{"name": "http", "containerPort": 9000, "protocol": "TCP"}],
                        "env": env,
                        "envFrom": [{"configMapRef": {"name": config_map(&[("LOG_LEVEL", "info")])}}],
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                        "livenessProbe": {"httpGet": {"path": "/live", "port": 9000}, "periodSeconds": 10, "failureThreshold": 3},
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 9000}, "initialDelaySeconds": 1, "timeoutSeconds": 2, "successThreshold": 2},
                        "startupProbe": {"httpGet": {"path": "/healthz", "port": 9001}, "failureThreshold": 30, "terminationGracePeriodSeconds": 5},
                        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
                        "securityContext": restricted_container_security(),
                        "volumeMounts": [
                            {"name": "tmp", "mountPath": "/tmp"},
                            {"name": "config", "mountPath": "/etc/hello", "readOnly": true},
                            {"name": "secret-0", "mountPath": "/var/run/secrets/db", "readOnly": true},
                        ],
                    }],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "config", "configMap": {"name": config_map(&[("LOG_LEVEL", "info")])}},
                        {"name": "secret-0", "secret": {"secretName": "db-secret"}},
                    ],
                },
            },
        })
    );
}

#[test]
fn autoscaling_leaves_replicas_unset() {
    let (deployment, _) =
        deployment(json!({"image": "hello:1", "replicas": 4, "autoscaling": {"maxReplicas": 5}}));
    assert_eq!(deployment["spec"].get("replicas"), None);
}

#[test]
fn autoscaling_without_a_cpu_request_gets_the_default_one() {
    let (scaled, _) = deployment(json!({
        "image": "hello:1",
        "resources": {"limits": {"memory": "256Mi"}},
        "autoscaling": {"maxReplicas": 5},
    }));
    assert_eq!(
        scaled["spec"]["template"]["spec"]["containers"][0]["resources"],
        json!({"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}})
    );
    // Without autoscaling the spec's resources stay as they are.
    let (plain, _) = deployment(json!({"image": "hello:1"}));
    assert_eq!(
        plain["spec"]["template"]["spec"]["containers"][0].get("resources"),
        None
    );
}

#[test]
fn config_change_changes_hash_and_revision() {
    let (a, rev_a) = deployment(json!({"image": "hello:1", "config": {"data": {"A": "1"}}}));
    let (b, rev_b) = deployment(json!({"image": "hello:1", "config": {"data": {"A": "2"}}}));
    let hash = |d: &Value| {
        d["spec"]["template"]["metadata"]["annotations"]["gantry.dev/config-hash"].clone()
    };
    assert_ne!(hash(&a), hash(&b));
    assert_ne!(rev_a, rev_b);
    let (_, rev_a_again) = deployment(json!({"image": "hello:1", "config": {"data": {"A": "1"}}}));
    assert_eq!(rev_a, rev_a_again);
}

#[test]
fn replicas_do_not_change_the_revision() {
    let (_, one) = deployment(json!({"image": "hello:1", "replicas": 1}));
    let (_, three) = deployment(json!({"image": "hello:1", "replicas": 3}));
    assert_eq!(one, three);
}
