//! `spec.route` end to end, on a cluster that first lacks the Gateway API
//! CRDs and then gets them (the standard channel of the release the
//! operator's types come from): the GoServer is Degraded saying what to
//! install while everything else (its Ingress included) is applied; the
//! same operator process creates the `HTTPRoute` once the CRDs are there,
//! reads what a Gateway controller writes in its status, keeps it in line
//! with the spec without rewriting it, takes `status.url`'s scheme from the
//! Gateway listener it attaches to, and deletes it when the field goes.
//! No Gateway controller runs: the test writes the route's status the way
//! one would.
//!
//! This file owns the Gateway API CRDs while it runs (it deletes them);
//! test files run one after another, and its single test does all of it.

mod operator_support;

use gantry_e2e::gateway_crds;
use gantry_e2e::{TestNamespace, wait_for, wait_for_deletion, wait_until};
use gantry_operator::crd::GoServer;
use gantry_operator::gateway::{Gateway, HttpRoute};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use operator_support::{DEADLINE, Operator, assert_not_reapplied, has_condition};
use serde_json::{Value, json};

fn condition<'a>(
    gs: &'a GoServer,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    gs.status
        .as_ref()
        .filter(|s| s.observed_generation == gs.metadata.generation)?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

fn reports(gs: &GoServer, type_: &str, status: &str, reason: &str) -> bool {
    condition(gs, type_).is_some_and(|c| c.status == status && c.reason == reason)
}

fn routes(ns: &TestNamespace) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
    ));
    Api::namespaced_with(ns.client.clone(), &ns.name, &resource)
}

/// The route as the apiserver stores it, every field.
async fn stored(ns: &TestNamespace) -> Value {
    serde_json::to_value(routes(ns).get("web").await.expect("the HTTPRoute")).unwrap()
}

/// Writes the route's status as a Gateway controller would: one parent,
/// `Accepted` as given.
async fn gateway_reports(ns: &TestNamespace, accepted: bool, reason: &str, message: &str) {
    let generation = stored(ns).await["metadata"]["generation"].clone();
    let status = json!({"status": {"parents": [{
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "sectionName": "http"},
        "controllerName": "example.com/gateway-controller",
        "conditions": [
            {"type": "Accepted", "status": if accepted { "True" } else { "False" },
             "reason": reason, "message": message,
             "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "message": "",
             "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ],
    }]}});
    routes(ns)
        .patch_status("web", &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("writing the route's status");
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one story: missing, installed, accepted, refused, removed
async fn route_follows_the_spec_the_crds_and_the_gateway() {
    let ns = TestNamespace::new("route").await;
    gateway_crds::uninstall(&ns.client)
        .await
        .expect("removing the Gateway API CRDs");
    let operator = Operator::start(&ns).await;
    let goservers: Api<GoServer> = ns.api();
    // Both an Ingress and a route, as while moving from one to the other.
    let gs: GoServer = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "web"},
        "spec": {
            "image": "registry.example.com/web:1",
            "service": {"port": 8080},
            "ingress": {"host": "old.example.com"},
            "route": {
                "parentRefs": [{"name": "public", "sectionName": "http"}],
                "hostnames": ["web.example.com"],
                "path": {"type": "PathPrefix", "value": "/api"},
                "timeouts": {"request": "10s", "backendRequest": "4s"},
            },
        },
    }))
    .unwrap();
    goservers.create(&PostParams::default(), &gs).await.unwrap();

    // No Gateway API: Degraded, saying what to install; everything else is
    // applied and Ready.
    let gs = wait_for(
        &goservers,
        "web",
        "Degraded=True GatewayAPIMissing",
        DEADLINE,
        |gs| {
            reports(gs, "Degraded", "True", "GatewayAPIMissing")
                && has_condition(gs, "Ready", "True")
        },
    )
    .await
    .unwrap();
    let message = &condition(&gs, "Degraded").unwrap().message;
    assert!(
        message.contains("gateway.networking.k8s.io/v1") && message.contains("install"),
        "{message}"
    );
    assert!(reports(&gs, "Routed", "False", "GatewayAPIMissing"));
    assert!(
        ns.api::<Ingress>().get_opt("web").await.unwrap().is_some(),
        "the Ingress is applied all the same"
    );

    // The CRDs arrive: the same operator process creates the route, and
    // no longer reports the GoServer Degraded.
    gateway_crds::install(&ns.client)
        .await
        .expect("installing the Gateway API CRDs");
    let gs = wait_for(
        &goservers,
        "web",
        "the route waiting for a Gateway",
        DEADLINE,
        |gs| {
            reports(gs, "Routed", "Unknown", "NotYetAccepted")
                && reports(gs, "Degraded", "False", "AsExpected")
        },
    )
    .await
    .unwrap();
    assert_eq!(
        gs.status.as_ref().unwrap().url.as_deref(),
        Some("http://web.example.com/api"),
        "status.url follows the route's first hostname"
    );

    // The route as stored, field by field.
    let route = stored(&ns).await;
    let owner = &route["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "GoServer", "{route}");
    assert_eq!(owner["uid"], gs.uid().unwrap().as_str(), "{route}");
    assert_eq!(owner["controller"], true, "{route}");
    assert_eq!(
        route["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "gantry"
    );
    let spec = &route["spec"];
    let parent = &spec["parentRefs"][0];
    assert_eq!(
        (&parent["name"], &parent["sectionName"], &parent["kind"]),
        (&json!("public"), &json!("http"), &json!("Gateway")),
        "{spec}"
    );
    assert_eq!(spec["hostnames"], json!(["web.example.com"]));
    let rules = spec["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{spec}");
    assert_eq!(
        rules[0]["matches"],
        json!([{"path": {"type": "PathPrefix", "value": "/api"}}])
    );
    assert_eq!(
        rules[0]["timeouts"],
        json!({"request": "10s", "backendRequest": "4s"})
    );
    // The backend is the GoServer's Service, on the port it serves.
    let backends = rules[0]["backendRefs"].as_array().unwrap();
    assert_eq!(backends.len(), 1, "{spec}");
    let service: Service = ns.api().get("web").await.unwrap();
    let ports: Vec<i32> = service
        .spec
        .unwrap()
        .ports
        .unwrap()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(backends[0]["name"], service.metadata.name.unwrap().as_str());
    assert!(
        ports.iter().any(|p| backends[0]["port"] == *p),
        "{backends:?} names none of the Service's ports {ports:?}"
    );

    // A Gateway accepts it.
    gateway_reports(&ns, true, "Accepted", "").await;
    let gs = wait_for(&goservers, "web", "Routed=True", DEADLINE, |gs| {
        reports(gs, "Routed", "True", "Accepted")
    })
    .await
    .unwrap();
    assert!(
        condition(&gs, "Routed").unwrap().message.contains("public"),
        "{:?}",
        condition(&gs, "Routed")
    );

    // A reconcile that changes nothing does not write the route's spec.
    let generation = stored(&ns).await["metadata"]["generation"].clone();
    assert_not_reapplied(&ns, &operator, "web", "HTTPRoute").await;
    assert_eq!(stored(&ns).await["metadata"]["generation"], generation);

    // The Gateway refuses it: the GoServer says which and why.
    gateway_reports(
        &ns,
        false,
        "NotAllowedByListeners",
        "no listener allows routes from this namespace",
    )
    .await;
    let gs = wait_for(&goservers, "web", "Routed=False", DEADLINE, |gs| {
        reports(gs, "Routed", "False", "NotAllowedByListeners")
    })
    .await
    .unwrap();
    let message = &condition(&gs, "Routed").unwrap().message;
    assert!(
        message.contains("public") && message.contains("no listener allows routes"),
        "{message}"
    );

    // A spec change reaches the route.
    goservers
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"route": {
                "parentRefs": [{"name": "public", "sectionName": "https"}],
                "hostnames": ["api.example.com"],
                "path": {"type": "Exact", "value": "/v2"},
            }}})),
        )
        .await
        .unwrap();
    wait_until("the route to follow the spec", DEADLINE, || async {
        let route = stored(&ns).await;
        let spec = &route["spec"];
        Ok::<_, String>(
            (spec["hostnames"] == json!(["api.example.com"])
                && spec["parentRefs"][0]["sectionName"] == "https"
                && spec["rules"][0]["matches"][0]["path"]
                    == json!({"type": "Exact", "value": "/v2"}))
            .then_some(()),
        )
    })
    .await
    .unwrap();
    // No Gateway to read the listener from: the URL says http.
    let url_is = |url: &'static str| {
        move |gs: &GoServer| gs.status.as_ref().and_then(|s| s.url.as_deref()) == Some(url)
    };
    wait_for(
        &goservers,
        "web",
        "an http URL",
        DEADLINE,
        url_is("http://api.example.com/v2"),
    )
    .await
    .unwrap();

    // The Gateway appears with an HTTPS listener for the host: the URL
    // turns https with no change to the GoServer, and back to http when
    // the listener the route names stops speaking HTTPS.
    let gateways: Api<Gateway> = ns.api();
    let gateway: Gateway = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "public"},
        "spec": {
            "gatewayClassName": "example",
            "listeners": [
                {"name": "http", "protocol": "HTTP", "port": 80},
                {"name": "https", "protocol": "HTTPS", "port": 443, "hostname": "*.example.com",
                 "tls": {"mode": "Terminate", "certificateRefs": [{"name": "example-tls"}]}},
            ],
        },
    }))
    .unwrap();
    gateways
        .create(&PostParams::default(), &gateway)
        .await
        .unwrap();
    wait_for(
        &goservers,
        "web",
        "an https URL",
        DEADLINE,
        url_is("https://api.example.com/v2"),
    )
    .await
    .unwrap();
    gateways
        .patch(
            "public",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "replace", "path": "/spec/listeners/1/protocol", "value": "HTTP"},
                    {"op": "replace", "path": "/spec/listeners/1/port", "value": 8080},
                    {"op": "remove", "path": "/spec/listeners/1/tls"},
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    wait_for(
        &goservers,
        "web",
        "an http URL again",
        DEADLINE,
        url_is("http://api.example.com/v2"),
    )
    .await
    .unwrap();

    // The route removed (the move to it undone): the HTTPRoute goes, and
    // status.url is the Ingress's again.
    goservers
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"route": null}})),
        )
        .await
        .unwrap();
    let typed: Api<HttpRoute> = ns.api();
    wait_for_deletion(&typed, "web", DEADLINE).await.unwrap();
    let gs = wait_for(&goservers, "web", "no Routed condition", DEADLINE, |gs| {
        condition(gs, "Ready").is_some() && condition(gs, "Routed").is_none()
    })
    .await
    .unwrap();
    assert_eq!(
        gs.status.unwrap().url.as_deref(),
        Some("http://old.example.com/")
    );
    let failed: Vec<_> = operator
        .log()
        .into_iter()
        .filter(|l| l["level"] == "ERROR" || l["message"] == "reconcile failed")
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}
