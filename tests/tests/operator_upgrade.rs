//! Upgrading the operator from 0.1: the children the released operator
//! wrote are taken over with one rolling update of the pods and no moment
//! with fewer available replicas than the Deployment's strategy allows.
//!
//! `tests/expected/upgrade-0.1.json` holds what gantry-operator 0.1.0
//! (commit b0c1da5) wrote for `examples/full.yaml`: for every child, each
//! server-side apply it made, as the fields its field manager owns (the
//! stored object projected on its `managedFields`), and the same for the
//! `GoServer`'s status. The test replays those applies under the same
//! managers, so the cluster holds what 0.1 left, ownership included, and
//! then starts the current operator. To record it again, build the older
//! operator and run
//! `GANTRY_UPGRADE_FROM=<its binary> cargo test -p gantry-e2e --test operator_upgrade -- --ignored record`
//! against a cluster.

mod operator_support;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use gantry_e2e::operator::{OperatorProcess, root};
use gantry_e2e::{TestNamespace, wait_for, wait_for_deletion, wait_until};
use gantry_operator::crd::GoServer;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use operator_support::{DEADLINE, Operator, install_crd, wait_ready};
use serde_json::{Value, json};

const FIXTURE: &str = "tests/expected/upgrade-0.1.json";
const NAME: &str = "hello-full";

/// The kinds 0.1 wrote, as `(apiVersion, kind, plural)`.
const CHILD_KINDS: [(&str, &str, &str); 5] = [
    ("apps/v1", "Deployment", "deployments"),
    ("v1", "Service", "services"),
    ("v1", "ConfigMap", "configmaps"),
    ("networking.k8s.io/v1", "Ingress", "ingresses"),
    (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    ),
];

fn api_resource(api_version: &str, kind: &str, plural: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// The part of `value` that `fields` (a `managedFields` entry's
/// `fieldsV1`) names: what that manager applied.
fn project(value: &Value, fields: &Value) -> Value {
    let Some(fields) = fields.as_object() else {
        return value.clone();
    };
    // `{}` or only `.`: the manager owns the value whole.
    if fields.keys().all(|k| k == ".") {
        return value.clone();
    }
    match value {
        Value::Object(object) => Value::Object(
            fields
                .iter()
                .filter_map(|(key, sub)| {
                    let name = key.strip_prefix("f:")?;
                    Some((name.to_owned(), project(object.get(name)?, sub)))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| {
                    fields.iter().find_map(|(key, sub)| {
                        let owned = if let Some(k) = key.strip_prefix("k:") {
                            let k: Value = serde_json::from_str(k).ok()?;
                            k.as_object()?.iter().all(|(f, v)| item.get(f) == Some(v))
                        } else if let Some(v) = key.strip_prefix("v:") {
                            serde_json::from_str::<Value>(v).ok().as_ref() == Some(item)
                        } else if let Some(i) = key.strip_prefix("i:") {
                            i.parse::<usize>().ok() == Some(index)
                        } else {
                            false
                        };
                        owned.then(|| project(item, sub))
                    })
                })
                .collect(),
        ),
        scalar => scalar.clone(),
    }
}

#[test]
fn managed_fields_project_what_a_manager_applied() {
    let object = json!({
        "metadata": {"name": "a", "labels": {"x": "1", "y": "2"}},
        "spec": {
            "replicas": 2,
            "containers": [{"name": "server", "image": "i", "args": ["a", "b"]}, {"name": "other", "image": "j"}],
            "finalizers": ["one", "two"],
        },
    });
    let fields = json!({
        "f:metadata": {"f:labels": {"f:x": {}}},
        "f:spec": {
            "f:containers": {"k:{\"name\":\"server\"}": {".": {}, "f:name": {}, "f:args": {}}},
            "f:finalizers": {"v:\"two\"": {}},
        },
    });
    assert_eq!(
        project(&object, &fields),
        json!({
            "metadata": {"labels": {"x": "1"}},
            "spec": {"containers": [{"name": "server", "args": ["a", "b"]}], "finalizers": ["two"]},
        })
    );
}

/// Every server-side apply in `object`'s `managedFields`, as
/// `{manager, subresource, body}`.
fn applies(object: &Value) -> Vec<Value> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["operation"] == "Apply")
        .map(|entry| {
            let mut body = project(object, &entry["fieldsV1"]);
            body["apiVersion"] = object["apiVersion"].clone();
            body["kind"] = object["kind"].clone();
            body["metadata"]["name"] = object["metadata"]["name"].clone();
            json!({
                "manager": entry["manager"],
                "subresource": entry.get("subresource").cloned().unwrap_or(Value::Null),
                "body": body,
            })
        })
        .collect()
}

/// Records the fixture with an older operator binary (see the module
/// documentation).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "records tests/expected/upgrade-0.1.json; needs GANTRY_UPGRADE_FROM"]
async fn record() {
    let binary = std::env::var("GANTRY_UPGRADE_FROM")
        .expect("GANTRY_UPGRADE_FROM: an older operator binary");
    let ns = TestNamespace::new("upgrade-record").await;
    install_crd(&ns.client).await;
    let args = ["--namespace", ns.name.as_str()];
    let _old = OperatorProcess::start_binary(binary.as_ref(), "0.1", &args, None, &[]);
    operator_support::kubectl_apply(&ns, "examples/full.yaml");
    let gs = wait_ready(&ns, NAME).await;
    let mut objects = Vec::new();
    for (api_version, kind, plural) in CHILD_KINDS {
        let api: Api<DynamicObject> = Api::namespaced_with(
            ns.client.clone(),
            &ns.name,
            &api_resource(api_version, kind, plural),
        );
        let list = api
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=gantry"))
            .await
            .unwrap();
        for item in list.items {
            let mut value = serde_json::to_value(&item).unwrap();
            value["apiVersion"] = json!(api_version);
            value["kind"] = json!(kind);
            objects.extend(applies(&value));
        }
    }
    let mut spec = serde_json::to_value(&gs).unwrap();
    let status = applies(&spec);
    spec.as_object_mut().unwrap().remove("status");
    let fixture = json!({
        "recordedFrom": "gantry-operator 0.1.0 (commit b0c1da5), examples/full.yaml",
        "goserver": {"apiVersion": spec["apiVersion"], "kind": "GoServer", "metadata": {"name": NAME}, "spec": spec["spec"]},
        "status": status.into_iter().filter(|a| a["subresource"] == "status").collect::<Vec<_>>(),
        "children": objects,
    });
    std::fs::write(
        root().join(FIXTURE),
        serde_json::to_string_pretty(&fixture).unwrap() + "\n",
    )
    .unwrap();
}

/// The most replicas a Deployment's strategy lets be unavailable.
fn max_unavailable(deployment: &Deployment) -> i32 {
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let value = deployment
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::String("25%".to_owned()));
    match value {
        IntOrString::Int(n) => n,
        IntOrString::String(percent) => {
            let percent: i32 = percent.trim_end_matches('%').parse().unwrap();
            // Rounded down, as the Deployment controller does.
            replicas * percent / 100
        }
    }
}

async fn replica_sets(ns: &TestNamespace) -> BTreeSet<String> {
    ns.api::<ReplicaSet>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| o.kind == "Deployment" && o.name == NAME)
        })
        .map(ResourceExt::name_any)
        .collect()
}

/// 0.1's children, taken over: one new ReplicaSet, never fewer available
/// replicas than the strategy allows, the Service kept as it was, the old
/// ConfigMap deleted once the new revision is out, and nothing rolled again.
#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // one upgrade, start to end
async fn an_upgrade_from_0_1_rolls_once_without_an_outage() {
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(FIXTURE)).unwrap()).unwrap();
    let ns = TestNamespace::new("upgrade").await;
    install_crd(&ns.client).await;
    ns.api::<Secret>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "hello-db"}, "stringData": {"password": "change-me"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();

    // What 0.1 left: the GoServer, its status and its children, each
    // written by the manager that wrote it then, owned by the GoServer.
    let api: Api<GoServer> = ns.api();
    let gs = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(fixture["goserver"].clone()).unwrap(),
        )
        .await
        .unwrap();
    let uid = gs.uid().unwrap();
    for apply in fixture["status"].as_array().unwrap() {
        api.patch_status(
            NAME,
            &PatchParams::apply(apply["manager"].as_str().unwrap()).force(),
            &Patch::Apply(&apply["body"]),
        )
        .await
        .unwrap();
    }
    for apply in fixture["children"].as_array().unwrap() {
        let mut body = apply["body"].clone();
        for owner in body["metadata"]["ownerReferences"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            owner["uid"] = json!(uid);
        }
        let api_version = body["apiVersion"].as_str().unwrap().to_owned();
        let kind = body["kind"].as_str().unwrap().to_owned();
        let plural = CHILD_KINDS.iter().find(|k| k.1 == kind).unwrap().2;
        let children: Api<DynamicObject> = Api::namespaced_with(
            ns.client.clone(),
            &ns.name,
            &api_resource(&api_version, &kind, plural),
        );
        let name = body["metadata"]["name"].as_str().unwrap().to_owned();
        let params = PatchParams::apply(apply["manager"].as_str().unwrap()).force();
        let patch = Patch::Apply(&body);
        if apply["subresource"] == "status" {
            children.patch_status(&name, &params, &patch).await.unwrap();
        } else {
            children.patch(&name, &params, &patch).await.unwrap();
        }
    }
    let deployments: Api<Deployment> = ns.api();
    let before = wait_for(&deployments, NAME, "0.1's pods available", DEADLINE, |d| {
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        d.status.as_ref().and_then(|s| s.available_replicas) == Some(want)
    })
    .await
    .unwrap();
    let old_sets = replica_sets(&ns).await;
    assert_eq!(old_sets.len(), 1, "{old_sets:?}");
    let old_service: Service = ns.api().get(NAME).await.unwrap();
    let old_config: ConfigMap = ns.api().get(&format!("{NAME}-config")).await.unwrap();

    // Every version of the Deployment from here on, for the availability
    // check: watched, so no state between two polls is missed.
    let watched = deployments.clone();
    let field = format!("metadata.name={NAME}");
    let versions = tokio::spawn(async move {
        watcher(watched, watcher::Config::default().fields(&field))
            .applied_objects()
            .take_while(|d| {
                let done = d.as_ref().is_ok_and(|d| {
                    d.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key("gantry.dev/upgrade-done"))
                });
                std::future::ready(!done)
            })
            .try_collect::<Vec<Deployment>>()
            .await
    });

    let operator = Operator::start(&ns).await;
    let gs = wait_ready(&ns, NAME).await;
    let status = gs.status.clone().unwrap();
    let revision = status.revision.clone().unwrap();
    assert!(revision.starts_with("hello-full-"), "{status:?}");
    wait_until("one new ReplicaSet, rolled out", DEADLINE, || {
        let ns = &ns;
        let deployments = &deployments;
        async move {
            let sets = replica_sets(ns).await;
            let d = deployments.get(NAME).await.map_err(|e| e.to_string())?;
            let s = d.status.clone().unwrap_or_default();
            let done = s.observed_generation == d.metadata.generation
                && s.updated_replicas == d.spec.as_ref().and_then(|s| s.replicas)
                && s.available_replicas == s.updated_replicas
                && s.replicas == s.updated_replicas;
            Ok((done && sets.len() == 2).then_some(()))
        }
    })
    .await
    .unwrap();

    // The old ConfigMap goes once no pod needs it; the new one has its data.
    wait_for_deletion(&ns.api::<ConfigMap>(), &format!("{NAME}-config"), DEADLINE)
        .await
        .unwrap();
    let config = operator_support::config_map_name(&ns, NAME).await;
    let new_config: ConfigMap = ns.api().get(&config).await.unwrap();
    assert_eq!(new_config.data, old_config.data);

    // The Service was updated in place: same address, same selector.
    let service: Service = ns.api().get(NAME).await.unwrap();
    let spec = |s: &Service| {
        let spec = s.spec.clone().unwrap();
        (spec.cluster_ip, spec.selector)
    };
    assert_eq!(spec(&service), spec(&old_service));

    // No state of the roll had fewer available replicas than allowed.
    let floor =
        before.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) - max_unavailable(&before);
    deployments
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"gantry.dev/upgrade-done": "true"}}}),
            ),
        )
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(60), versions)
        .await
        .expect("the watch ends at the marker")
        .unwrap()
        .unwrap();
    let available: Vec<i32> = seen
        .iter()
        .map(|d| {
            d.status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0)
        })
        .collect();
    println!("available replicas through the roll (floor {floor}): {available:?}");
    assert!(
        seen.len() > 1,
        "the watch saw the roll: {} versions",
        seen.len()
    );
    for d in &seen {
        let available = d
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0);
        assert!(
            available >= floor,
            "{available} available replicas at resourceVersion {:?}, fewer than {floor}",
            d.metadata.resource_version
        );
    }

    // Once is all: another look at the GoServer rolls nothing.
    let generation = deployments.get(NAME).await.unwrap().metadata.generation;
    let reconciles = operator.count(NAME, "reconcile finished");
    api.patch(
        NAME,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"example.com/touched": "1"}}})),
    )
    .await
    .unwrap();
    wait_until("a reconcile after the touch", DEADLINE, || {
        let seen = operator.count(NAME, "reconcile finished");
        async move { Ok::<_, String>((seen > reconciles).then_some(())) }
    })
    .await
    .unwrap();
    assert_eq!(
        deployments.get(NAME).await.unwrap().metadata.generation,
        generation
    );
    assert_eq!(replica_sets(&ns).await.len(), 2);
    drop(operator);
}
