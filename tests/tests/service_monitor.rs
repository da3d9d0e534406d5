//! `spec.monitoring.serviceMonitor` end to end, on a cluster that first
//! lacks prometheus-operator's CRDs and then gets them: the operator keeps
//! serving and says why there is no monitor, creates it within seconds of
//! the CRD being installed (no restart), keeps it in line with the spec
//! without rewriting it, and deletes it when the field goes.
//!
//! This file owns the `ServiceMonitor` CRD while it runs (it deletes it);
//! test files run one after another, and its single test does all of it.

mod operator_support;

use std::collections::BTreeMap;

use gantry_e2e::monitoring_crds;
use gantry_e2e::{TestNamespace, wait_for, wait_for_deletion, wait_until};
use gantry_operator::build::ServiceMonitor;
use gantry_operator::crd::GoServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use operator_support::{DEADLINE, Operator, assert_not_reapplied, deployed, has_condition};
use serde_json::{Value, json};

fn monitored(gs: &GoServer, status: &str, reason: &str) -> bool {
    gs.status.as_ref().is_some_and(|s| {
        s.observed_generation == gs.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Monitored" && c.status == status && c.reason == reason)
    })
}

/// The monitor as the apiserver stores it, every field (a typed read
/// would drop the fields the type does not know).
async fn stored(ns: &TestNamespace, name: &str) -> Value {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "monitoring.coreos.com",
        "v1",
        "ServiceMonitor",
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
    serde_json::to_value(api.get(name).await.expect("the ServiceMonitor")).unwrap()
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one story: missing, installed, changed, removed
async fn service_monitor_follows_the_spec_and_the_crd() {
    let ns = TestNamespace::new("monitor").await;
    monitoring_crds::uninstall_service_monitors(&ns.client)
        .await
        .expect("removing the ServiceMonitor CRD");
    let operator = Operator::start(&ns).await;
    let goservers: Api<GoServer> = ns.api();
    let gs: GoServer = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "web"},
        "spec": {
            "image": "registry.example.com/web:1",
            "monitoring": {
                "serviceMonitor": true,
                "interval": "15s",
                "labels": {"release": "kube-prometheus"},
            },
        },
    }))
    .unwrap();
    goservers.create(&PostParams::default(), &gs).await.unwrap();

    // No CRD: the server is Ready all the same, and the condition says why
    // there is no monitor.
    let gs = wait_for(&goservers, "web", "Monitored=False", DEADLINE, |gs| {
        monitored(gs, "False", "ServiceMonitorCRDMissing") && has_condition(gs, "Ready", "True")
    })
    .await
    .unwrap();
    let status = gs.status.unwrap();
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Monitored")
        .unwrap();
    assert!(
        condition.message.contains("monitoring.coreos.com/v1"),
        "{}",
        condition.message
    );
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(degraded.status, "False", "{degraded:?}");

    // The CRD arrives: the same operator process creates the monitor.
    monitoring_crds::install(&ns.client)
        .await
        .expect("installing the prometheus-operator CRDs");
    let gs = wait_for(&goservers, "web", "Monitored=True", DEADLINE, |gs| {
        monitored(gs, "True", "ServiceMonitorApplied")
    })
    .await
    .unwrap();
    let monitor = stored(&ns, "web").await;

    // Owned by the GoServer, labelled for the Prometheus that selects it.
    let owner = &monitor["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "GoServer", "{monitor}");
    assert_eq!(owner["uid"], gs.uid().unwrap().as_str(), "{monitor}");
    assert_eq!(owner["controller"], true, "{monitor}");
    let labels = &monitor["metadata"]["labels"];
    assert_eq!(labels["release"], "kube-prometheus", "{monitor}");
    assert_eq!(
        labels["app.kubernetes.io/managed-by"], "gantry",
        "{monitor}"
    );

    // It selects the GoServer's Service, by labels that Service carries,
    // and scrapes a port the Service names.
    let service: Service = ns.api().get("web").await.unwrap();
    let selector: BTreeMap<String, String> =
        serde_json::from_value(monitor["spec"]["selector"]["matchLabels"].clone()).unwrap();
    assert!(!selector.is_empty(), "{monitor}");
    for (key, value) in &selector {
        assert_eq!(service.labels().get(key), Some(value), "{key}");
    }
    let endpoints = monitor["spec"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1, "{monitor}");
    let endpoint = &endpoints[0];
    let port_names: Vec<String> = service
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .filter_map(|p| p.name)
        .collect();
    assert!(
        port_names.iter().any(|p| endpoint["port"] == p.as_str()),
        "{endpoint} names none of {port_names:?}"
    );
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "15s");

    // The series label `revision` comes from the label the pods carry.
    let pod_labels = ns
        .api::<Deployment>()
        .get("web")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    let revision = deployed(&ns, "web").await;
    let relabelings = endpoint["relabelings"].as_array().unwrap();
    let rule = relabelings
        .iter()
        .find(|r| r["targetLabel"] == "revision")
        .unwrap_or_else(|| panic!("no relabeling to `revision`: {endpoint}"));
    let source = rule["sourceLabels"][0].as_str().unwrap();
    let (label, value) = pod_labels
        .iter()
        .find(|(key, _)| {
            let meta: String = key
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            source == format!("__meta_kubernetes_pod_label_{meta}")
        })
        .unwrap_or_else(|| panic!("{source} is no label of the pods: {pod_labels:?}"));
    assert_eq!(label, "gantry.dev/revision");
    assert_eq!(value, &revision);

    // A reconcile that changes nothing writes nothing.
    let version = monitor["metadata"]["resourceVersion"].clone();
    assert_not_reapplied(&ns, &operator, "web", "ServiceMonitor").await;
    assert_eq!(
        stored(&ns, "web").await["metadata"]["resourceVersion"],
        version
    );

    // A change of the spec reaches the monitor.
    goservers
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"monitoring": {"interval": "1m", "path": "/internal/metrics"}}}),
            ),
        )
        .await
        .unwrap();
    wait_until("the monitor to follow the spec", DEADLINE, || async {
        let monitor = stored(&ns, "web").await;
        let endpoint = &monitor["spec"]["endpoints"][0];
        Ok::<_, String>(
            (endpoint["interval"] == "1m" && endpoint["path"] == "/internal/metrics").then_some(()),
        )
    })
    .await
    .unwrap();

    // Off: the monitor goes, and so does the condition.
    goservers
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"monitoring": {"serviceMonitor": false}}})),
        )
        .await
        .unwrap();
    let monitors: Api<ServiceMonitor> = ns.api();
    wait_for_deletion(&monitors, "web", DEADLINE).await.unwrap();
    wait_for(
        &goservers,
        "web",
        "no Monitored condition",
        DEADLINE,
        |gs| {
            gs.status.as_ref().is_some_and(|s| {
                s.observed_generation == gs.metadata.generation
                    && s.conditions.iter().all(|c| c.type_ != "Monitored")
            })
        },
    )
    .await
    .unwrap();
    // Not one failed reconcile or watch on the way: the missing kind was
    // never watched.
    let failed: Vec<_> = operator
        .log()
        .into_iter()
        .filter(|l| l["level"] == "ERROR" || l["message"] == "reconcile failed")
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}
