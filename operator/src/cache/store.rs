//! What the caches hold: [`Cached`] objects (the typed object's JSON,
//! decoded on read), and reads of a store by name.

use std::borrow::Cow;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::serde::Serialize;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::Resource;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;

use crate::error::{Error, Result};

/// A child event stream that writes its store as it goes, ready for
/// `Controller::watches_stream`.
pub type ChildStream<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

/// Waits for one store (see [`Caches::wait_until_ready`]).
pub async fn ready<K>(store: &Store<K>) -> bool
where
    K: reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    // Every reconcile asks; once the store is ready that is one poll, with
    // no timer.
    if let Some(ready) = store.wait_until_ready().now_or_never() {
        return ready.is_ok();
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready()).await {
            Ok(Ok(())) => return true,
            Ok(Err(_)) => return false,
            Err(_) => {}
        }
    }
}

/// The cached entry called `name` in `namespace`, for its metadata.
pub fn lookup<C>(store: &Store<C>, namespace: &str, name: &str) -> Option<Arc<C>>
where
    C: Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

/// The cached `K` called `name` in `namespace`, if the store has it.
pub fn get<K>(store: &Store<Cached<K>>, namespace: &str, name: &str) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
{
    lookup(store, namespace, name)
        .map(|cached| cached.decode())
        .transpose()
}

/// A cached child: its metadata, and the rest of the object as compact JSON,
/// decoded when read. A Deployment takes about 3 KiB this way and about
/// 17 KiB as a k8s-openapi struct (whose many optional fields each take
/// room when empty), and a reconcile reads a handful of children: the
/// decoding costs microseconds, the structs would cost most of the
/// operator's memory at a thousand `GoServers`.
pub struct Cached<K> {
    metadata: ObjectMeta,
    rest: Arc<str>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Cached<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            rest: Arc::clone(&self.rest),
            kind: PhantomData,
        }
    }
}

impl<K> Debug for Cached<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached")
            .field("metadata", &self.metadata)
            .field("bytes", &self.rest.len())
            .finish_non_exhaustive()
    }
}

impl<K> Cached<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
{
    /// Keeps `object` as its metadata and the JSON of everything else.
    pub fn new(mut object: K) -> Result<Self> {
        let metadata = std::mem::take(object.meta_mut());
        let rest = serde_json::to_string(&object).map_err(|source| Error::Serialize {
            kind: static_kind::<K>(),
            source,
        })?;
        Ok(Self {
            metadata,
            rest: rest.into(),
            kind: PhantomData,
        })
    }

    /// The object as it was cached.
    pub fn decode(&self) -> Result<K> {
        let mut object: K =
            serde_json::from_str(&self.rest).map_err(|source| Error::Serialize {
                kind: static_kind::<K>(),
                source,
            })?;
        *object.meta_mut() = self.metadata.clone();
        Ok(object)
    }
}

/// The kind of `K` as `&'static str`, for error variants. Every kind
/// k8s-openapi and kube's derive know is a static string.
pub(crate) fn static_kind<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()) {
        Cow::Borrowed(kind) => kind,
        Cow::Owned(_) => "object",
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Cached<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A namespaced kind the caches hold as metadata only.
pub trait MetadataKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> MetadataKind for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// A namespaced kind the caches hold as [`Cached`]: what its watch, its
/// store and its compact form need.
pub trait CachedKind: MetadataKind + Serialize {}

impl<K: MetadataKind + Serialize> CachedKind for K {}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::ResourceExt;
    use serde_json::json;

    #[test]
    fn a_cached_object_decodes_to_what_was_cached() {
        let deployment: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "7",
                "labels": {"app.kubernetes.io/name": "web"},
                "ownerReferences": [{"apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer", "name": "web", "uid": "g-1", "controller": true}]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "server", "image": "web:1"}]}}},
            "status": {"readyReplicas": 1},
        }))
        .unwrap();
        let cached = Cached::new(deployment.clone()).unwrap();
        assert_eq!(cached.meta(), &deployment.metadata);
        assert_eq!(cached.resource_version().as_deref(), Some("7"));
        assert_eq!(cached.decode().unwrap(), deployment);
        assert_eq!(Cached::<Deployment>::kind(&()), "Deployment");
        assert_eq!(Cached::<Deployment>::plural(&()), "deployments");
    }
}
