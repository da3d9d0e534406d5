//! The pure half of a reconcile: `&GoServer -> Children`.
//!
//! Nothing here talks to the apiserver. [`build`] turns a `GoServer` into the
//! typed objects it asks for, so every decision about the shape of a child
//! is unit-tested by comparing the serialized object with a literal JSON
//! document. The apply step ([`crate::apply`]) destructures [`Children`]
//! without `..`: a new child kind does not compile until it is applied and
//! pruned there.

pub mod canary;
mod config;
mod deployment;
mod hpa;
mod ingress;
pub mod meta;
pub mod revision;
mod route;
mod service;
pub mod service_monitor;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;

use crate::crd::GoServer;
use crate::error::{Error, Result};
use crate::gateway::HttpRoute;

pub use canary::{BaselineChildren, CanaryChildren, CanaryRun};
pub use config::{config_map_name, config_map_prefix};
pub use deployment::{CONFIG_HASH_ANNOTATION, CONTAINER_NAME};
pub use hpa::{DEFAULT_REQUESTS, defaulted_requests};
pub use meta::{
    COMPONENT_LABEL, FIELD_MANAGER, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL,
    labels, selector_labels, selector_string,
};
pub(crate) use meta::{Owner, short_hash};
pub use revision::{REVISION_LABEL, Revision, RevisionData};
pub use service_monitor::ServiceMonitor;

/// Every child a `GoServer` asks for. Optional children are `None` when the
/// spec does not want them, and are then deleted if they exist.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub deployment: Deployment,
    pub service: Service,
    /// The config of the revision in force.
    pub config_map: ConfigMap,
    pub ingress: Option<Ingress>,
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// Present when the spec asks for one, whether or not the cluster
    /// serves the kind.
    pub service_monitor: Option<ServiceMonitor>,
    /// Present when the spec asks for one, whether or not the cluster
    /// serves the kind.
    pub route: Option<HttpRoute>,
    /// The revision in force, which the Deployment runs.
    pub revision: Revision,
    /// The canary of a new revision, while one runs; its children are
    /// deleted when there is none.
    pub canary: Option<CanaryChildren>,
}

/// Checks what the schema cannot: combinations that would make the apiserver
/// reject a child.
pub fn validate(gs: &GoServer) -> Result<()> {
    let spec = &gs.spec;
    let mut wanted: Vec<(&str, String)> = Vec::new();
    if let Some(path) = spec.config.as_ref().and_then(|c| c.mount_path.as_deref()) {
        wanted.push((path, "spec.config.mountPath".to_owned()));
    }
    for (i, secret) in spec.secrets.iter().enumerate() {
        if let Some(path) = secret.mount_path.as_deref() {
            wanted.push((path, format!("spec.secrets[{i}].mountPath")));
        }
    }
    let mut taken: BTreeMap<String, String> = BTreeMap::new();
    taken.insert(
        deployment::TMP_MOUNT_PATH.to_owned(),
        "the writable /tmp".to_owned(),
    );
    for (path, field) in wanted {
        let trimmed = path.trim_end_matches('/');
        let path = if trimmed.is_empty() { "/" } else { trimmed };
        if let Some(other) = taken.get(path) {
            return Err(Error::InvalidSpec {
                field,
                message: format!("mount path {path} is already used by {other}"),
            });
        }
        taken.insert(path.to_owned(), field);
    }
    Ok(())
}

/// The revision the spec of `gs` asks for.
pub fn spec_revision(gs: &GoServer) -> Result<Revision> {
    let owner = Owner::of(gs)?;
    let data = RevisionData {
        template: deployment::template(gs, &owner)?,
        config: gs
            .spec
            .config
            .as_ref()
            .map(|c| c.data.clone())
            .unwrap_or_default(),
    };
    Revision::new(owner.name, data)
}

/// Builds every child of `gs`, running `in_force`: the spec's own revision,
/// or a verified one restored after a rollback.
pub fn build(gs: &GoServer, in_force: Revision) -> Result<Children> {
    build_with_canary(gs, in_force, None)
}

/// [`build`], with the canary of a new revision beside the stable one
/// (`in_force`); the route then splits its traffic between the two.
pub fn build_with_canary(
    gs: &GoServer,
    in_force: Revision,
    canary: Option<CanaryRun>,
) -> Result<Children> {
    let owner = Owner::of(gs)?;
    let config_map = config::build(&owner, &in_force.data.config);
    let canary =
        canary.map(|run| canary::build(gs, &owner, run, &in_force, &config_map.name_any()));
    Ok(Children {
        deployment: deployment::build(gs, &owner, &in_force),
        service: service::build(gs, &owner),
        config_map,
        ingress: ingress::build(gs, &owner),
        hpa: hpa::build(gs, &owner),
        service_monitor: service_monitor::build(gs, &owner),
        route: route::build(
            gs,
            &owner,
            canary.as_ref().map(|c| (c.weight, c.baseline.is_some())),
        ),
        revision: in_force,
        canary,
    })
}

/// The `ControllerRevision` recording `revision` of `gs`, numbered `number`.
pub fn controller_revision(
    gs: &GoServer,
    revision: &Revision,
    number: i64,
) -> Result<ControllerRevision> {
    let owner = Owner::of(gs)?;
    let config_map = config_map_name(owner.name, &revision.data.config);
    revision::controller_revision(&owner, revision, number, &config_map)
}

/// The URL the server is reached at: the route's first hostname (unless
/// a wildcard), else the Ingress's host, if either has one. A route's
/// scheme is its Gateway listener's, which only the Gateway knows:
/// `route_https` says whether a listener the route attaches to speaks
/// HTTPS (see [`crate::gateway::listeners::serves_https`]).
pub fn url(gs: &GoServer, route_https: bool) -> Option<String> {
    if let Some(route) = &gs.spec.route
        && let Some(host) = route.hostnames.first().filter(|h| !h.starts_with("*."))
    {
        let scheme = if route_https { "https" } else { "http" };
        return Some(format!("{scheme}://{host}{}", route.path.value));
    }
    let ingress = gs.spec.ingress.as_ref()?;
    let host = ingress.host.as_deref()?;
    let scheme = if ingress.tls.is_some() {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{host}{}", ingress.path))
}

/// Name of a `GoServer`, for log lines and events.
pub fn display_name(gs: &GoServer) -> String {
    format!("{}/{}", gs.namespace().unwrap_or_default(), gs.name_any())
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use crate::crd::GoServer;

    /// A stored `GoServer` with the given spec, as the apiserver would hand it over.
    #[allow(clippy::needless_pass_by_value)] // callers pass `json!` literals
    pub fn goserver(spec: serde_json::Value) -> GoServer {
        serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1",
            "kind": "GoServer",
            "metadata": {"name": "hello", "namespace": "web", "uid": "uid-1", "generation": 3},
            "spec": spec,
        }))
        .expect("valid GoServer")
    }

    pub fn owner_refs() -> serde_json::Value {
        json!([{
            "apiVersion": "gantry.dev/v1alpha1",
            "kind": "GoServer",
            "name": "hello",
            "uid": "uid-1",
            "controller": true,
        }])
    }

    pub fn labels() -> serde_json::Value {
        json!({
            "app.kubernetes.io/component": "server",
            "app.kubernetes.io/instance": "hello",
            "app.kubernetes.io/managed-by": "gantry",
            "app.kubernetes.io/name": "hello",
        })
    }

    #[test]
    fn validate_rejects_shared_mount_paths() {
        let gs = goserver(json!({
            "image": "hello:1",
            "config": {"data": {}, "mountPath": "/etc/hello"},
            "secrets": [{"name": "db", "mountPath": "/etc/hello/"}],
        }));
        let err = super::validate(&gs).expect_err("clash");
        assert_eq!(err.category(), "invalid_spec");
        assert!(
            err.to_string().contains("spec.secrets[0].mountPath"),
            "{err}"
        );
    }

    #[test]
    fn validate_rejects_tmp() {
        let gs = goserver(json!({"image": "hello:1", "config": {"mountPath": "/tmp"}}));
        assert!(super::validate(&gs).is_err());
        let gs = goserver(json!({"image": "hello:1", "config": {"mountPath": "/etc/x"}}));
        assert!(super::validate(&gs).is_ok());
    }

    #[test]
    fn url_follows_tls() {
        let gs = goserver(json!({"image": "h", "ingress": {"host": "a.example.com"}}));
        assert_eq!(
            super::url(&gs, true).as_deref(),
            Some("http://a.example.com/")
        );
        let gs = goserver(
            json!({"image": "h", "ingress": {"host": "a.example.com", "path": "/x", "tls": {"secretName": "t"}}}),
        );
        assert_eq!(
            super::url(&gs, false).as_deref(),
            Some("https://a.example.com/x")
        );
        let gs = goserver(json!({"image": "h"}));
        assert_eq!(super::url(&gs, true), None);
    }

    #[test]
    fn a_route_url_takes_the_listener_scheme_and_wins_over_the_ingress() {
        let gs = goserver(json!({"image": "h",
            "ingress": {"host": "old.example.com", "tls": {"secretName": "t"}},
            "route": {"parentRefs": [{"name": "gw"}], "hostnames": ["*.example.com", "a.example.com"],
                      "path": {"type": "PathPrefix", "value": "/api"}}}));
        let route = gs.spec.route.as_ref().expect("a route");
        assert_eq!(route.hostnames[0], "*.example.com");
        // The first hostname is a wildcard: no URL from the route.
        assert_eq!(
            super::url(&gs, true).as_deref(),
            Some("https://old.example.com/")
        );
        let gs = goserver(json!({"image": "h",
            "ingress": {"host": "old.example.com"},
            "route": {"parentRefs": [{"name": "gw"}], "hostnames": ["a.example.com"],
                      "path": {"type": "PathPrefix", "value": "/api"}}}));
        assert_eq!(
            super::url(&gs, true).as_deref(),
            Some("https://a.example.com/api")
        );
        assert_eq!(
            super::url(&gs, false).as_deref(),
            Some("http://a.example.com/api")
        );
    }
}
