//! Apply a child: plan (nothing, create, apply) from the cache, then
//! execute the plan.

use std::fmt::Debug;

use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::Value;
use tracing::{debug, info};

use super::applier::Applier;
use super::change::{Action, Change};
use super::diff::{difference, with_hash};
use super::written::Written;
use crate::build::FIELD_MANAGER;
use crate::cache::{self, Cached};
use crate::error::{Error, Result};

/// What the applier can apply: a namespaced kind it serializes, compares
/// and reads back.
pub trait Child:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
{
}

impl<K> Child for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
{
}

/// What [`Applier::plan`] decided for one child.
pub(super) enum Plan<K> {
    /// Up to date (or the cache is behind our own write): the live object.
    Keep(K),
    /// Apply `body`; `live` is what exists now, if anything.
    Apply {
        live: Option<K>,
        body: Value,
        hash: String,
        key: String,
    },
}

impl Applier<'_> {
    pub(super) async fn apply_child<K>(
        &self,
        store: &Store<Cached<K>>,
        desired: &K,
        changes: &mut Vec<Change>,
    ) -> Result<K>
    where
        K: Child,
    {
        let plan = self.plan(store, desired).await?;
        self.execute(plan, desired, changes).await
    }

    /// Decides whether `desired` must be applied, from the cache, or from
    /// one GET when the cache does not have it.
    pub(super) async fn plan<K>(&self, store: &Store<Cached<K>>, desired: &K) -> Result<Plan<K>>
    where
        K: Child,
    {
        let kind = cache::static_kind::<K>();
        let name = desired.name_any();
        let namespace = self.namespace()?;
        let (body, hash) = with_hash(desired, kind)?;
        let key = Written::key::<K>(namespace, &name);
        let live = match cache::get(store, namespace, &name)? {
            Some(cached) => {
                if self
                    .written
                    .cache_is_behind(&key, &hash, cached.resource_version().as_deref())
                {
                    debug!(%kind, child = %name, "cache behind our own write, not applying again");
                    return Ok(Plan::Keep(cached));
                }
                Some(cached)
            }
            // A `GoServer` never reconciled before has no children yet,
            // unless we just wrote them: nothing to ask (six GETs saved on
            // every create).
            None if self.never_reconciled() && !self.written.has(&key) => None,
            None => self
                .api::<K>()?
                .get_opt(&name)
                .await
                .map_err(|e| Error::kube(format!("get {kind} {name}"), e))?,
        };
        if let Some(live) = &live {
            let live_json =
                serde_json::to_value(live).map_err(|source| Error::Serialize { kind, source })?;
            match difference(&body, &live_json, "", false) {
                None => {
                    self.written.forget(&key);
                    return Ok(Plan::Keep(live.clone()));
                }
                Some(path) => debug!(%kind, child = %name, field = %path, "child differs"),
            }
        }
        Ok(Plan::Apply {
            live,
            body,
            hash,
            key,
        })
    }

    pub(super) async fn execute<K>(
        &self,
        plan: Plan<K>,
        desired: &K,
        changes: &mut Vec<Change>,
    ) -> Result<K>
    where
        K: Child,
    {
        let (live, body, hash, key) = match plan {
            Plan::Keep(live) => return Ok(live),
            Plan::Apply {
                live,
                body,
                hash,
                key,
            } => (live, body, hash, key),
        };
        let kind = cache::static_kind::<K>();
        let name = desired.name_any();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let applied = self
            .api::<K>()?
            .patch(&name, &params, &Patch::Apply(&body))
            .await
            .map_err(|e| Error::from_write(kind, &name, e))?;
        let before = live.as_ref().and_then(ResourceExt::resource_version);
        self.written.record(key, hash, before);
        let action = if live.is_some() {
            Action::Updated
        } else {
            Action::Created
        };
        info!(%kind, child = %name, action = action.as_str(), "child applied");
        changes.push(Change::of::<K>(action, self.namespace()?, &name));
        Ok(applied)
    }
}
