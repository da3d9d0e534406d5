//! The optional Gateway API `HTTPRoute`, named like the `GoServer`: one
//! rule sending the spec's path on its hostnames to the Service.

use super::meta::Owner;
use crate::crd::{GoServer, ParentRef, RouteSpec, RouteTimeouts};
use crate::gateway::HttpRoute;
use crate::gateway::httproute::{
    HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesMatches,
    HttpRouteRulesMatchesPath, HttpRouteRulesMatchesPathType, HttpRouteRulesTimeouts,
    HttpRouteSpec,
};

/// With a canary at `weight` percent, the rule has two backends: the
/// stable Service and the canary's, weighted; three with its baseline
/// (`baseline`), which gets as much as the canary: stable `100 - 2w`,
/// baseline `w`, canary `w`. Without a canary, the stable Service alone.
pub(super) fn build(
    gs: &GoServer,
    owner: &Owner<'_>,
    canary: Option<(i32, bool)>,
) -> Option<HttpRoute> {
    let RouteSpec {
        parent_refs,
        hostnames,
        path,
        timeouts,
    } = gs.spec.route.clone()?;
    let service_port = gs.spec.service.clone().unwrap_or_default().port;
    let path_type = match path.type_ {
        crate::crd::RoutePathType::PathPrefix => HttpRouteRulesMatchesPathType::PathPrefix,
        crate::crd::RoutePathType::Exact => HttpRouteRulesMatchesPathType::Exact,
    };
    Some(HttpRoute {
        metadata: owner.meta(owner.name, std::collections::BTreeMap::new()),
        spec: HttpRouteSpec {
            parent_refs: Some(
                parent_refs
                    .into_iter()
                    .map(
                        |ParentRef {
                             name,
                             namespace,
                             section_name,
                         }| HttpRouteParentRefs {
                            name,
                            namespace,
                            section_name,
                            ..HttpRouteParentRefs::default()
                        },
                    )
                    .collect(),
            ),
            hostnames: super::meta::non_empty_vec(hostnames),
            rules: Some(vec![HttpRouteRules {
                matches: Some(vec![HttpRouteRulesMatches {
                    path: Some(HttpRouteRulesMatchesPath {
                        r#type: Some(path_type),
                        value: Some(path.value),
                    }),
                    ..HttpRouteRulesMatches::default()
                }]),
                backend_refs: Some(backends(owner.name, service_port, canary)),
                timeouts: timeouts.map(
                    |RouteTimeouts {
                         request,
                         backend_request,
                     }| HttpRouteRulesTimeouts {
                        request,
                        backend_request,
                    },
                ),
                ..HttpRouteRules::default()
            }]),
        },
        status: None,
    })
}

fn backends(name: &str, port: i32, canary: Option<(i32, bool)>) -> Vec<HttpRouteRulesBackendRefs> {
    let backend = |name: String, weight: Option<i32>| HttpRouteRulesBackendRefs {
        name,
        port: Some(port),
        weight,
        ..HttpRouteRulesBackendRefs::default()
    };
    match canary {
        None => vec![backend(name.to_owned(), None)],
        Some((weight, false)) => {
            let weight = weight.clamp(0, 100);
            vec![
                backend(name.to_owned(), Some(100 - weight)),
                backend(super::canary::name(name), Some(weight)),
            ]
        }
        Some((weight, true)) => {
            let weight = weight.clamp(0, 50);
            vec![
                backend(name.to_owned(), Some(100 - 2 * weight)),
                backend(super::canary::name(name), Some(weight)),
                backend(super::canary::baseline_name(name), Some(weight)),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::super::tests::{goserver, labels, owner_refs};
    use super::*;

    #[test]
    fn no_route_without_the_field() {
        let gs = goserver(json!({"image": "hello:1"}));
        assert_eq!(build(&gs, &Owner::of(&gs).unwrap(), None), None);
    }

    #[test]
    fn minimal_route_sends_every_path_to_the_service() {
        let gs =
            goserver(json!({"image": "hello:1", "route": {"parentRefs": [{"name": "public"}]}}));
        let owner = Owner::of(&gs).unwrap();
        assert_eq!(
            serde_json::to_value(build(&gs, &owner, None).unwrap()).unwrap(),
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {
                    "name": "hello",
                    "namespace": "web",
                    "labels": labels(),
                    "ownerReferences": owner_refs(),
                },
                "spec": {
                    "parentRefs": [{"name": "public"}],
                    "rules": [{
                        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        "backendRefs": [{"name": "hello", "port": 80}],
                    }],
                },
            })
        );
    }

    #[test]
    fn full_route_keeps_every_field() {
        let gs = goserver(json!({
            "image": "hello:1",
            "service": {"port": 8080},
            "route": {
                "parentRefs": [
                    {"name": "public", "namespace": "gateways", "sectionName": "https"},
                    {"name": "internal"},
                ],
                "hostnames": ["hello.example.com", "*.hello.example.com"],
                "path": {"type": "Exact", "value": "/api"},
                "timeouts": {"request": "10s", "backendRequest": "2s"},
            },
        }));
        let owner = Owner::of(&gs).unwrap();
        let route = serde_json::to_value(build(&gs, &owner, None).unwrap()).unwrap();
        assert_eq!(
            route["spec"],
            json!({
                "parentRefs": [
                    {"name": "public", "namespace": "gateways", "sectionName": "https"},
                    {"name": "internal"},
                ],
                "hostnames": ["hello.example.com", "*.hello.example.com"],
                "rules": [{
                    "matches": [{"path": {"type": "Exact", "value": "/api"}}],
                    "backendRefs": [{"name": "hello", "port": 8080}],
                    "timeouts": {"request": "10s", "backendRequest": "2s"},
                }],
            })
        );
    }

    #[test]
    fn a_canary_splits_the_traffic_by_weight() {
        let gs =
            goserver(json!({"image": "hello:1", "route": {"parentRefs": [{"name": "public"}]}}));
        let owner = Owner::of(&gs).unwrap();
        let route = serde_json::to_value(build(&gs, &owner, Some((10, false))).unwrap()).unwrap();
        assert_eq!(
            route["spec"]["rules"][0]["backendRefs"],
            json!([
                {"name": "hello", "port": 80, "weight": 90},
                {"name": "hello-canary", "port": 80, "weight": 10},
            ])
        );
        // Aborted: everything back to stable, the canary's backend kept.
        let route = serde_json::to_value(build(&gs, &owner, Some((0, false))).unwrap()).unwrap();
        assert_eq!(
            route["spec"]["rules"][0]["backendRefs"],
            json!([
                {"name": "hello", "port": 80, "weight": 100},
                {"name": "hello-canary", "port": 80, "weight": 0},
            ])
        );
        // With its baseline: the same share each.
        let route = serde_json::to_value(build(&gs, &owner, Some((20, true))).unwrap()).unwrap();
        assert_eq!(
            route["spec"]["rules"][0]["backendRefs"],
            json!([
                {"name": "hello", "port": 80, "weight": 60},
                {"name": "hello-canary", "port": 80, "weight": 20},
                {"name": "hello-baseline", "port": 80, "weight": 20},
            ])
        );
    }
}
