//! Pruning: children the spec no longer wants are deleted, if they are
//! ours.

use std::fmt::Debug;

use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use tracing::info;

use super::applier::Applier;
use super::change::{Action, Change};
use super::guard::owned_by;
use super::written::Written;
use crate::cache::{self};
use crate::error::{Error, Result};

impl Applier<'_> {
    /// Deletes the child `name` if the cache has it and this `GoServer`
    /// controls it. The delete names the child's UID and resource version,
    /// so a child that was replaced in the meantime (the `GoServer` deleted
    /// and created again under the same name), or changed since the cache
    /// saw it (adopted by that new object, say), is never deleted on the
    /// strength of an old view; the watch event of the change brings
    /// another reconcile.
    pub(super) async fn prune<K, C>(
        &self,
        store: &Store<C>,
        name: &str,
        changes: &mut Vec<Change>,
    ) -> Result<()>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + Debug
            + DeserializeOwned,
        C: Resource<DynamicType = ()> + Clone + 'static,
    {
        let namespace = self.namespace()?;
        let owner_uid = self
            .gs
            .metadata
            .uid
            .as_deref()
            .ok_or(Error::MissingObjectKey("uid"))?;
        let Some(live) = cache::lookup(store, namespace, name) else {
            return Ok(());
        };
        let owned = owned_by(live.owner_references(), Some(owner_uid));
        if !owned || live.meta().deletion_timestamp.is_some() {
            return Ok(());
        }
        let kind = K::kind(&());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: live.uid(),
                resource_version: live.resource_version(),
            }),
            ..DeleteParams::background()
        };
        match self.api::<K>()?.delete(name, &params).await {
            Ok(_) => {}
            // Gone already, or replaced by an object with another UID: the
            // watch brings the news, and with it another reconcile.
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
                return Ok(());
            }
            Err(e) => return Err(Error::kube(format!("delete {kind} {name}"), e)),
        }
        self.written.forget(&Written::key::<K>(namespace, name));
        info!(%kind, child = %name, action = "Deleted", "child no longer wanted, deleted");
        changes.push(Change::of::<K>(Action::Deleted, namespace, name));
        Ok(())
    }
}
