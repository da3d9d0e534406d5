//! The `ConfigMap` `<name>-config-<hash>` holding a revision's config data.
//!
//! One per distinct config, immutable, named by the hash of its data: pods
//! of one revision never see another's config, and a rollback finds its
//! config exactly as it was. It exists even when empty, so that the pod
//! template can load it with `envFrom` without a special case. The applier
//! deletes the ones no kept revision uses.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::meta::{Owner, non_empty, short_hash};

/// Name of the `ConfigMap` holding `data` for the `GoServer` `name`.
pub fn config_map_name(name: &str, data: &BTreeMap<String, String>) -> String {
    // Serializing a map of strings cannot fail.
    let bytes = serde_json::to_vec(data).unwrap_or_default();
    format!("{}{}", config_map_prefix(name), short_hash(&bytes, 10))
}

/// What the names of every `ConfigMap` of the `GoServer` `name` start with.
pub fn config_map_prefix(name: &str) -> String {
    format!("{name}-config-")
}

pub(super) fn build(owner: &Owner<'_>, data: &BTreeMap<String, String>) -> ConfigMap {
    ConfigMap {
        metadata: owner.meta(&config_map_name(owner.name, data), BTreeMap::new()),
        data: non_empty(data.clone()),
        immutable: Some(true),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::super::tests::{goserver, labels, owner_refs};
    use super::*;

    #[test]
    fn config_map_holds_the_data() {
        let gs = goserver(json!({
            "image": "hello:1",
            "config": {"data": {"LOG_LEVEL": "info", "app.toml": "x = 1"}},
        }));
        let owner = Owner::of(&gs).unwrap();
        let data = gs.spec.config.clone().unwrap().data;
        assert_eq!(
            serde_json::to_value(build(&owner, &data)).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": config_map_name("hello", &data),
                    "namespace": "web",
                    "labels": labels(),
                    "ownerReferences": owner_refs(),
                },
                "data": {"LOG_LEVEL": "info", "app.toml": "x = 1"},
                "immutable": true,
            })
        );
    }

    #[test]
    fn config_map_exists_without_config() {
        let gs = goserver(json!({"image": "hello:1"}));
        let owner = Owner::of(&gs).unwrap();
        let cm = serde_json::to_value(build(&owner, &BTreeMap::new())).unwrap();
        assert_eq!(cm.get("data"), None);
        let name = cm["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("hello-config-"), "{name}");
        assert_eq!(name.len(), "hello-config-".len() + 10);
        assert_ne!(
            name,
            config_map_name("hello", &BTreeMap::from([("A".to_owned(), "1".to_owned())]))
        );
    }
}
