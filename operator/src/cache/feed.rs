//! How a cache is fed: a watch per kind, compacted into [`Cached`]
//! objects, retried with a capped, jittered doubling backoff; the `GoServer` watch.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::serde::Serialize;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::watcher::ExponentialBackoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use super::store::{Cached, CachedKind, ChildStream, MetadataKind};
use crate::build::{FIELD_MANAGER, MANAGED_BY, MANAGED_BY_LABEL};
use crate::crd::GoServer;
use crate::error::Result;

/// A store of gantry's `K` children kept as [`Cached`], and the stream
/// that fills it.
pub(crate) fn cached<K>(
    client: &Client,
    namespace: Option<&str>,
    trim: fn(&mut K),
) -> (Store<Cached<K>>, ChildStream<Cached<K>>)
where
    K: CachedKind,
{
    cached_with(client, namespace, children(), trim)
}

/// A store of every `K` in `namespace` (all when `None`), gantry's or
/// not, kept as [`Cached`], and the stream that fills it: for kinds the
/// operator reads but does not own, such as the Gateways its routes attach
/// to.
pub(crate) fn cached_unowned<K>(
    client: &Client,
    namespace: Option<&str>,
    trim: fn(&mut K),
) -> (Store<Cached<K>>, ChildStream<Cached<K>>)
where
    K: CachedKind,
{
    let every = watcher::Config::default().page_size(LIST_PAGE_SIZE);
    cached_with(client, namespace, every, trim)
}

pub(super) fn cached_with<K>(
    client: &Client,
    namespace: Option<&str>,
    config: watcher::Config,
    trim: fn(&mut K),
) -> (Store<Cached<K>>, ChildStream<Cached<K>>)
where
    K: CachedKind,
{
    reflected(
        watcher(api(client, namespace), config)
            .backoff(watch_backoff())
            .modify(trim)
            .map(|event| event.and_then(compact)),
    )
}

/// The metadata of every `K` (an `Api` of `PartialObjectMeta` lists and
/// watches metadata only), and the stream that fills it.
pub(super) fn metadata_only<K>(
    client: &Client,
    namespace: Option<&str>,
) -> (
    Store<PartialObjectMeta<K>>,
    ChildStream<PartialObjectMeta<K>>,
)
where
    K: MetadataKind,
{
    reflected(
        watcher(api(client, namespace), children())
            .backoff(watch_backoff())
            .modify(drop_managed_fields),
    )
}

/// A store filled by `events`, and the stream of the objects they touch
/// (deleted ones too, so a deleted child triggers its owner).
pub(super) fn reflected<C>(
    events: impl Stream<Item = Result<watcher::Event<C>, watcher::Error>> + Send + 'static,
) -> (Store<C>, ChildStream<C>)
where
    C: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let touched = touched_after_relists(events.reflect(writer), reader.clone());
    (reader, touched)
}

/// The objects `events` touch, where the objects of a list (the first one,
/// or a relist after a watch expired) are told only once the store holds
/// the whole list, together with the objects the list no longer has.
///
/// kube's `touched_objects` tells each listed object as it arrives, while
/// the store still shows the previous list until the new one is complete:
/// a reconcile it triggers reads the old object and nothing triggers
/// another one. After an apiserver restart every watch relists, and a
/// finished rollout or a spec change made meanwhile went unseen (found by
/// the control-plane restart test). An object deleted while the watch was
/// down is in no event at all; comparing the lists tells its owner.
pub(super) fn touched_after_relists<C>(
    events: impl Stream<Item = Result<watcher::Event<C>, watcher::Error>> + Send + 'static,
    store: Store<C>,
) -> ChildStream<C>
where
    C: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    use watcher::Event;
    let mut listed: Vec<C> = Vec::new();
    let mut before: Vec<Arc<C>> = Vec::new();
    events
        .flat_map(move |event| {
            let told: Vec<Result<C, watcher::Error>> = match event {
                Ok(Event::Apply(object) | Event::Delete(object)) => vec![Ok(object)],
                Ok(Event::Init) => {
                    before = store.state();
                    listed.clear();
                    Vec::new()
                }
                Ok(Event::InitApply(object)) => {
                    listed.push(object);
                    Vec::new()
                }
                Ok(Event::InitDone) => {
                    let now: std::collections::HashSet<ObjectRef<C>> =
                        listed.iter().map(ObjectRef::from_obj).collect();
                    let gone: Vec<C> = before
                        .drain(..)
                        .filter(|old| !now.contains(&ObjectRef::from_obj(old.as_ref())))
                        .map(|old| old.as_ref().clone())
                        .collect();
                    listed.drain(..).chain(gone).map(Ok).collect()
                }
                Err(err) => vec![Err(err)],
            };
            futures::stream::iter(told)
        })
        .boxed()
}

pub(super) fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The delays between a watch's retries: 125 ms doubling to 2.5 s, each
/// stretched by a random part of up to as much again (so at most 5 s, and
/// watches refused together do not retry together); back to the start once
/// 10 s pass without an error.
///
/// kube's default (800 ms doubling to 30 s, with jitter, reset only after
/// 120 s without an error) climbs to its ceiling during the few seconds an
/// apiserver restarts, since every retry is refused, and then keeps the
/// operator blind for up to a minute after the apiserver is back: the
/// control-plane restart test saw a spec change go unseen for longer than
/// its 90 s deadline. Five seconds caps what a restart costs; a watch that
/// keeps failing still retries no more than every 2.5 to 5 seconds.
pub(super) fn watch_backoff() -> ResetTimerBackoff<ExponentialBackoff> {
    ResetTimerBackoff::new(watch_delays(), WATCH_RETRY_RESET)
}

/// The doubling, jittered part of [`watch_backoff`].
fn watch_delays() -> ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(WATCH_RETRY_FIRST)
        .with_max_delay(WATCH_RETRY_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

const WATCH_RETRY_FIRST: Duration = Duration::from_millis(125);

const WATCH_RETRY_MAX: Duration = Duration::from_millis(2500);

const WATCH_RETRY_RESET: Duration = Duration::from_secs(10);

/// The controller's backoff for its merged trigger streams: none, since
/// every watch already backs off on its own ([`watch_backoff`]).
///
/// kube's controller puts its default backoff (800 ms doubling to 30 s)
/// over the merge of all its watches: an error from any one pauses every
/// one, and errors from all of them climb the same ladder. After an
/// apiserver restart each of the seven watches reports its expired
/// resource version in turn, and the last one was read some eighty
/// seconds later, with every change meanwhile unseen (found by the
/// control-plane restart test).
pub struct NoTriggerBackoff;

impl Iterator for NoTriggerBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl Backoff for NoTriggerBackoff {
    fn reset(&mut self) {}
}

/// Watches gantry's children only.
pub(super) fn children() -> watcher::Config {
    watcher::Config::default()
        .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"))
        .page_size(LIST_PAGE_SIZE)
}

/// Objects per page of a list. Each page is held twice while it is read
/// (its text and the objects it decodes to, `managedFields` and all), and
/// seven lists run at once at start; with kube's default of 500 that is
/// the operator's peak memory.
const LIST_PAGE_SIZE: u32 = 100;

/// A watch event with its object turned into [`Cached`]. An object that
/// cannot be serialized (none can fail) ends the watch with an error,
/// which the backoff restarts.
pub(super) fn compact<K>(
    event: watcher::Event<K>,
) -> Result<watcher::Event<Cached<K>>, watcher::Error>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
{
    use watcher::Event;
    let cached = |object: K| {
        Cached::new(object)
            .map_err(|err| watcher::Error::WatchFailed(kube::Error::Service(Box::new(err))))
    };
    Ok(match event {
        Event::Apply(object) => Event::Apply(cached(object)?),
        Event::Delete(object) => Event::Delete(cached(object)?),
        Event::Init => Event::Init,
        Event::InitApply(object) => Event::InitApply(cached(object)?),
        Event::InitDone => Event::InitDone,
    })
}

/// The `GoServer` store and the stream that fills it, for
/// `Controller::for_stream`: objects as [`GoServer`]s are delivered, less
/// what the reconcile never reads (`managedFields` and kubectl's copy of the
/// last applied object, together often larger than the spec).
pub fn goservers(
    client: &Client,
    namespace: Option<&str>,
) -> (Store<GoServer>, ChildStream<GoServer>) {
    // Deleted ones too: the controller skips an object its store no
    // longer has.
    reflected(
        watcher(
            api::<GoServer>(client, namespace),
            watcher::Config::default().page_size(LIST_PAGE_SIZE),
        )
        .backoff(watch_backoff())
        .modify(trim_goserver),
    )
}

/// Annotation in which client-side `kubectl apply` keeps the whole object.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

pub(super) fn trim_goserver(gs: &mut GoServer) {
    drop_managed_fields(gs);
    if let Some(annotations) = gs.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

pub(crate) fn drop_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// Keeps only what gantry's own apply entry says about `spec.replicas`,
/// whether gantry still owns it (see the replica handover in
/// [`crate::apply`]). The whole entry lists every field of the pod
/// template, about 19 KiB per Deployment once decoded.
pub(super) fn keep_own_apply_entry(deployment: &mut Deployment) {
    let fields = deployment.managed_fields_mut();
    fields.retain(|entry| {
        entry.manager.as_deref() == Some(FIELD_MANAGER)
            && entry.operation.as_deref() == Some("Apply")
    });
    for entry in fields {
        if let Some(owned) = entry.fields_v1.as_mut() {
            let replicas = owned.0.pointer("/f:spec/f:replicas").is_some();
            owned.0 = if replicas {
                serde_json::json!({"f:spec": {"f:replicas": {}}})
            } else {
                serde_json::json!({})
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Service};
    use serde_json::json;

    fn config_map(name: &str, version: &str) -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "web", "resourceVersion": version},
        }))
        .unwrap()
    }

    /// A relist is told once the store holds all of it, with what it no
    /// longer has; each object told is what the store has by then.
    #[tokio::test]
    async fn listed_objects_are_told_once_the_store_holds_the_list() {
        use watcher::Event;
        let events = futures::stream::iter(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(config_map("a", "1"))),
            Ok(Event::InitApply(config_map("b", "2"))),
            Ok(Event::InitDone),
            Ok(Event::Apply(config_map("a", "3"))),
            // The watch expired: a relist, without b, deleted meanwhile.
            Ok(Event::Init),
            Ok(Event::InitApply(config_map("a", "5"))),
            Ok(Event::InitDone),
        ]);
        let (store, touched) = reflected(events);
        let mut told = Vec::new();
        let mut touched = touched;
        while let Some(object) = touched.next().await {
            let object = object.unwrap();
            let stored = store
                .get(&ObjectRef::from_obj(&object))
                .map(|s| s.resource_version());
            told.push((object.name_any(), object.resource_version(), stored));
        }
        let version = |v: &str| Some(v.to_owned());
        assert_eq!(
            told,
            [
                ("a".to_owned(), version("1"), Some(version("1"))),
                ("b".to_owned(), version("2"), Some(version("2"))),
                ("a".to_owned(), version("3"), Some(version("3"))),
                ("a".to_owned(), version("5"), Some(version("5"))),
                // Gone from the store, told so that its owner looks.
                ("b".to_owned(), version("2"), None),
            ]
        );
    }

    #[test]
    fn watch_retries_double_with_jitter_to_at_most_five_seconds_and_start_over() {
        let mut delays = watch_delays();
        for round in 0..3 {
            for base in [125, 250, 500, 1000, 2000, 2500, 2500, 2500] {
                let delay = delays.next().unwrap();
                let (low, high) = (Duration::from_millis(base), Duration::from_millis(2 * base));
                assert!(
                    delay >= low && delay < high,
                    "round {round}: {delay:?} is not in [{low:?}, {high:?})"
                );
            }
            delays.reset();
        }
    }

    #[test]
    fn only_gantrys_apply_entry_is_kept() {
        let mut deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "managedFields": [
                {"manager": "gantry", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {}}}}},
                {"manager": "gantry", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}},
                {"manager": "kube-controller-manager", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}},
            ]},
        }))
        .unwrap();
        keep_own_apply_entry(&mut deployment);
        assert!(crate::apply::owns_replicas(&deployment, FIELD_MANAGER));
        let kept = deployment.managed_fields()[0].fields_v1.as_ref().unwrap();
        assert_eq!(kept.0, json!({"f:spec": {"f:replicas": {}}}));
        let managers: Vec<_> = deployment
            .managed_fields()
            .iter()
            .map(|e| (e.manager.clone(), e.operation.clone()))
            .collect();
        assert_eq!(
            managers,
            vec![(Some("gantry".to_owned()), Some("Apply".to_owned()))]
        );

        let mut autoscaled: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "managedFields": [
                {"manager": "gantry", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:template": {}}}},
            ]},
        }))
        .unwrap();
        keep_own_apply_entry(&mut autoscaled);
        assert!(!crate::apply::owns_replicas(&autoscaled, FIELD_MANAGER));

        let mut service: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "managedFields": [{"manager": "gantry", "operation": "Apply"}]},
        }))
        .unwrap();
        drop_managed_fields(&mut service);
        assert!(service.metadata.managed_fields.is_none());
    }
}
