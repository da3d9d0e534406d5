//! The optional Ingress, named like the `GoServer`.
//!
//! TLS comes either from an existing certificate Secret or from a
//! cert-manager issuer: the issuer is named in an annotation and cert-manager
//! writes the certificate into `secretName` (default `<name>-tls`).

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::meta::Owner;
use crate::crd::{GoServer, IngressSpec as GsIngressSpec, IssuerKind, TlsSpec};

pub(super) fn build(gs: &GoServer, owner: &Owner<'_>) -> Option<Ingress> {
    let GsIngressSpec {
        host,
        path,
        path_type,
        class_name,
        annotations,
        tls,
    } = gs.spec.ingress.clone()?;
    let service_port = gs.spec.service.clone().unwrap_or_default().port;

    let mut annotations = annotations;
    let tls = tls.map(
        |TlsSpec {
             secret_name,
             issuer,
         }| {
            if let Some(issuer) = issuer {
                let key = match issuer.kind {
                    IssuerKind::Issuer => "cert-manager.io/issuer",
                    IssuerKind::ClusterIssuer => "cert-manager.io/cluster-issuer",
                };
                annotations.insert(key.to_owned(), issuer.name);
            }
            IngressTLS {
                hosts: host.clone().map(|h| vec![h]),
                secret_name: Some(secret_name.unwrap_or_else(|| format!("{}-tls", owner.name))),
            }
        },
    );

    Some(Ingress {
        metadata: owner.meta(owner.name, annotations),
        spec: Some(IngressSpec {
            ingress_class_name: class_name,
            rules: Some(vec![IngressRule {
                host,
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(path),
                        path_type: path_type.as_str().to_owned(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: owner.name.to_owned(),
                                port: Some(ServiceBackendPort {
                                    number: Some(service_port),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            tls: tls.map(|t| vec![t]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::super::tests::{goserver, labels, owner_refs};
    use super::*;

    #[test]
    fn no_ingress_without_the_field() {
        let gs = goserver(json!({"image": "hello:1"}));
        assert_eq!(build(&gs, &Owner::of(&gs).unwrap()), None);
    }

    #[test]
    fn ingress_with_secret_tls() {
        let gs = goserver(json!({
            "image": "hello:1",
            "service": {"port": 8000},
            "ingress": {
                "host": "hello.example.com",
                "className": "nginx",
                "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "1m"},
                "tls": {"secretName": "hello-cert"},
            },
        }));
        let ingress = build(&gs, &Owner::of(&gs).unwrap()).unwrap();
        assert_eq!(
            serde_json::to_value(ingress).unwrap(),
            json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {
                    "name": "hello",
                    "namespace": "web",
                    "labels": labels(),
                    "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "1m"},
                    "ownerReferences": owner_refs(),
                },
                "spec": {
                    "ingressClassName": "nginx",
                    "rules": [{
                        "host": "hello.example.com",
                        "http": {"paths": [{
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "hello", "port": {"number": 8000}}},
                        }]},
                    }],
                    "tls": [{"hosts": ["hello.example.com"], "secretName": "hello-cert"}],
                },
            })
        );
    }

    #[test]
    fn ingress_with_cert_manager_issuer() {
        let gs = goserver(json!({
            "image": "hello:1",
            "ingress": {
                "host": "hello.example.com",
                "path": "/api",
                "pathType": "Exact",
                "tls": {"issuer": {"name": "letsencrypt", "kind": "ClusterIssuer"}},
            },
        }));
        let ingress = serde_json::to_value(build(&gs, &Owner::of(&gs).unwrap()).unwrap()).unwrap();
        assert_eq!(
            ingress["metadata"]["annotations"],
            json!({"cert-manager.io/cluster-issuer": "letsencrypt"})
        );
        assert_eq!(
            ingress["spec"],
            json!({
                "rules": [{
                    "host": "hello.example.com",
                    "http": {"paths": [{
                        "path": "/api",
                        "pathType": "Exact",
                        "backend": {"service": {"name": "hello", "port": {"number": 80}}},
                    }]},
                }],
                "tls": [{"hosts": ["hello.example.com"], "secretName": "hello-tls"}],
            })
        );
    }
}
