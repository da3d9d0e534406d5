//! What the operator made of a `GoServer`, in a form two runs can compare:
//! every child (gantry's label) by `kind/name` (optional kinds when the
//! cluster serves them), with what the apiserver
//! or other controllers fill in, the namespace's name, the owner's UID and
//! the clock's times masked, and the `GoServer`'s generation and status.
//! The fault tests use it as their oracle: a run under faults must end
//! where a run without them did.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use gantry_operator::build::ServiceMonitor;
use gantry_operator::crd::GoServer;
use gantry_operator::gateway::HttpRoute;
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::ListParams;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::TestNamespace;

/// `kind/name` of every child, and `GoServer`, to its masked form.
pub type Snapshot = BTreeMap<String, Value>;

/// The key of the `GoServer` itself in a [`Snapshot`].
pub const GOSERVER: &str = "GoServer";

/// The snapshot of the `GoServer` `name` in `ns` (children only once it is
/// gone): its children are those with gantry's and its instance's labels. Panics if a child is not controlled by the `GoServer` alone: an
/// orphan or a child of an earlier object of the same name.
pub async fn take(ns: &TestNamespace, name: &str) -> (Option<GoServer>, Snapshot) {
    let gs = ns
        .api::<GoServer>()
        .get_opt(name)
        .await
        .expect("reading the GoServer");
    let uid = gs.as_ref().and_then(ResourceExt::uid);
    let uid = uid.as_deref();
    let mut snapshot = Snapshot::new();
    let selector = format!("app.kubernetes.io/managed-by=gantry,app.kubernetes.io/instance={name}");
    let of = Of {
        ns,
        uid,
        selector: &selector,
    };
    children::<Deployment>(&of, &mut snapshot).await;
    children::<Service>(&of, &mut snapshot).await;
    children::<ConfigMap>(&of, &mut snapshot).await;
    children::<Ingress>(&of, &mut snapshot).await;
    children::<HorizontalPodAutoscaler>(&of, &mut snapshot).await;
    children::<ServiceMonitor>(&of, &mut snapshot).await;
    children::<HttpRoute>(&of, &mut snapshot).await;
    children::<ControllerRevision>(&of, &mut snapshot).await;
    if let Some(gs) = &gs {
        snapshot.insert(GOSERVER.to_owned(), normalize(ns, &goserver_view(gs)));
    }
    (gs, snapshot)
}

/// How many children of `kind` a snapshot holds.
pub fn count(snapshot: &Snapshot, kind: &str) -> usize {
    let prefix = format!("{kind}/");
    snapshot.keys().filter(|k| k.starts_with(&prefix)).count()
}

/// A namespaced Kubernetes type the tests read and write whole.
pub trait Namespaced:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
{
}

impl<K> Namespaced for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
{
}

/// Whose children to list: gantry's, of one instance, in one namespace.
struct Of<'a> {
    ns: &'a TestNamespace,
    /// The live `GoServer`'s UID, which every child's controller must be.
    uid: Option<&'a str>,
    selector: &'a str,
}

async fn children<K: Namespaced>(of: &Of<'_>, snapshot: &mut Snapshot) {
    let Of { ns, uid, selector } = *of;
    let list = match ns
        .api::<K>()
        .list(&ListParams::default().labels(selector))
        .await
    {
        Ok(list) => list,
        // A kind from another project's CRD, not installed: no children.
        Err(kube::Error::Api(status)) if status.code == 404 => return,
        Err(err) => panic!("listing {} children: {err}", K::kind(&())),
    };
    for child in list.items {
        let name = child.name_any();
        let owners: Vec<_> = child
            .owner_references()
            .iter()
            .filter(|o| o.controller == Some(true))
            .collect();
        // While the GoServer exists every child is its own; once it is
        // deleted the children wait for the garbage collector.
        if let Some(uid) = uid {
            assert!(
                owners.len() == 1 && owners[0].uid == uid,
                "{} {name} in {} is not controlled by the GoServer {uid} alone: {owners:?}",
                K::kind(&()),
                ns.name
            );
        }
        let value = serde_json::to_value(&child).expect("a child as JSON");
        snapshot.insert(
            format!("{}/{name}", K::kind(&())),
            normalize(ns, &child_view(&value)),
        );
    }
}

/// The namespace's name, which differs between runs, masked.
fn normalize(ns: &TestNamespace, value: &Value) -> Value {
    let text = value.to_string().replace(&ns.name, "NAMESPACE");
    serde_json::from_str(&text).expect("still JSON")
}

/// What of a child the operator decides: labels, annotations, owner (its
/// UID differs between runs), and the content; not what the apiserver or
/// other controllers fill in.
pub fn child_view(object: &Value) -> Value {
    let meta = &object["metadata"];
    let owners: Vec<Value> = meta["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let mut o = o.clone();
            o["uid"] = json!("UID");
            o
        })
        .collect();
    // The applied hash covers the namespace and the owner's UID.
    let mut annotations = meta["annotations"].clone();
    if let Some(hash) = annotations.get_mut("gantry.dev/applied-hash") {
        *hash = json!("HASH");
    }
    let mut spec = object["spec"].clone();
    if let Some(spec) = spec.as_object_mut() {
        // A Service's addresses and node ports are the apiserver's pick.
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
        spec.remove("healthCheckNodePort");
        for port in spec
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(port) = port.as_object_mut() {
                port.remove("nodePort");
            }
        }
    }
    json!({
        "labels": meta["labels"],
        "annotations": annotations,
        "owners": owners,
        "spec": spec,
        "data": object["data"],
        "revision": object["revision"],
    })
}

/// What of the `GoServer` the operator decides: its status, without
/// times, and without `Scaling`, which follows the HPA controller's own
/// 15 s sync rather than the operator.
fn goserver_view(gs: &GoServer) -> Value {
    let mut status = serde_json::to_value(&gs.status).expect("status as JSON");
    if let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        conditions.retain(|c| c["type"] != "Scaling");
    }
    drop_times(&mut status);
    json!({"generation": gs.metadata.generation, "status": status})
}

/// Removes the times in a status (`lastTransitionTime`, `deployedAt`, ...):
/// the clock's, not the operator's decision.
fn drop_times(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, _| {
                !(key.ends_with("Time") || key.ends_with("At") || key.ends_with("Until"))
            });
            map.values_mut().for_each(drop_times);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_times),
        _ => {}
    }
}

/// The entries of two snapshots that differ, for a failure message.
pub fn difference(expected: &Snapshot, got: &Snapshot) -> String {
    let keys: BTreeSet<&String> = expected.keys().chain(got.keys()).collect();
    let shown = |v: Option<&Value>| v.map_or("(absent)".to_owned(), Value::to_string);
    let mut out = String::new();
    for k in keys.into_iter().filter(|k| expected.get(*k) != got.get(*k)) {
        let _ = write!(
            out,
            "\n  {k}:\n    expected: {}\n    got:      {}",
            shown(expected.get(k)),
            shown(got.get(k))
        );
    }
    out
}
