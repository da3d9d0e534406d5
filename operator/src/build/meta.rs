//! What every child shares: Gantry's labels and field manager, the owner
//! reference, names and hashes.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use sha2::{Digest, Sha256};

use crate::crd::GoServer;
use crate::error::{Error, Result};

/// Label keys Gantry sets on every child.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Value of `app.kubernetes.io/managed-by`; the operator watches children
/// by this label.
pub const MANAGED_BY: &str = "gantry";
/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "gantry";

/// Labels that select the server's pods. Never change them for an existing
/// `GoServer`: a Deployment's selector is immutable.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), name.to_owned()),
        (INSTANCE_LABEL.to_owned(), name.to_owned()),
    ])
}

/// Labels on every child and pod.
pub fn labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(name);
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    labels.insert(COMPONENT_LABEL.to_owned(), "server".to_owned());
    labels
}

/// The pod selector in the string form of the scale subresource.
pub fn selector_string(name: &str) -> String {
    selector_labels(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Name, namespace and owner reference every child shares.
pub(crate) struct Owner<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    reference: OwnerReference,
}

impl<'a> Owner<'a> {
    pub fn of(gs: &'a GoServer) -> Result<Self> {
        let name = gs
            .metadata
            .name
            .as_deref()
            .ok_or(Error::MissingObjectKey("name"))?;
        let namespace = gs
            .metadata
            .namespace
            .as_deref()
            .ok_or(Error::MissingObjectKey("namespace"))?;
        let reference = gs
            .controller_owner_ref(&())
            .ok_or(Error::MissingObjectKey("uid"))?;
        Ok(Self {
            name,
            namespace,
            reference,
        })
    }

    /// Metadata of a child called `name`, labelled and owned by the `GoServer`.
    pub fn meta(&self, name: &str, annotations: BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(labels(self.name)),
            annotations: non_empty(annotations),
            owner_references: Some(vec![self.reference.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// First `len` hex digits of the SHA-256 of `bytes`.
pub(crate) fn short_hash(bytes: &[u8], len: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    Sha256::digest(bytes)
        .iter()
        .flat_map(|byte| [HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]])
        .take(len)
        .map(char::from)
        .collect()
}

pub(crate) fn non_empty<K, V>(map: BTreeMap<K, V>) -> Option<BTreeMap<K, V>> {
    if map.is_empty() { None } else { Some(map) }
}

pub(crate) fn non_empty_vec<T>(items: Vec<T>) -> Option<Vec<T>> {
    if items.is_empty() { None } else { Some(items) }
}
