//! The applier itself: the client, the caches and the `GoServer` whose
//! children it applies.

use kube::{Api, Client, Resource};

use super::written::Written;
use crate::cache::Caches;
use crate::crd::GoServer;
use crate::error::{Error, Result};

/// Applies the children of one `GoServer`.
pub struct Applier<'a> {
    pub client: &'a Client,
    pub caches: &'a Caches,
    pub written: &'a Written,
    pub gs: &'a GoServer,
}

impl Applier<'_> {
    pub(super) fn namespace(&self) -> Result<&str> {
        self.gs
            .metadata
            .namespace
            .as_deref()
            .ok_or(Error::MissingObjectKey("namespace"))
    }

    /// Whether no reconcile of this `GoServer` has written its status yet.
    pub(super) fn never_reconciled(&self) -> bool {
        self.gs
            .status
            .as_ref()
            .is_none_or(|s| s.observed_generation.is_none())
    }

    pub(super) fn api<K>(&self) -> Result<Api<K>>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Ok(Api::namespaced(self.client.clone(), self.namespace()?))
    }
}
