//! The GoServer schema rejects bad input at admission, and the rejection
//! names the offending field. Each case starts from a valid spec (checked
//! to be accepted) and breaks one thing.

mod operator_support;

use gantry_e2e::TestNamespace;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};

fn valid_spec() -> Value {
    json!({
        "image": "registry.example.com/hello:1",
        "env": [{"name": "GIN_MODE", "value": "release"}],
        "secrets": [{"name": "db", "env": [{"name": "DB_PASSWORD", "key": "password"}]}],
        "probes": {"liveness": {"path": "/healthz", "periodSeconds": 10}},
        "ingress": {"host": "hello.example.com", "path": "/", "tls": {"secretName": "hello-tls"}},
        "autoscaling": {"minReplicas": 2, "maxReplicas": 5},
    })
}

/// A change to the valid spec, the field the rejection must name, and a
/// fragment of the message.
struct Case {
    what: &'static str,
    patch: fn(&mut Value),
    field: &'static str,
}

#[allow(clippy::too_many_lines)] // one line per case
fn cases() -> Vec<Case> {
    vec![
        // Found by the schema fuzzer (operator_fuzz.rs): each was admitted,
        // and the Deployment built from it was refused by the apiserver.
        Case {
            what: "a pod label value with a space",
            patch: |s| s["podLabels"] = json!({"team": "web team"}),
            field: "spec.podLabels",
        },
        Case {
            what: "a node selector key that is not a label key",
            patch: |s| s["nodeSelector"] = json!({"bad key!": "linux"}),
            field: "spec.nodeSelector",
        },
        Case {
            what: "a pod annotation key that is not a qualified name",
            patch: |s| s["podAnnotations"] = json!({"bad key!": "x"}),
            field: "spec.podAnnotations",
        },
        Case {
            what: "a config key a ConfigMap refuses",
            patch: |s| s["config"] = json!({"data": {"bad key!": "x"}}),
            field: "spec.config.data",
        },
        Case {
            what: "a memory request above its limit",
            patch: |s| {
                s["resources"] =
                    json!({"requests": {"memory": "256Mi"}, "limits": {"memory": "128Mi"}});
            },
            field: "spec.resources.requests",
        },
        Case {
            what: "a resource that is not a quantity",
            patch: |s| s["resources"] = json!({"requests": {"cpu": "lots"}}),
            field: "spec.resources.requests",
        },
        Case {
            what: "a liveness probe with successThreshold 2",
            patch: |s| s["probes"]["liveness"]["successThreshold"] = json!(2),
            field: "spec.probes.liveness.successThreshold",
        },
        Case {
            what: "a preStop delay as long as the grace period",
            patch: |s| {
                s["preStopDelaySeconds"] = json!(30);
                s["terminationGracePeriodSeconds"] = json!(30);
            },
            field: "spec.preStopDelaySeconds",
        },
        Case {
            what: "a preStop delay past the default grace period",
            patch: |s| s["preStopDelaySeconds"] = json!(45),
            field: "spec.preStopDelaySeconds",
        },
        Case {
            what: "minReplicas > maxReplicas",
            patch: |s| s["autoscaling"] = json!({"minReplicas": 6, "maxReplicas": 5}),
            field: "spec.autoscaling.minReplicas",
        },
        Case {
            what: "negative replicas",
            patch: |s| s["replicas"] = json!(-1),
            field: "spec.replicas",
        },
        Case {
            what: "port 0",
            patch: |s| s["port"] = json!(0),
            field: "spec.port",
        },
        Case {
            what: "port above 65535",
            patch: |s| s["port"] = json!(70000),
            field: "spec.port",
        },
        Case {
            what: "service port above 65535",
            patch: |s| s["service"] = json!({"port": 65536}),
            field: "spec.service.port",
        },
        Case {
            what: "empty image",
            patch: |s| s["image"] = json!(""),
            field: "spec.image",
        },
        Case {
            what: "missing image",
            patch: |s| {
                s.as_object_mut().unwrap().remove("image");
            },
            field: "spec.image",
        },
        Case {
            what: "over-long image",
            patch: |s| s["image"] = json!("r/".repeat(300)),
            field: "spec.image",
        },
        Case {
            what: "host that is not a DNS name",
            patch: |s| s["ingress"]["host"] = json!("Hello_World.example.com"),
            field: "spec.ingress.host",
        },
        Case {
            what: "tls without a host",
            patch: |s| {
                s["ingress"].as_object_mut().unwrap().remove("host");
            },
            field: "spec.ingress.tls",
        },
        Case {
            what: "tls with neither secretName nor issuer",
            patch: |s| s["ingress"]["tls"] = json!({}),
            field: "spec.ingress.tls",
        },
        Case {
            what: "ingress path without leading slash",
            patch: |s| s["ingress"]["path"] = json!("api"),
            field: "spec.ingress.path",
        },
        Case {
            what: "probe path without leading slash",
            patch: |s| s["probes"]["liveness"]["path"] = json!("healthz"),
            field: "spec.probes.liveness.path",
        },
        Case {
            what: "invalid env name",
            patch: |s| s["env"][0]["name"] = json!("1-BAD NAME"),
            field: "spec.env[0].name",
        },
        Case {
            what: "duplicate env name",
            patch: |s| s["env"] = json!([{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
            field: "spec.env[1]",
        },
        Case {
            what: "env name set in env and in secrets",
            patch: |s| s["env"][0]["name"] = json!("DB_PASSWORD"),
            field: "spec.secrets",
        },
        Case {
            what: "invalid secret env name",
            patch: |s| s["secrets"][0]["env"][0]["name"] = json!("9LIVES"),
            field: "spec.secrets[0].env[0].name",
        },
        Case {
            what: "secret env without key",
            patch: |s| {
                s["secrets"][0]["env"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("key");
            },
            field: "spec.secrets[0].env[0].key",
        },
        Case {
            what: "negative probe period",
            patch: |s| s["probes"]["liveness"]["periodSeconds"] = json!(-5),
            field: "spec.probes.liveness.periodSeconds",
        },
        Case {
            what: "negative initial delay",
            patch: |s| s["probes"]["readiness"] = json!({"initialDelaySeconds": -1}),
            field: "spec.probes.readiness.initialDelaySeconds",
        },
        Case {
            what: "negative grace period",
            patch: |s| s["terminationGracePeriodSeconds"] = json!(-1),
            field: "spec.terminationGracePeriodSeconds",
        },
        Case {
            what: "negative preStop delay",
            patch: |s| s["preStopDelaySeconds"] = json!(-3),
            field: "spec.preStopDelaySeconds",
        },
        Case {
            what: "too many env entries",
            patch: |s| {
                s["env"] = (0..129)
                    .map(|i| json!({"name": format!("V{i}"), "value": "x"}))
                    .collect();
            },
            field: "spec.env",
        },
        Case {
            what: "too many secrets",
            patch: |s| {
                s["secrets"] = (0..17).map(|i| json!({"name": format!("s{i}")})).collect();
            },
            field: "spec.secrets",
        },
        Case {
            what: "over-long env value",
            patch: |s| s["env"][0]["value"] = json!("x".repeat(40_000)),
            field: "spec.env[0].value",
        },
        Case {
            what: "over-long pod annotation value",
            patch: |s| s["podAnnotations"] = json!({"note": "x".repeat(5000)}),
            field: "spec.podAnnotations.note",
        },
        Case {
            what: "unknown service type",
            patch: |s| s["service"] = json!({"type": "ExternalName"}),
            field: "spec.service.type",
        },
        Case {
            what: "a metric without bounds",
            patch: |s| {
                s["rollout"] = json!({"verification": {"metrics": [{"name": "m", "query": "up"}]}});
            },
            field: "spec.rollout.verification.metrics[0]",
        },
        Case {
            what: "a metric with min above max",
            patch: |s| {
                s["rollout"] = json!({"verification": {"metrics": [{"name": "m", "query": "up", "min": 2, "max": 1}]}});
            },
            field: "spec.rollout.verification.metrics[0].min",
        },
        Case {
            what: "a verification without metrics",
            patch: |s| s["rollout"] = json!({"verification": {"metrics": []}}),
            field: "spec.rollout.verification.metrics",
        },
        Case {
            what: "a window that is no duration",
            patch: |s| {
                s["rollout"] = json!({"verification": {"window": "5 minutes", "metrics": [{"name": "m", "query": "up", "max": 1}]}});
            },
            field: "spec.rollout.verification.window",
        },
        Case {
            what: "an unknown noData verdict",
            patch: |s| {
                s["rollout"] = json!({"verification": {"metrics": [{"name": "m", "query": "up", "max": 1, "noData": "Ignore"}]}});
            },
            field: "spec.rollout.verification.metrics[0].noData",
        },
        Case {
            what: "postVerification with the Canary strategy",
            patch: |s| {
                s["route"] = json!({"parentRefs": [{"name": "public"}]});
                s["rollout"] = json!({
                    "strategy": "Canary", "steps": [{"weight": 10, "pause": "1m"}],
                    "verification": {"postVerification": "5m", "metrics": [{"name": "m", "query": "up", "max": 1}]},
                });
            },
            field: "spec.rollout.verification.postVerification",
        },
        Case {
            what: "a receiver named like the webhook field",
            patch: |s| {
                s["rollout"] = json!({"verification": {
                    "webhook": {"url": "http://ci.example.com/a"},
                    "receivers": [{"name": "webhook", "url": "http://ci.example.com/b"}],
                    "metrics": [{"name": "m", "query": "up", "max": 1}],
                }});
            },
            field: "spec.rollout.verification.receivers",
        },
        Case {
            what: "an unknown deadline action",
            patch: |s| {
                s["rollout"] = json!({"verification": {"onDeadline": "Shrug", "metrics": [{"name": "m", "query": "up", "max": 1}]}});
            },
            field: "spec.rollout.verification.onDeadline",
        },
        Case {
            what: "a compared canary step above 50 percent",
            patch: |s| {
                s["route"] = json!({"parentRefs": [{"name": "public"}]});
                s["rollout"] = json!({
                    "strategy": "Canary", "steps": [{"weight": 60, "pause": "1m"}],
                    "verification": {"metrics": [{"name": "m", "query": "up{track=\"${track}\"}", "compare": {}}]},
                });
            },
            field: "spec.rollout.steps",
        },
        Case {
            what: "a compared canary metric that does not select its track",
            patch: |s| {
                s["route"] = json!({"parentRefs": [{"name": "public"}]});
                s["rollout"] = json!({
                    "strategy": "Canary", "steps": [{"weight": 10, "pause": "1m"}],
                    "verification": {"metrics": [{"name": "m", "query": "up", "compare": {}}]},
                });
            },
            field: "spec.rollout.verification.metrics",
        },
        Case {
            what: "an allowed change that is no share and no number",
            patch: |s| {
                s["rollout"] = json!({"verification": {"metrics": [{"name": "m", "query": "up", "compare": {"allowed": "+10 percent"}}]}});
            },
            field: "spec.rollout.verification.metrics[0].compare.allowed",
        },
        Case {
            what: "an unknown bad direction",
            patch: |s| {
                s["rollout"] = json!({"verification": {"metrics": [{"name": "m", "query": "up", "compare": {"bad": "Up"}}]}});
            },
            field: "spec.rollout.verification.metrics[0].compare.bad",
        },
        Case {
            what: "a marginal score above the pass score",
            patch: |s| {
                s["rollout"] = json!({"verification": {
                    "comparison": {"pass": 50, "marginal": 80},
                    "metrics": [{"name": "m", "query": "up", "compare": {}}],
                }});
            },
            field: "spec.rollout.verification.comparison.marginal",
        },
        Case {
            what: "a confidence of 1",
            patch: |s| {
                s["rollout"] = json!({"verification": {
                    "comparison": {"confidence": 1.0},
                    "metrics": [{"name": "m", "query": "up", "compare": {}}],
                }});
            },
            field: "spec.rollout.verification.comparison.confidence",
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_goservers_are_rejected_naming_the_field() {
    let ns = TestNamespace::new("admission").await;
    operator_support::install_crd(&ns.client).await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gantry.dev", "v1alpha1", "GoServer"),
        "goservers",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
    let object = |name: &str, spec: Value| {
        let mut obj = DynamicObject::new(name, &resource);
        obj.data = json!({"spec": spec});
        obj
    };

    // The base case is valid, so each rejection below is caused by its change.
    api.create(&PostParams::default(), &object("valid", valid_spec()))
        .await
        .expect("the valid spec is accepted");

    let mut failures = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        let mut spec = valid_spec();
        (case.patch)(&mut spec);
        match api
            .create(&PostParams::default(), &object(&format!("bad-{i}"), spec))
            .await
        {
            Ok(_) => failures.push(format!("{}: accepted", case.what)),
            Err(kube::Error::Api(status)) => {
                if status.code != 422 || !status.message.contains(case.field) {
                    failures.push(format!(
                        "{}: expected 422 naming {}, got {}: {}",
                        case.what, case.field, status.code, status.message
                    ));
                }
            }
            Err(err) => failures.push(format!("{}: unexpected error {err}", case.what)),
        }
    }
    // Revision names (`<name>-<10 hex>`) must fit a label value.
    match api
        .create(
            &PostParams::default(),
            &object(&"n".repeat(53), valid_spec()),
        )
        .await
    {
        Ok(_) => failures.push("a 53-character name: accepted".to_owned()),
        Err(kube::Error::Api(status))
            if status.code == 422 && status.message.contains("metadata.name") => {}
        Err(err) => failures.push(format!("a 53-character name: {err}")),
    }
    api.create(
        &PostParams::default(),
        &object(&"n".repeat(52), valid_spec()),
    )
    .await
    .expect("a 52-character name is accepted");
    assert!(
        failures.is_empty(),
        "{} case(s) not rejected as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every GoServer in examples/ is admitted as written, so the examples the
/// docs point at cannot drift from the schema.
#[tokio::test(flavor = "multi_thread")]
async fn every_example_is_admitted() {
    let ns = TestNamespace::new("examples").await;
    operator_support::install_crd(&ns.client).await;
    let api: Api<gantry_operator::crd::GoServer> = ns.api();
    let mut seen = 0;
    let dir = gantry_e2e::operator::root().join("examples");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = <Value as serde::Deserialize>::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if value["kind"] != "GoServer" {
                continue;
            }
            let gs: gantry_operator::crd::GoServer =
                serde_json::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // A dry run is admitted exactly like a create (schema, CEL) but
            // stores nothing, so two examples may share a name.
            let dry_run = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            api.create(&dry_run, &gs)
                .await
                .unwrap_or_else(|e| panic!("{} was refused: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 3, "only {seen} examples found in {}", dir.display());
}
