//! The `ConfigMap` `<name>-config` holding `spec.config.data`.
//!
//! It always exists, even when empty, so that the pod template can load it
//! with `envFrom` without a special case.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{Owner, non_empty};
use crate::crd::GoServer;

/// Name of the `ConfigMap` of the `GoServer` `name`.
pub fn config_map_name(name: &str) -> String {
    format!("{name}-config")
}

pub(super) fn build(gs: &GoServer, owner: &Owner<'_>) -> ConfigMap {
    let data = gs
        .spec
        .config
        .as_ref()
        .map(|c| c.data.clone())
        .unwrap_or_default();
    ConfigMap {
        metadata: owner.meta(&config_map_name(owner.name), BTreeMap::new()),
        data: non_empty(data),
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
        assert_eq!(
            serde_json::to_value(build(&gs, &owner)).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "hello-config",
                    "namespace": "web",
                    "labels": labels(),
                    "ownerReferences": owner_refs(),
                },
                "data": {"LOG_LEVEL": "info", "app.toml": "x = 1"},
            })
        );
    }

    #[test]
    fn config_map_exists_without_config() {
        let gs = goserver(json!({"image": "hello:1"}));
        let owner = Owner::of(&gs).unwrap();
        let cm = serde_json::to_value(build(&gs, &owner)).unwrap();
        assert_eq!(cm.get("data"), None);
        assert_eq!(cm["metadata"]["name"], "hello-config");
    }
}
