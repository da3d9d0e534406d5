//! Requests to the apiserver named as Kubernetes' audit log names them:
//! method, resource (with its subresource) and verb. The request metrics
//! and the named write points of the fault tests read the same names.

use axum::http::Method;

use crate::metrics::RequestLabels;

/// Method, resource and verb of a request to the apiserver, in the words
/// of Kubernetes' audit log (`get`, `list`, `watch`, `create`, `patch`, ...).
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> RequestLabels {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // `/api/v1/...` or `/apis/<group>/<version>/...`.
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[][..],
    };
    // Namespaced paths put the resource after `namespaces/<ns>`; the
    // namespaces resource itself is `namespaces[/<name>]`.
    let resource = match rest {
        ["namespaces", _ns, resource @ ..] if !resource.is_empty() => resource,
        other => other,
    };
    let (kind, named) = match resource {
        [] => ("other".to_owned(), false),
        [plural] => ((*plural).to_owned(), false),
        [plural, _name] => ((*plural).to_owned(), true),
        [plural, _name, sub, ..] => (format!("{plural}/{sub}"), true),
    };
    let watch = query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    });
    let verb = match (method.as_str(), named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "other",
    };
    let method = match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        _ => "other",
    };
    RequestLabels { method, kind, verb }
}

/// Whether a verb changes anything on the apiserver.
pub fn is_mutating(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(method: &str, uri: &str) -> (String, &'static str) {
        let (path, query) = uri
            .split_once('?')
            .map_or((uri, None), |(p, q)| (p, Some(q)));
        let method: Method = method.parse().unwrap();
        let l = classify(&method, path, query);
        (l.kind, l.verb)
    }

    #[test]
    fn requests_are_named_like_the_audit_log() {
        let cases = [
            (
                "GET",
                "/apis/apps/v1/namespaces/web/deployments/hello",
                "deployments",
                "get",
            ),
            (
                "GET",
                "/apis/apps/v1/namespaces/web/deployments?labelSelector=x",
                "deployments",
                "list",
            ),
            (
                "GET",
                "/apis/apps/v1/deployments?watch=true&resourceVersion=5",
                "deployments",
                "watch",
            ),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/web/deployments/hello?fieldManager=gantry",
                "deployments",
                "patch",
            ),
            (
                "PATCH",
                "/apis/gantry.dev/v1alpha1/namespaces/web/goservers/hello/status",
                "goservers/status",
                "patch",
            ),
            ("GET", "/api/v1/namespaces/web/secrets/db", "secrets", "get"),
            (
                "POST",
                "/apis/events.k8s.io/v1/namespaces/web/events",
                "events",
                "create",
            ),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/ops/leases/gantry",
                "leases",
                "update",
            ),
            (
                "DELETE",
                "/apis/networking.k8s.io/v1/namespaces/web/ingresses/hello",
                "ingresses",
                "delete",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/web/configmaps",
                "configmaps",
                "deletecollection",
            ),
            ("GET", "/api/v1/namespaces/web", "namespaces", "get"),
            ("GET", "/api/v1/namespaces", "namespaces", "list"),
            ("GET", "/version", "other", "list"),
        ];
        for (method, uri, kind, verb) in cases {
            assert_eq!(
                labels(method, uri),
                (kind.to_owned(), verb),
                "{method} {uri}"
            );
        }
        assert!(is_mutating("patch"));
        assert!(!is_mutating("watch"));
    }
}
