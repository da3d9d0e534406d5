//! Revisions: what a `GoServer` runs, named and recorded.
//!
//! A revision is the pod template *before* the revision's own label and
//! variables are put in, plus the config data. Its name, `<name>-<10 hex>`,
//! is a hash of both, so the same spec always yields the same name and a
//! config change is a new revision. Each revision in force is recorded as an
//! `apps/v1` `ControllerRevision` owned by the `GoServer`; a rollback reads
//! the template and config back from it, so it restores exactly what ran.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{EnvVar, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde::{Deserialize, Serialize};

use super::meta::{Owner, short_hash};
use crate::error::{Error, Result};

/// Pod label naming the revision a pod belongs to. Never part of a
/// selector: selectors are immutable and a revision changes.
pub const REVISION_LABEL: &str = "gantry.dev/revision";
/// Label on `ControllerRevisions`: their order, for pruning from metadata.
pub const REVISION_NUMBER_LABEL: &str = "gantry.dev/revision-number";
/// Annotation on `ControllerRevisions`: the `ConfigMap` the revision uses,
/// so pruning can tell which are still needed without reading data.
pub const CONFIG_MAP_ANNOTATION: &str = "gantry.dev/config-map";

/// The environment variable carrying the revision name into the pod.
pub const REVISION_ENV: &str = "GANTRY_REVISION";

/// What a revision runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RevisionData {
    /// The pod template, before injection.
    pub template: PodTemplateSpec,
    /// The config data, loaded into the revision's `ConfigMap`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// A named revision.
#[derive(Clone, Debug, PartialEq)]
pub struct Revision {
    pub name: String,
    pub data: RevisionData,
}

impl Revision {
    /// Names `data` for the `GoServer` `owner`.
    pub fn new(owner: &str, data: RevisionData) -> Result<Self> {
        let bytes = serde_json::to_vec(&data).map_err(|source| Error::Serialize {
            kind: "revision",
            source,
        })?;
        Ok(Self {
            name: format!("{owner}-{}", short_hash(&bytes, 10)),
            data,
        })
    }

    /// Reads a revision back from its `ControllerRevision`.
    pub fn from_controller_revision(record: &ControllerRevision) -> Result<Self> {
        let name = record
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingObjectKey("name"))?;
        let data = record
            .data
            .as_ref()
            .map(|raw| serde_json::from_value::<RevisionData>(raw.0.clone()))
            .transpose()
            .map_err(|source| Error::Serialize {
                kind: "ControllerRevision",
                source,
            })?
            .ok_or_else(|| Error::InvalidSpec {
                field: format!("ControllerRevision {name}"),
                message: "holds no revision data".to_owned(),
            })?;
        Ok(Self { name, data })
    }

    /// The image of the server container.
    pub fn image(&self) -> String {
        self.data
            .template
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    }
}

/// The `ControllerRevision` recording `revision`, numbered `number`.
pub(super) fn controller_revision(
    owner: &Owner<'_>,
    revision: &Revision,
    number: i64,
    config_map: &str,
) -> Result<ControllerRevision> {
    let data = serde_json::to_value(&revision.data).map_err(|source| Error::Serialize {
        kind: "ControllerRevision",
        source,
    })?;
    let mut metadata = owner.meta(
        &revision.name,
        BTreeMap::from([(CONFIG_MAP_ANNOTATION.to_owned(), config_map.to_owned())]),
    );
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(REVISION_LABEL.to_owned(), revision.name.clone());
    labels.insert(REVISION_NUMBER_LABEL.to_owned(), number.to_string());
    Ok(ControllerRevision {
        metadata,
        data: Some(RawExtension(data)),
        revision: number,
    })
}

/// Puts the revision's identity into its pod template: the label that ties
/// every metric series to it, and the variables that tie traces and logs to
/// it. Variables the user set are left alone.
pub(super) fn inject(
    template: &mut PodTemplateSpec,
    revision: &str,
    service_name: &str,
    image: &str,
) {
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(REVISION_LABEL.to_owned(), revision.to_owned());
    let Some(container) = template
        .spec
        .as_mut()
        .and_then(|s| s.containers.first_mut())
    else {
        return;
    };
    let env = container.env.get_or_insert_with(Vec::new);
    let wanted = [
        (REVISION_ENV, revision.to_owned()),
        ("OTEL_SERVICE_NAME", service_name.to_owned()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            format!(
                "service.version={},gantry.revision={revision}",
                image_version(image)
            ),
        ),
    ];
    for (name, value) in wanted {
        if !env.iter().any(|e| e.name == name) {
            env.push(EnvVar {
                name: name.to_owned(),
                value: Some(value),
                ..EnvVar::default()
            });
        }
    }
}

/// The version part of an image reference: its tag, else its digest, else
/// `latest` (what a registry serves for an untagged name).
pub fn image_version(image: &str) -> &str {
    if let Some((_, digest)) = image.split_once('@') {
        return digest;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':').map_or("latest", |(_, tag)| tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_versions() {
        assert_eq!(image_version("registry.example.com/hello:1.4.2"), "1.4.2");
        assert_eq!(image_version("registry.example.com:5000/hello"), "latest");
        assert_eq!(image_version("hello"), "latest");
        assert_eq!(image_version("hello@sha256:0123abcd"), "sha256:0123abcd");
    }

    #[test]
    fn names_follow_content() {
        let data = RevisionData {
            template: PodTemplateSpec::default(),
            config: BTreeMap::from([("A".to_owned(), "1".to_owned())]),
        };
        let a = Revision::new("hello", data.clone()).unwrap();
        assert_eq!(a, Revision::new("hello", data.clone()).unwrap());
        assert_eq!(a.name.len(), "hello-".len() + 10);
        let mut other = data;
        other.config.insert("A".to_owned(), "2".to_owned());
        assert_ne!(a.name, Revision::new("hello", other).unwrap().name);
    }

    #[test]
    fn injection_keeps_what_the_user_set() {
        let mut template: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "server", "env": [{"name": "OTEL_SERVICE_NAME", "value": "mine"}]}]},
        }))
        .unwrap();
        inject(&mut template, "hello-0123456789", "hello", "hello:2");
        let value = serde_json::to_value(&template).unwrap();
        assert_eq!(
            value["metadata"]["labels"],
            serde_json::json!({"app": "x", "gantry.dev/revision": "hello-0123456789"})
        );
        assert_eq!(
            value["spec"]["containers"][0]["env"],
            serde_json::json!([
                {"name": "OTEL_SERVICE_NAME", "value": "mine"},
                {"name": "GANTRY_REVISION", "value": "hello-0123456789"},
                {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "service.version=2,gantry.revision=hello-0123456789"},
            ])
        );
    }
}
