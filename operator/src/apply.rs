//! Server-side apply of children, skipped when nothing would change.
//!
//! A reconcile of an unchanged `GoServer` must send no mutating request, yet a
//! child edited by hand must be restored. Each applied object carries the
//! hash of its desired form in the annotation [`APPLIED_HASH_ANNOTATION`];
//! a child is applied again when that hash differs (the spec changed, which
//! also covers fields the spec no longer sets) or when some desired field is
//! missing or different in the live object (drift). Fields the apiserver
//! defaults or other managers add are not compared.

use std::fmt::Debug;

use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde_json::Value;

use crate::build::short_hash;
use crate::error::{Error, Result};

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "gantry";
/// Annotation holding the hash of the desired object last applied.
pub const APPLIED_HASH_ANNOTATION: &str = "gantry.dev/applied-hash";

/// What [`apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
}

/// Applies `desired` unless the live object already matches it, and returns
/// the live object with what was done.
pub async fn apply<K>(api: &Api<K>, desired: &K) -> Result<(K, Outcome)>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let kind = K::kind(&());
    let kind: &'static str = static_kind(&kind);
    let name = desired.name_any();
    let body = with_hash(desired, kind)?;

    let live = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("get {kind} {name}"), e))?;
    if let Some(live) = &live {
        let live_json =
            serde_json::to_value(live).map_err(|source| Error::Serialize { kind, source })?;
        match difference(&body, &live_json, "", false) {
            None => return Ok((live.clone(), Outcome::Unchanged)),
            Some(path) => tracing::debug!(%kind, child = %name, field = %path, "child differs"),
        }
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = api
        .patch(&name, &params, &Patch::Apply(&body))
        .await
        .map_err(|e| Error::from_write(kind, &name, e))?;
    let outcome = if live.is_some() {
        Outcome::Updated
    } else {
        Outcome::Created
    };
    Ok((applied, outcome))
}

/// Deletes the child `name` if it exists and the `GoServer` `owner_uid`
/// controls it. Returns whether a delete was sent.
pub async fn delete_owned<K>(api: &Api<K>, name: &str, owner_uid: &str) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let kind = K::kind(&());
    let Some(live) = api
        .get_metadata_opt(name)
        .await
        .map_err(|e| Error::kube(format!("get {kind} {name}"), e))?
    else {
        return Ok(false);
    };
    let owned = live
        .owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && r.uid == owner_uid);
    if !owned || live.metadata.deletion_timestamp.is_some() {
        return Ok(false);
    }
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(Error::kube(format!("delete {kind} {name}"), e)),
    }
}

/// The desired object as JSON with its hash annotation.
fn with_hash<K: Serialize>(desired: &K, kind: &'static str) -> Result<Value> {
    let mut body =
        serde_json::to_value(desired).map_err(|source| Error::Serialize { kind, source })?;
    let bytes = serde_json::to_vec(&body).map_err(|source| Error::Serialize { kind, source })?;
    let hash = short_hash(&bytes, 16);
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(APPLIED_HASH_ANNOTATION.to_owned(), Value::String(hash));
        }
    }
    Ok(body)
}

/// Whether every field of `desired` has the same value in `live`.
///
/// Objects compare key by key, so fields only the live object has (status,
/// defaults, other managers' fields) do not matter; lists compare element by
/// element and must have the same length. An empty list, an empty object or
/// `false` in `desired` matches a missing field, as the apiserver drops them.
/// Resource quantities compare by value: the apiserver stores `0.5` as `500m`.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    difference(desired, live, "", false).is_none()
}

/// The path of the first field where `live` does not match `desired`.
pub fn difference(desired: &Value, live: &Value, path: &str, quantities: bool) -> Option<String> {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().find_map(|(k, dv)| {
            let here = format!("{path}.{k}");
            match l.get(k) {
                Some(lv) => difference(
                    dv,
                    lv,
                    &here,
                    quantities || matches!(k.as_str(), "requests" | "limits"),
                ),
                None => (!is_empty(dv)).then_some(here),
            }
        }),
        (Value::Array(d), Value::Array(l)) => {
            if d.len() != l.len() {
                return Some(format!("{path} (length)"));
            }
            d.iter()
                .zip(l)
                .enumerate()
                .find_map(|(i, (dv, lv))| difference(dv, lv, &format!("{path}[{i}]"), false))
        }
        (Value::Number(d), Value::Number(l)) => (d.as_f64() != l.as_f64()).then(|| path.to_owned()),
        (Value::String(d), Value::String(l)) if quantities && d != l => {
            let same = match (quantity(d), quantity(l)) {
                (Some(d), Some(l)) => (d - l).abs() <= f64::EPSILON * d.abs().max(l.abs()) * 4.0,
                _ => false,
            };
            (!same).then(|| path.to_owned())
        }
        (d, Value::Null) => (!is_empty(d)).then(|| path.to_owned()),
        (d, l) => (d != l).then(|| path.to_owned()),
    }
}

/// The value of a Kubernetes resource quantity (`100m`, `64Mi`, `1e3`, `0.5`).
fn quantity(text: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 15] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|n| (n, *factor)))
        .unwrap_or((text, 1.0));
    let value: f64 = number.parse().ok()?;
    value.is_finite().then_some(value * factor)
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Kinds as `&'static str` for error variants and Events: the set is fixed.
fn static_kind(kind: &str) -> &'static str {
    match kind {
        "Deployment" => "Deployment",
        "Service" => "Service",
        "ConfigMap" => "ConfigMap",
        "Ingress" => "Ingress",
        "HorizontalPodAutoscaler" => "HorizontalPodAutoscaler",
        _ => "object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn subset_ignores_extra_live_fields() {
        let desired = json!({"spec": {"replicas": 2, "template": {"containers": [{"name": "a"}]}}});
        let live = json!({
            "spec": {"replicas": 2, "progressDeadlineSeconds": 600,
                     "template": {"containers": [{"name": "a", "terminationMessagePath": "/dev/termination-log"}]}},
            "status": {"replicas": 2},
        });
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn subset_sees_changed_and_missing_values() {
        let live = json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}});
        assert!(!is_subset(&json!({"spec": {"replicas": 3}}), &live));
        assert!(!is_subset(&json!({"spec": {"paused": true}}), &live));
        assert!(!is_subset(
            &json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}}),
            &live
        ));
        assert!(!is_subset(
            &json!({"spec": {"ports": [{"port": 81}]}}),
            &live
        ));
    }

    #[test]
    fn quantities_compare_by_value() {
        let live = json!({"resources": {"requests": {"cpu": "500m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}}});
        let same = json!({"resources": {"requests": {"cpu": "0.5", "memory": "67108864"}, "limits": {"memory": "1024Mi"}}});
        assert!(is_subset(&same, &live));
        let more = json!({"resources": {"requests": {"cpu": "0.6"}}});
        assert!(!is_subset(&more, &live));
        // Outside requests and limits, strings compare as strings.
        assert!(!is_subset(
            &json!({"env": {"value": "0.5"}}),
            &json!({"env": {"value": "500m"}})
        ));
        assert_eq!(quantity("100m"), Some(0.1));
        assert_eq!(quantity("2Ki"), Some(2048.0));
        assert_eq!(quantity("1e3"), Some(1000.0));
        assert_eq!(quantity("abc"), None);
    }

    #[test]
    fn subset_treats_empty_as_missing() {
        let live = json!({"spec": {"replicas": 2}});
        assert!(is_subset(
            &json!({"spec": {"volumes": [], "x": {}, "y": false}}),
            &live
        ));
        assert!(is_subset(
            &json!({"spec": {"emptyDir": {}}}),
            &json!({"spec": {"emptyDir": {}}})
        ));
    }

    #[test]
    fn hash_annotation_follows_content() {
        let a = with_hash(
            &json!({"metadata": {"name": "x"}, "data": {"k": "1"}}),
            "ConfigMap",
        )
        .unwrap();
        let b = with_hash(
            &json!({"metadata": {"name": "x"}, "data": {"k": "2"}}),
            "ConfigMap",
        )
        .unwrap();
        let hash = |v: &Value| v["metadata"]["annotations"][APPLIED_HASH_ANNOTATION].clone();
        assert!(hash(&a).is_string());
        assert_ne!(hash(&a), hash(&b));
        // A live object lacking a removed key still differs by its hash.
        assert!(!is_subset(&b, &a));
    }
}
