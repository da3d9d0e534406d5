//! How a desired child compares with the live one: the hash of its
//! desired form, and whether every desired field is there.

use serde::Serialize;
use serde_json::Value;

use crate::build::short_hash;
use crate::error::{Error, Result};

/// Annotation holding the hash of the desired object last applied.
pub const APPLIED_HASH_ANNOTATION: &str = "gantry.dev/applied-hash";

/// The desired object as JSON with its hash annotation, and the hash.
pub(super) fn with_hash<K: Serialize>(desired: &K, kind: &'static str) -> Result<(Value, String)> {
    let mut body =
        serde_json::to_value(desired).map_err(|source| Error::Serialize { kind, source })?;
    let bytes = serde_json::to_vec(&body).map_err(|source| Error::Serialize { kind, source })?;
    let hash = short_hash(&bytes, 16);
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(
                APPLIED_HASH_ANNOTATION.to_owned(),
                Value::String(hash.clone()),
            );
        }
    }
    Ok((body, hash))
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
        let (a, hash_a) = with_hash(
            &json!({"metadata": {"name": "x"}, "data": {"k": "1"}}),
            "ConfigMap",
        )
        .unwrap();
        let (b, hash_b) = with_hash(
            &json!({"metadata": {"name": "x"}, "data": {"k": "2"}}),
            "ConfigMap",
        )
        .unwrap();
        let hash = |v: &Value| v["metadata"]["annotations"][APPLIED_HASH_ANNOTATION].clone();
        assert_eq!(hash(&a), json!(hash_a));
        assert_ne!(hash_a, hash_b);
        // A live object lacking a removed key still differs by its hash.
        assert!(!is_subset(&b, &a));
    }
}
