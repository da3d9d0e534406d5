//! The Service in front of the pods, named like the `GoServer`.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{Owner, selector_labels};
use crate::crd::{GoServer, ServiceSpec as GsServiceSpec};

pub(super) fn build(gs: &GoServer, owner: &Owner<'_>) -> Service {
    let spec = gs.spec.service.clone().unwrap_or_default();
    let GsServiceSpec {
        type_,
        port,
        annotations,
    } = spec;
    Service {
        metadata: owner.meta(owner.name, annotations),
        spec: Some(ServiceSpec {
            type_: Some(type_.as_str().to_owned()),
            selector: Some(selector_labels(owner.name)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port,
                // The container port is named, so a change of `spec.port`
                // needs no change here.
                target_port: Some(IntOrString::String("http".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::super::tests::{goserver, labels, owner_refs};
    use super::*;

    #[test]
    fn default_service() {
        let gs = goserver(json!({"image": "hello:1"}));
        let owner = Owner::of(&gs).unwrap();
        assert_eq!(
            serde_json::to_value(build(&gs, &owner)).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "hello",
                    "namespace": "web",
                    "labels": labels(),
                    "ownerReferences": owner_refs(),
                },
                "spec": {
                    "type": "ClusterIP",
                    "selector": {"app.kubernetes.io/instance": "hello", "app.kubernetes.io/name": "hello"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
                },
            })
        );
    }

    #[test]
    fn service_type_port_and_annotations() {
        let gs = goserver(json!({
            "image": "hello:1",
            "service": {"type": "LoadBalancer", "port": 8443, "annotations": {"lb.example.com/internal": "true"}},
        }));
        let owner = Owner::of(&gs).unwrap();
        let svc = serde_json::to_value(build(&gs, &owner)).unwrap();
        assert_eq!(
            svc["metadata"]["annotations"],
            json!({"lb.example.com/internal": "true"})
        );
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        assert_eq!(svc["spec"]["ports"][0]["port"], 8443);
    }
}
