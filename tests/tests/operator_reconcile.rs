//! The operator as a real process against the real control plane: the
//! examples reach Ready with every child in shape, spec changes roll or
//! prune children, hand edits are undone, and an unchanged GoServer costs no
//! writes.

mod operator_support;

use std::collections::BTreeMap;

use gantry_e2e::{TestNamespace, wait_for, wait_for_deletion, wait_until};
use gantry_operator::crd::GoServer;
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use operator_support::{
    DEADLINE, Operator, config_map_name, events_about, has_condition, kubectl_apply, wait_ready,
};
use serde_json::{Value, json};

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

fn controlled_by(meta: &impl Resource, gs: &GoServer) -> bool {
    meta.meta().owner_references.iter().flatten().any(|r| {
        r.controller == Some(true)
            && r.kind == "GoServer"
            && Some(&r.uid) == gs.metadata.uid.as_ref()
    })
}

async fn merge_patch(api: &Api<GoServer>, name: &str, patch: Value) {
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // one walk over every child of the example
async fn full_example_reaches_ready_with_every_child() {
    let ns = TestNamespace::new("op-full").await;
    let operator = Operator::start(&ns).await;
    kubectl_apply(&ns, "examples/full.yaml");
    let gs = wait_ready(&ns, "hello-full").await;
    let status = gs.status.clone().unwrap();
    assert_eq!(status.url.as_deref(), Some("https://hello.example.com/"));
    assert!(
        status
            .revision
            .as_deref()
            .is_some_and(|r| r.starts_with("hello-full-")),
        "{status:?}"
    );
    for type_ in ["Available", "Degraded", "Progressing"] {
        assert!(
            status.conditions.iter().any(|c| c.type_ == type_),
            "missing condition {type_}"
        );
    }
    assert!(has_condition(&gs, "Degraded", "False"));

    let deployment = ns.api::<Deployment>().get("hello-full").await.unwrap();
    assert!(controlled_by(&deployment, &gs));
    let labels = deployment.labels();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("gantry")
    );
    assert_eq!(
        labels.get("app.kubernetes.io/instance").map(String::as_str),
        Some("hello-full")
    );
    let managers: Vec<_> = deployment
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.iter().any(|m| m == "gantry"),
        "field managers: {managers:?}"
    );
    let template = to_json(&deployment.spec.as_ref().unwrap().template);
    assert!(template["metadata"]["annotations"]["gantry.dev/config-hash"].is_string());
    assert_eq!(template["metadata"]["labels"]["team"], "web");
    let pod = &template["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"],
        "registry.example.com/gantry-server:0.1.0"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["startupProbe"]["failureThreshold"], 30);
    assert_eq!(container["lifecycle"]["preStop"]["sleep"]["seconds"], 5);
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "DATABASE_PASSWORD"
                && e["valueFrom"]["secretKeyRef"]
                    == json!({"name": "hello-db", "key": "password"})),
        "env: {}",
        container["env"]
    );
    let mounts: Vec<_> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].clone())
        .collect();
    assert_eq!(
        mounts,
        vec![
            json!("/tmp"),
            json!("/etc/hello"),
            json!("/var/run/secrets/db")
        ]
    );

    let service = ns.api::<Service>().get("hello-full").await.unwrap();
    assert!(controlled_by(&service, &gs));
    assert_eq!(
        to_json(&service.spec.unwrap().ports.unwrap()[0])["targetPort"],
        "http"
    );
    let config = ns
        .api::<ConfigMap>()
        .get(&config_map_name(&ns, "hello-full").await)
        .await
        .unwrap();
    assert!(controlled_by(&config, &gs));
    assert_eq!(config.immutable, Some(true));
    assert_eq!(
        config.data.unwrap().get("LOG_LEVEL").map(String::as_str),
        Some("info")
    );
    let ingress = ns.api::<Ingress>().get("hello-full").await.unwrap();
    assert!(controlled_by(&ingress, &gs));
    assert_eq!(
        ingress
            .annotations()
            .get("cert-manager.io/cluster-issuer")
            .map(String::as_str),
        Some("letsencrypt")
    );
    assert_eq!(
        to_json(&ingress.spec.unwrap().tls),
        json!([{"hosts": ["hello.example.com"], "secretName": "hello-full-tls"}])
    );
    let hpa = ns
        .api::<HorizontalPodAutoscaler>()
        .get("hello-full")
        .await
        .unwrap();
    assert!(controlled_by(&hpa, &gs));
    assert_eq!(
        (hpa.spec.min_replicas, hpa.spec.max_replicas),
        (Some(2), 10)
    );
    assert_eq!(
        to_json(&hpa.spec.behavior)["scaleDown"]["stabilizationWindowSeconds"],
        300
    );

    // The Deployment's replica count belongs to the HPA, not to gantry.
    let gantry_fields = deployment
        .managed_fields()
        .iter()
        .filter(|m| m.manager.as_deref() == Some("gantry"))
        .map(|m| to_json(&m.fields_v1).to_string())
        .collect::<String>();
    assert!(
        !gantry_fields.contains("f:replicas"),
        "gantry owns replicas: {gantry_fields}"
    );

    // Kubernetes Events record the children created.
    let events = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let created: Vec<_> = events
        .items
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some("Created")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("hello-full")
        })
        .filter_map(|e| e.note.clone())
        .collect();
    for kind in [
        "Deployment",
        "Service",
        "ConfigMap",
        "Ingress",
        "HorizontalPodAutoscaler",
    ] {
        assert!(
            created.iter().any(|n| n.contains(kind)),
            "no Created event for {kind}: {created:?}"
        );
    }

    // Every log line of a reconcile names the GoServer and the reconcile.
    let log = operator.log();
    let reconcile_lines: Vec<_> = log
        .iter()
        .filter(|l| l["span"]["name"] == "reconcile")
        .collect();
    assert!(!reconcile_lines.is_empty());
    for line in reconcile_lines {
        assert_eq!(line["span"]["namespace"], ns.name.as_str(), "{line}");
        assert!(
            line["span"]["goserver"].is_string() && line["span"]["reconcile_id"].is_string(),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn minimal_example_reaches_ready_and_scales() {
    let ns = TestNamespace::new("op-minimal").await;
    let _operator = Operator::start(&ns).await;
    kubectl_apply(&ns, "examples/minimal.yaml");
    let gs = wait_ready(&ns, "hello").await;
    assert_eq!(
        gs.status.as_ref().unwrap().replica_summary.as_deref(),
        Some("1/1")
    );
    assert_eq!(gs.status.as_ref().unwrap().url, None);

    // The scale subresource drives spec.replicas (what `kubectl scale gs` does).
    let goservers: Api<GoServer> = ns.api();
    goservers
        .patch_scale(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    wait_for(
        &ns.api::<Deployment>(),
        "hello",
        "3 replicas",
        DEADLINE,
        |d| d.spec.as_ref().and_then(|s| s.replicas) == Some(3),
    )
    .await
    .unwrap();
    wait_for(&goservers, "hello", "3/3 ready", DEADLINE, |gs| {
        has_condition(gs, "Ready", "True")
            && gs.status.as_ref().unwrap().replica_summary.as_deref() == Some("3/3")
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // the config change and what it leaves behind
async fn config_change_rolls_a_new_replicaset() {
    let ns = TestNamespace::new("op-config").await;
    let _operator = Operator::start(&ns).await;
    let goservers: Api<GoServer> = ns.api();
    let gs: GoServer = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "cfg"},
        "spec": {
            "image": "registry.example.com/cfg:1",
            "config": {"data": {"LOG_LEVEL": "info"}, "mountPath": "/etc/cfg"},
            "rollout": {"revisionHistoryLimit": 1},
        },
    }))
    .unwrap();
    goservers.create(&PostParams::default(), &gs).await.unwrap();
    let before = wait_ready(&ns, "cfg").await;
    let replicasets: Api<ReplicaSet> = ns.api();
    let first = replicasets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(first.len(), 1, "one ReplicaSet at first");
    let first_name = first[0].name_any();

    let first_config = config_map_name(&ns, "cfg").await;
    merge_patch(
        &goservers,
        "cfg",
        json!({"spec": {"config": {"data": {"LOG_LEVEL": "debug"}}}}),
    )
    .await;
    wait_for(
        &ns.api::<Deployment>(),
        "cfg",
        "the Deployment to load another ConfigMap",
        DEADLINE,
        |d| {
            to_json(&d.spec.as_ref().unwrap().template)["spec"]["containers"][0]["envFrom"][0]
                ["configMapRef"]["name"]
                != first_config
        },
    )
    .await
    .unwrap();
    let second_config = config_map_name(&ns, "cfg").await;
    let data = ns
        .api::<ConfigMap>()
        .get(&second_config)
        .await
        .unwrap()
        .data;
    assert_eq!(
        data.unwrap().get("LOG_LEVEL").map(String::as_str),
        Some("debug")
    );
    let new_rs = wait_until(
        "a second ReplicaSet with the new config hash",
        DEADLINE,
        || {
            let replicasets = replicasets.clone();
            let first_name = first_name.clone();
            async move {
                let list = replicasets
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(list
                    .items
                    .into_iter()
                    .find(|rs| rs.name_any() != first_name))
            }
        },
    )
    .await
    .unwrap();
    let hash = |rs: &ReplicaSet| {
        to_json(&rs.spec.as_ref().unwrap().template)["metadata"]["annotations"]
            ["gantry.dev/config-hash"]
            .clone()
    };
    assert_ne!(hash(&new_rs), hash(&first[0]));
    let after = wait_ready(&ns, "cfg").await;
    let revision = |gs: &GoServer| gs.status.clone().unwrap().revision.unwrap();
    let (old_revision, new_revision) = (revision(&before), revision(&after));
    assert_ne!(
        old_revision, new_revision,
        "the revision follows the config"
    );
    // The pods carry the revision; each revision is recorded.
    let template = to_json(&new_rs.spec.as_ref().unwrap().template);
    assert_eq!(
        template["metadata"]["labels"]["gantry.dev/revision"],
        new_revision
    );
    assert!(
        template["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "GANTRY_REVISION", "value": new_revision})),
        "{template}"
    );
    let record = ns
        .api::<ControllerRevision>()
        .get(&new_revision)
        .await
        .unwrap();
    assert!(controlled_by(&record, &after));
    // With a history of one, the old revision's record and its ConfigMap
    // go once the new revision runs everywhere.
    wait_for_deletion(&ns.api::<ControllerRevision>(), &old_revision, DEADLINE)
        .await
        .unwrap();
    wait_for_deletion(&ns.api::<ConfigMap>(), &first_config, DEADLINE)
        .await
        .unwrap();
}

/// Switching autoscaling on must not drop the running replica count: the
/// operator stops applying `spec.replicas`, and without the handover
/// server-side apply would reset the Deployment to one replica.
#[tokio::test(flavor = "multi_thread")]
async fn enabling_autoscaling_keeps_the_running_replicas() {
    let ns = TestNamespace::new("op-hpa-on").await;
    let _operator = Operator::start(&ns).await;
    let goservers: Api<GoServer> = ns.api();
    let gs: GoServer = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "grow"},
        "spec": {"image": "registry.example.com/grow:1", "replicas": 3},
    }))
    .unwrap();
    goservers.create(&PostParams::default(), &gs).await.unwrap();
    wait_ready(&ns, "grow").await;

    merge_patch(
        &goservers,
        "grow",
        json!({"spec": {"autoscaling": {"minReplicas": 2, "maxReplicas": 6}}}),
    )
    .await;
    let hpas: Api<HorizontalPodAutoscaler> = ns.api();
    wait_for(&hpas, "grow", "the HPA to exist", DEADLINE, |_| true)
        .await
        .unwrap();
    let gs = wait_ready(&ns, "grow").await;
    let generation = gs.metadata.generation;
    assert_eq!(
        gs.status.as_ref().and_then(|s| s.observed_generation),
        generation,
        "the autoscaling change was reconciled"
    );
    let deployment = ns.api::<Deployment>().get("grow").await.unwrap();
    assert_eq!(
        deployment.spec.as_ref().and_then(|s| s.replicas),
        Some(3),
        "the Deployment kept its 3 replicas when autoscaling took over"
    );
    let managers: Vec<_> = deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.iter().any(|m| m == "gantry-replicas-handover"),
        "{managers:?}"
    );
}

/// Autoscaling on CPU without a CPU request: the HPA could never compute
/// utilization, so the pods get the documented default request and an
/// Event says so; what the HPA itself reports (here, on a cluster without
/// a metrics API, that it cannot get metrics) reaches the `Scaling`
/// condition and a Warning Event, and `Ready` does not wait for it.
#[tokio::test(flavor = "multi_thread")]
async fn autoscaling_without_a_cpu_request_gets_a_default_and_reports_the_hpa() {
    let ns = TestNamespace::new("op-hpa-req").await;
    let _operator = Operator::start(&ns).await;
    let goservers: Api<GoServer> = ns.api();
    let gs: GoServer = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "bare"},
        "spec": {
            "image": "registry.example.com/bare:1",
            "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
        },
    }))
    .unwrap();
    goservers.create(&PostParams::default(), &gs).await.unwrap();
    wait_ready(&ns, "bare").await;

    let deployment = ns.api::<Deployment>().get("bare").await.unwrap();
    let requests = deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.resources)
        .and_then(|r| r.requests)
        .unwrap_or_default();
    assert_eq!(
        requests.get("cpu").map(|q| q.0.as_str()),
        Some("100m"),
        "{requests:?}"
    );

    // The HPA controller syncs every 15 s; its verdict lands in Scaling.
    let scaling = wait_for(
        &goservers,
        "bare",
        "Scaling=False from the HPA",
        DEADLINE,
        |gs| has_condition(gs, "Scaling", "False"),
    )
    .await
    .unwrap();
    assert!(
        has_condition(&scaling, "Ready", "True"),
        "{:?}",
        scaling.status
    );
    let condition = scaling
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Scaling")
        .unwrap();
    assert!(
        condition.message.contains("ScalingActive=False"),
        "{condition:?}"
    );

    let events = wait_until("the Events of the GoServer", DEADLINE, || async {
        let events = ns
            .api::<Event>()
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let reasons: Vec<String> = events
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("GoServer"))
            .filter_map(|e| e.reason.clone())
            .collect();
        let seen = ["DefaultedRequests", "AutoscalerCannotScale"]
            .iter()
            .all(|r| reasons.iter().any(|seen| seen == r));
        Ok::<_, String>(seen.then_some(events.items))
    })
    .await
    .unwrap();
    let defaulted = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("DefaultedRequests"))
        .unwrap();
    assert!(
        defaulted
            .note
            .as_deref()
            .is_some_and(|n| n.contains("spec.resources.requests.cpu") && n.contains("100m")),
        "{defaulted:?}"
    );
}

/// Removing `serviceAccountName` takes it off the pod template. The
/// apiserver mirrors it into the deprecated `serviceAccount`, and while
/// that copy was nobody's it brought the name straight back (found by the
/// schema fuzzer: reverting to a spec without it left pods that could not
/// be created once the account was gone).
#[tokio::test(flavor = "multi_thread")]
async fn removing_the_service_account_takes_it_off_the_pods() {
    let ns = TestNamespace::new("op-sa").await;
    let _operator = Operator::start(&ns).await;
    let account: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "runner"}})).unwrap();
    ns.api::<k8s_openapi::api::core::v1::ServiceAccount>()
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let goservers: Api<GoServer> = ns.api();
    let gs: GoServer = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "sa"},
        "spec": {"image": "registry.example.com/sa:1", "serviceAccountName": "runner"},
    }))
    .unwrap();
    goservers.create(&PostParams::default(), &gs).await.unwrap();
    wait_ready(&ns, "sa").await;

    goservers
        .patch(
            "sa",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(
                    json!([{"op": "remove", "path": "/spec/serviceAccountName"}]),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    wait_ready(&ns, "sa").await;
    let deployment = ns.api::<Deployment>().get("sa").await.unwrap();
    let pod = deployment.spec.and_then(|s| s.template.spec).unwrap();
    #[allow(deprecated)]
    let names = (pod.service_account_name, pod.service_account);
    assert_eq!(
        names,
        (None, None),
        "the account stayed on the pod template"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_ingress_and_autoscaling_off_deletes_them() {
    let ns = TestNamespace::new("op-prune").await;
    let _operator = Operator::start(&ns).await;
    let goservers: Api<GoServer> = ns.api();
    let gs: GoServer = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "prune"},
        "spec": {
            "image": "registry.example.com/prune:1",
            "replicas": 2,
            "ingress": {"host": "prune.example.com"},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 4},
        },
    }))
    .unwrap();
    goservers.create(&PostParams::default(), &gs).await.unwrap();
    wait_ready(&ns, "prune").await;
    let ingresses: Api<Ingress> = ns.api();
    let hpas: Api<HorizontalPodAutoscaler> = ns.api();
    ingresses.get("prune").await.unwrap();
    hpas.get("prune").await.unwrap();

    merge_patch(
        &goservers,
        "prune",
        json!({"spec": {"ingress": null, "autoscaling": null}}),
    )
    .await;
    wait_for_deletion(&ingresses, "prune", DEADLINE)
        .await
        .unwrap();
    wait_for_deletion(&hpas, "prune", DEADLINE).await.unwrap();
    // Without the HPA, spec.replicas applies again.
    wait_for(
        &ns.api::<Deployment>(),
        "prune",
        "spec.replicas = 2",
        DEADLINE,
        |d| d.spec.as_ref().and_then(|s| s.replicas) == Some(2),
    )
    .await
    .unwrap();
    let gs = wait_for(
        &goservers,
        "prune",
        "no URL once the Ingress is gone",
        DEADLINE,
        |gs| {
            has_condition(gs, "Ready", "True")
                && gs.status.as_ref().is_some_and(|s| s.url.is_none())
        },
    )
    .await
    .unwrap();
    assert_eq!(gs.status.unwrap().replica_summary.as_deref(), Some("2/2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_goserver_collects_every_child() {
    let ns = TestNamespace::new("op-gc").await;
    let _operator = Operator::start(&ns).await;
    kubectl_apply(&ns, "examples/full.yaml");
    let gs = wait_ready(&ns, "hello-full").await;
    let config = config_map_name(&ns, "hello-full").await;
    let revision = gs.status.unwrap().revision.unwrap();
    let goservers: Api<GoServer> = ns.api();
    goservers
        .delete("hello-full", &DeleteParams::foreground())
        .await
        .unwrap();
    wait_for_deletion(&goservers, "hello-full", DEADLINE)
        .await
        .unwrap();
    wait_for_deletion(&ns.api::<Deployment>(), "hello-full", DEADLINE)
        .await
        .unwrap();
    wait_for_deletion(&ns.api::<Service>(), "hello-full", DEADLINE)
        .await
        .unwrap();
    wait_for_deletion(&ns.api::<ConfigMap>(), &config, DEADLINE)
        .await
        .unwrap();
    wait_for_deletion(&ns.api::<Ingress>(), "hello-full", DEADLINE)
        .await
        .unwrap();
    wait_for_deletion(&ns.api::<HorizontalPodAutoscaler>(), "hello-full", DEADLINE)
        .await
        .unwrap();
    wait_for_deletion(&ns.api::<ControllerRevision>(), &revision, DEADLINE)
        .await
        .unwrap();
    // The Secret is the user's, not a child: it stays.
    ns.api::<Secret>().get("hello-db").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn hand_edited_children_are_restored() {
    let ns = TestNamespace::new("op-drift").await;
    let _operator = Operator::start(&ns).await;
    kubectl_apply(&ns, "examples/minimal.yaml");
    wait_ready(&ns, "hello").await;
    let deployments: Api<Deployment> = ns.api();
    let services: Api<Service> = ns.api();
    let configs: Api<ConfigMap> = ns.api();

    deployments
        .patch(
            "hello",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "server", "image": "evil:1"}]}}}})),
        )
        .await
        .unwrap();
    services
        .delete("hello", &DeleteParams::default())
        .await
        .unwrap();
    // ConfigMaps are immutable: only their metadata can be edited.
    let config = config_map_name(&ns, "hello").await;
    configs
        .patch(
            &config,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}})),
        )
        .await
        .unwrap();

    wait_for(
        &deployments,
        "hello",
        "the image from the spec again",
        DEADLINE,
        |d| {
            d.spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .image
                .as_deref()
                == Some("registry.example.com/gantry-server:0.1.0")
        },
    )
    .await
    .unwrap();
    wait_for(
        &services,
        "hello",
        "the Service to be recreated",
        DEADLINE,
        |_| true,
    )
    .await
    .unwrap();
    wait_for(
        &configs,
        &config,
        "the managed-by label back",
        DEADLINE,
        |cm| {
            cm.labels()
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str)
                == Some("gantry")
        },
    )
    .await
    .unwrap();
    wait_ready(&ns, "hello").await;
}

/// Resource versions of the GoServer and all its children.
async fn versions(ns: &TestNamespace, name: &str) -> BTreeMap<&'static str, String> {
    let rv = |o: &dyn Fn() -> Option<String>| o().unwrap_or_default();
    let gs = ns.api::<GoServer>().get(name).await.unwrap();
    let deployment = ns.api::<Deployment>().get(name).await.unwrap();
    let service = ns.api::<Service>().get(name).await.unwrap();
    let config = ns
        .api::<ConfigMap>()
        .get(&config_map_name(ns, name).await)
        .await
        .unwrap();
    let ingress = ns.api::<Ingress>().get(name).await.unwrap();
    BTreeMap::from([
        ("GoServer", rv(&|| gs.resource_version())),
        ("Deployment", rv(&|| deployment.resource_version())),
        ("Service", rv(&|| service.resource_version())),
        ("ConfigMap", rv(&|| config.resource_version())),
        ("Ingress", rv(&|| ingress.resource_version())),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_goserver_causes_no_writes() {
    let ns = TestNamespace::new("op-idle").await;
    let operator = Operator::start(&ns).await;
    let goservers: Api<GoServer> = ns.api();
    let gs: GoServer = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "idle"},
        "spec": {
            "image": "registry.example.com/idle:1",
            "replicas": 2,
            "config": {"data": {"A": "1"}},
            "resources": {"requests": {"cpu": "0.5", "memory": "64Mi"}},
            "ingress": {"host": "idle.example.com", "tls": {"secretName": "idle-tls"}},
        },
    }))
    .unwrap();
    goservers.create(&PostParams::default(), &gs).await.unwrap();
    // Settled: the rollout is over, so the Deployment's status (and with it
    // the GoServer's) has no reason to change any more.
    wait_for(&goservers, "idle", "Ready and Available", DEADLINE, |gs| {
        has_condition(gs, "Ready", "True") && has_condition(gs, "Available", "True")
    })
    .await
    .unwrap();
    let writes = |op: &Operator| {
        op.count("idle", "child applied")
            + op.count("idle", "status updated")
            + op.count("idle", "child no longer wanted, deleted")
    };

    // Force reconciles: each annotation is an event for the GoServer.
    for round in 0..3 {
        let before = versions(&ns, "idle").await;
        let writes_before = writes(&operator);
        let finished_before = operator.count("idle", "reconcile finished");
        merge_patch(
            &goservers,
            "idle",
            json!({"metadata": {"annotations": {"e2e/poke": round.to_string()}}}),
        )
        .await;
        let poked = goservers.get("idle").await.unwrap().resource_version();
        wait_until(
            "the operator to reconcile the poked GoServer",
            DEADLINE,
            || {
                let done = operator.count("idle", "reconcile finished") > finished_before;
                async move { Ok::<_, String>(done.then_some(())) }
            },
        )
        .await
        .unwrap();
        let after = versions(&ns, "idle").await;
        assert_eq!(
            writes(&operator),
            writes_before,
            "round {round}: the operator wrote"
        );
        assert_eq!(
            after["GoServer"],
            poked.unwrap(),
            "round {round}: the status was rewritten"
        );
        for kind in ["Deployment", "Service", "ConfigMap", "Ingress"] {
            assert_eq!(before[kind], after[kind], "round {round}: {kind} changed");
        }
    }
}

/// Requests sent between two readings of the operator's request counter,
/// without the watches and lists of its caches, which run on their own
/// schedule and are not a reconcile's doing.
fn sent_between(
    before: &BTreeMap<(String, String), u64>,
    after: &BTreeMap<(String, String), u64>,
) -> BTreeMap<(String, String), u64> {
    after
        .iter()
        .filter(|((_, verb), _)| verb != "watch" && verb != "list")
        .filter_map(|(key, n)| {
            let sent = n - before.get(key).copied().unwrap_or(0);
            (sent > 0).then(|| (key.clone(), sent))
        })
        .collect()
}

/// Reconciles read children from the caches: a reconcile of an unchanged
/// GoServer sends nothing but the metadata GET of its referenced Secret,
/// and a status-only change of its Deployment costs one status patch.
#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // two phases over one GoServer
async fn steady_reconciles_read_from_the_caches() {
    let ns = TestNamespace::new("op-cache").await;
    let operator = Operator::start(&ns).await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "cached-db"},
        "stringData": {"password": "s3cret"},
    }))
    .unwrap();
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let goservers: Api<GoServer> = ns.api();
    let gs: GoServer = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "cached"},
        "spec": {
            "image": "registry.example.com/cached:1",
            "replicas": 2,
            "secrets": [{"name": "cached-db", "env": [{"name": "DB_PASSWORD", "key": "password"}]}],
            "ingress": {"host": "cached.example.com"},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 4},
        },
    }))
    .unwrap();
    goservers.create(&PostParams::default(), &gs).await.unwrap();
    wait_for(
        &goservers,
        "cached",
        "Ready and Available",
        DEADLINE,
        |gs| has_condition(gs, "Ready", "True") && has_condition(gs, "Available", "True"),
    )
    .await
    .unwrap();

    // The HPA controller's first verdict (no metrics API here) changes the
    // Scaling condition: a write of its own, so wait it out first.
    wait_for(
        &goservers,
        "cached",
        "Scaling=False from the HPA",
        DEADLINE,
        |gs| has_condition(gs, "Scaling", "False"),
    )
    .await
    .unwrap();
    // The Warning Event that tells it follows the status write: wait for
    // it too, or round 0 may count it.
    wait_until("the AutoscalerCannotScale Event", DEADLINE, || async {
        let told = !events_about(&ns, "cached", "AutoscalerCannotScale")
            .await
            .is_empty();
        Ok::<_, String>(told.then_some(()))
    })
    .await
    .unwrap();

    let finished = |op: &Operator| op.count("cached", "reconcile finished");
    for round in 0..3 {
        let before = operator.requests();
        let finished_before = finished(&operator);
        merge_patch(
            &goservers,
            "cached",
            json!({"metadata": {"annotations": {"e2e/poke": round.to_string()}}}),
        )
        .await;
        // Its own reconcile, not one already under way: one that made its
        // Secret check after the poke.
        wait_until("the poked GoServer to be reconciled", DEADLINE, || {
            let done = finished(&operator) > finished_before
                && sent_between(&before, &operator.requests())
                    .contains_key(&("secrets".to_owned(), "get".to_owned()));
            async move { Ok::<_, String>(done.then_some(())) }
        })
        .await
        .unwrap();
        // Other events (the HPA controller's status updates) may add
        // reconciles of their own, so the Secret checks are not counted
        // exactly; what matters is that nothing else was sent.
        let sent = sent_between(&before, &operator.requests());
        let secret_get = ("secrets".to_owned(), "get".to_owned());
        assert!(
            sent.contains_key(&secret_get) && sent.keys().all(|k| *k == secret_get),
            "round {round}: a reconcile sent more than its Secret check: {sent:?}"
        );
    }

    // A status-only change of the Deployment, which its controller keeps
    // (a condition's message): the GoServer mirrors it with one patch.
    let before = operator.requests();
    let updates_before = operator.count("cached", "status updated");
    let finished_before = finished(&operator);
    ns.api::<Deployment>()
        .patch_status(
            "cached",
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {"conditions": [
                {"type": "Available", "message": "checked by the cache test"},
            ]}})),
        )
        .await
        .unwrap();
    wait_for(
        &goservers,
        "cached",
        "Available to carry the Deployment's new message",
        DEADLINE,
        |gs| {
            gs.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Available" && c.message == "checked by the cache test")
            })
        },
    )
    .await
    .unwrap();
    // The status write is itself an event: wait for the reconcile after it.
    wait_until("the reconcile after the status write", DEADLINE, || {
        let done = finished(&operator) >= finished_before + 2;
        async move { Ok::<_, String>(done.then_some(())) }
    })
    .await
    .unwrap();
    let sent = sent_between(&before, &operator.requests());
    let mutating: BTreeMap<_, _> = sent
        .iter()
        .filter(|((_, verb), _)| gantry_operator::audit::is_mutating(verb))
        .collect();
    assert_eq!(
        mutating,
        BTreeMap::from([(&("goservers/status".to_owned(), "patch".to_owned()), &1)]),
        "all requests: {sent:?}"
    );
    assert!(
        sent.keys()
            .all(|(kind, verb)| kind == "secrets" || gantry_operator::audit::is_mutating(verb)),
        "reads other than the Secret check: {sent:?}"
    );
    assert_eq!(
        operator.count("cached", "status updated"),
        updates_before + 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_secret_degrades_until_it_exists() {
    let ns = TestNamespace::new("op-secret").await;
    let operator = Operator::start(&ns).await;
    let goservers: Api<GoServer> = ns.api();
    let gs: GoServer = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "needs-secret"},
        "spec": {"image": "registry.example.com/app:1", "secrets": [{"name": "db", "env": [{"name": "DB_PASSWORD", "key": "password"}]}]},
    }))
    .unwrap();
    goservers.create(&PostParams::default(), &gs).await.unwrap();
    let degraded = wait_for(
        &goservers,
        "needs-secret",
        "Degraded=True (SecretNotFound)",
        DEADLINE,
        |gs| {
            gs.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Degraded" && c.status == "True" && c.reason == "SecretNotFound"
                })
            })
        },
    )
    .await
    .unwrap();
    assert!(has_condition(&degraded, "Ready", "False"));
    // Nothing was built from a spec that cannot run.
    assert!(
        ns.api::<Deployment>()
            .get_opt("needs-secret")
            .await
            .unwrap()
            .is_none()
    );
    let warnings = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        warnings
            .items
            .iter()
            .any(|e| e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some("SecretNotFound"))
    );
    // A permanent error is not retried in a loop: the status, once written,
    // stays as it is while nothing changes.
    let version = degraded.resource_version();
    let reconciles = operator.count("needs-secret", "reconcile stopped by a permanent error");
    assert!(
        reconciles <= 3,
        "{reconciles} reconciles for one unchanged GoServer"
    );

    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "db"}, "stringData": {"password": "x"}}),
    )
    .unwrap();
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    assert_eq!(
        goservers
            .get("needs-secret")
            .await
            .unwrap()
            .resource_version(),
        version
    );
    // A change to the GoServer makes the operator look again at once.
    merge_patch(
        &goservers,
        "needs-secret",
        json!({"metadata": {"annotations": {"e2e/secret": "created"}}}),
    )
    .await;
    let ready = wait_ready(&ns, "needs-secret").await;
    assert!(has_condition(&ready, "Degraded", "False"));
}

#[tokio::test(flavor = "multi_thread")]
async fn restricted_namespace_admits_the_pods() {
    let labels = BTreeMap::from([
        (
            "pod-security.kubernetes.io/enforce".to_owned(),
            "restricted".to_owned(),
        ),
        (
            "pod-security.kubernetes.io/enforce-version".to_owned(),
            "latest".to_owned(),
        ),
    ]);
    let ns = TestNamespace::with_labels("op-psa", labels).await;
    let _operator = Operator::start(&ns).await;
    kubectl_apply(&ns, "examples/full.yaml");
    kubectl_apply(&ns, "examples/minimal.yaml");
    for name in ["hello-full", "hello"] {
        wait_ready(&ns, name).await;
        let deployment = ns.api::<Deployment>().get(name).await.unwrap();
        assert!(
            deployment.status.unwrap().available_replicas.unwrap_or(0) >= 1,
            "{name} has no available pod"
        );
    }
}
