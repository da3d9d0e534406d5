//! Which `GoServer` an event of a watched kind is for: the controller of
//! one of gantry's children, or, for a Gateway, every `GoServer` whose route
//! names it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::{PartialObjectMeta, PartialObjectMetaExt};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::build;
use crate::crd::GoServer;

/// The `GoServer` an event of one of gantry's children is for (see
/// [`goserver_of`]), as the table of kinds in [`crate::cache`] takes it.
pub fn owner<K>(_: &Store<GoServer>, child: PartialObjectMeta<K>) -> Option<ObjectRef<GoServer>> {
    goserver_of(child)
}

/// The `GoServers` whose route names the Gateway of an event as a parent
/// (see [`routes_on`]), as the table of kinds in [`crate::cache`] takes it.
// By value: the signature the table's mappers share.
#[allow(clippy::needless_pass_by_value)]
pub fn routes_through<K: Resource>(
    goservers: &Store<GoServer>,
    gateway: PartialObjectMeta<K>,
) -> Vec<ObjectRef<GoServer>> {
    routes_on(goservers, &gateway)
}

/// The `GoServers` whose route names `gateway` as a parent.
pub(crate) fn routes_on<C: Resource>(
    goservers: &Store<GoServer>,
    gateway: &C,
) -> Vec<ObjectRef<GoServer>> {
    let (Some(name), Some(namespace)) = (
        gateway.meta().name.as_deref(),
        gateway.meta().namespace.as_deref(),
    ) else {
        return Vec::new();
    };
    goservers
        .state()
        .iter()
        .filter(|gs| {
            let own = gs.metadata.namespace.as_deref();
            gs.spec.route.as_ref().is_some_and(|route| {
                route
                    .parent_refs
                    .iter()
                    .any(|p| p.name == name && p.namespace.as_deref().or(own) == Some(namespace))
            })
        })
        .map(|gs| ObjectRef::from_obj(gs.as_ref()))
        .collect()
}

/// The `GoServer` an event of one of gantry's children is for: its
/// controller if that is a `GoServer`, else, when nothing controls it, the
/// `GoServer` its instance label names. A child deleted and created again
/// by someone else (restored from a backup, say) has gantry's labels and
/// no owner; a watch that coalesced the two events shows only the new
/// object, and without the label nothing would reconcile its `GoServer`
/// (found by the lost-state test).
pub(crate) fn goserver_of<K>(child: PartialObjectMeta<K>) -> Option<ObjectRef<GoServer>> {
    let ObjectMeta {
        namespace,
        owner_references,
        labels,
        ..
    } = child.metadata;
    let controller = owner_references
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.controller == Some(true));
    let name = match controller {
        Some(owner)
            if owner.kind == GoServer::kind(&())
                && owner.api_version == GoServer::api_version(&()) =>
        {
            owner.name
        }
        Some(_) => return None,
        None => labels?.remove(build::INSTANCE_LABEL)?,
    };
    Some(ObjectRef::new(&name).within(&namespace?))
}

/// What [`goserver_of`] reads of a child event: its namespace, controller
/// and instance label, in the form kube's trigger streams take.
// By value: the signature `map_ok` asks for.
#[allow(clippy::needless_pass_by_value)]
pub(crate) fn trigger<C, K>(child: C) -> PartialObjectMeta<K>
where
    C: Resource<DynamicType = ()>,
    K: Resource<DynamicType = ()>,
{
    let meta = child.meta();
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        owner_references: meta.owner_references.as_ref().map(|owners| {
            owners
                .iter()
                .filter(|r| r.controller == Some(true))
                .cloned()
                .collect()
        }),
        labels: meta.labels.as_ref().and_then(|labels| {
            let instance = labels.get(build::INSTANCE_LABEL)?;
            Some([(build::INSTANCE_LABEL.to_owned(), instance.clone())].into())
        }),
        ..ObjectMeta::default()
    }
    .into_request_partial()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use serde_json::json;

    use super::*;

    fn service(owners: &serde_json::Value, labels: &serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "svc", "namespace": "shop", "ownerReferences": owners, "labels": labels},
        }))
        .expect("a Service")
    }

    fn owner(kind: &str, api_version: &str, name: &str, controller: bool) -> serde_json::Value {
        json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": "u", "controller": controller})
    }

    #[test]
    fn a_child_event_is_for_its_controlling_goserver() {
        let labels = json!({build::INSTANCE_LABEL: "labelled"});
        let child = service(
            &json!([owner("GoServer", "gantry.dev/v1alpha1", "web", true)]),
            &labels,
        );
        assert_eq!(
            goserver_of(trigger::<_, Service>(child)),
            Some(ObjectRef::new("web").within("shop"))
        );
        // Controlled by something else: not ours, whatever its labels say.
        let child = service(
            &json!([owner("ReplicaSet", "apps/v1", "rs", true)]),
            &labels,
        );
        assert_eq!(goserver_of(trigger::<_, Service>(child)), None);
    }

    #[test]
    fn a_child_without_controller_is_for_the_goserver_its_label_names() {
        // A replacement made by someone else: gantry's labels, no owner.
        let child = service(&json!([]), &json!({build::INSTANCE_LABEL: "web"}));
        assert_eq!(
            goserver_of(trigger::<_, Service>(child)),
            Some(ObjectRef::new("web").within("shop"))
        );
        let child = service(
            &json!([owner("GoServer", "gantry.dev/v1alpha1", "other", false)]),
            &json!({}),
        );
        assert_eq!(goserver_of(trigger::<_, Service>(child)), None);
    }
}
