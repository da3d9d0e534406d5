//! The controller's caches of the children it owns.
//!
//! One watch per child kind (filtered by the `app.kubernetes.io/managed-by`
//! label) feeds a reflector store and, through the same stream, triggers the
//! reconcile of the owning `GoServer`. Because the store is written before
//! the event reaches the controller, a reconcile triggered by a child event
//! always sees that child at least as new as the event. The applier compares
//! desired children with these stores and asks the apiserver only when an
//! object is not cached (see [`crate::apply`]).
//!
//! `GoServers` are cached the same way ([`goservers`]), for the controller.
//!
//! Cached objects drop `managedFields` (the bulk of a stored object) except
//! the one entry the replica handover reads: gantry's own apply entry on
//! Deployments. `ControllerRevisions` are cached as metadata only: their
//! data (a whole pod template) is read once, on a rollback.

use std::borrow::Cow;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::serde::Serialize;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::apply::FIELD_MANAGER;
use crate::build::{MANAGED_BY, MANAGED_BY_LABEL, ServiceMonitor};
use crate::crd::GoServer;
use crate::error::{Error, Result};
use crate::gateway::{self, Gateway, HttpRoute};
use crate::optional::{OptionalKind, OptionalStreams};

/// Read handles of every child store.
#[derive(Clone)]
pub struct Caches {
    pub deployments: Store<Cached<Deployment>>,
    pub services: Store<Cached<Service>>,
    pub config_maps: Store<Cached<ConfigMap>>,
    pub ingresses: Store<Cached<Ingress>>,
    pub hpas: Store<Cached<HorizontalPodAutoscaler>>,
    pub revisions: Store<PartialObjectMeta<ControllerRevision>>,
    /// Not waited for: the cluster may not serve the kind.
    pub service_monitors: OptionalKind<ServiceMonitor>,
    /// Not waited for: the cluster may not serve the kind.
    pub routes: OptionalKind<HttpRoute>,
    /// Every Gateway, not only gantry's (it makes none): their listeners
    /// give a route's scheme. Not waited for.
    pub gateways: OptionalKind<Gateway>,
}

/// A child event stream that writes its store as it goes, ready for
/// `Controller::watches_stream`.
pub type ChildStream<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

/// The watch streams that fill [`Caches`]; each must be handed to the
/// controller, which drives it.
pub struct Streams {
    pub deployments: ChildStream<Cached<Deployment>>,
    pub services: ChildStream<Cached<Service>>,
    pub config_maps: ChildStream<Cached<ConfigMap>>,
    pub ingresses: ChildStream<Cached<Ingress>>,
    pub hpas: ChildStream<Cached<HorizontalPodAutoscaler>>,
    pub revisions: ChildStream<PartialObjectMeta<ControllerRevision>>,
    pub service_monitors: OptionalStreams<ServiceMonitor>,
    pub routes: OptionalStreams<HttpRoute>,
    pub gateways: OptionalStreams<Gateway>,
}

impl Caches {
    /// Stores for every child kind in `namespace` (all namespaces when
    /// `None`), and the streams that fill them.
    pub fn new(client: &Client, namespace: Option<&str>) -> (Self, Streams) {
        let (deployments, deployment_stream) = cached(client, namespace, keep_own_apply_entry);
        let (services, service_stream) = cached(client, namespace, drop_managed_fields);
        let (config_maps, config_map_stream) = cached(client, namespace, drop_managed_fields);
        let (ingresses, ingress_stream) = cached(client, namespace, drop_managed_fields);
        let (hpas, hpa_stream) = cached(client, namespace, drop_managed_fields);
        let (revisions, revision_stream) = metadata_only(client, namespace);
        let (service_monitors, service_monitor_streams) = OptionalKind::new(client, namespace);
        let (routes, route_streams) = OptionalKind::new(client, namespace);
        // In the watched namespaces only, like everything else: with one
        // watched namespace, the operator sees nothing outside it, so a
        // Gateway elsewhere counts as HTTP.
        let (gateways, gateway_streams) = OptionalKind::unowned(client, namespace, gateway::trim);
        (
            Self {
                deployments,
                services,
                config_maps,
                ingresses,
                hpas,
                revisions,
                service_monitors,
                routes,
                gateways,
            },
            Streams {
                deployments: deployment_stream,
                services: service_stream,
                config_maps: config_map_stream,
                ingresses: ingress_stream,
                hpas: hpa_stream,
                revisions: revision_stream,
                service_monitors: service_monitor_streams,
                routes: route_streams,
                gateways: gateway_streams,
            },
        )
    }

    /// Waits until every store has listed its objects once. Optional
    /// kinds are not waited for (see [`crate::optional`]).
    ///
    /// kube-runtime's readiness sits behind a one-shot channel that wakes
    /// only the last task to poll it; asking again in a loop finds the value
    /// once anyone has seen it. Returns `false` if a store's writer is gone
    /// (the controller stopped) before it became ready.
    pub async fn wait_until_ready(&self) -> bool {
        let Self {
            deployments,
            services,
            config_maps,
            ingresses,
            hpas,
            revisions,
            service_monitors: _,
            routes: _,
            gateways: _,
        } = self;
        ready(deployments).await
            && ready(services).await
            && ready(config_maps).await
            && ready(ingresses).await
            && ready(hpas).await
            && ready(revisions).await
    }
}

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

/// A namespaced kind the caches hold as [`Cached`]: what its watch, its
/// store and its compact form need.
pub trait CachedKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> CachedKind for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

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

fn cached_with<K>(
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
fn metadata_only<K>(
    client: &Client,
    namespace: Option<&str>,
) -> (
    Store<PartialObjectMeta<K>>,
    ChildStream<PartialObjectMeta<K>>,
)
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    reflected(
        watcher(api(client, namespace), children())
            .backoff(watch_backoff())
            .modify(drop_managed_fields),
    )
}

/// A store filled by `events`, and the stream of the objects they touch
/// (deleted ones too, so a deleted child triggers its owner).
fn reflected<C>(
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
fn touched_after_relists<C>(
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

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The delays between a watch's retries: 250 ms doubling to 5 s, back to
/// 250 ms once 10 s pass without an error.
///
/// kube's default (800 ms doubling to 30 s, with jitter, reset only after
/// 120 s without an error) climbs to its ceiling during the few seconds an
/// apiserver restarts, since every retry is refused, and then keeps the
/// operator blind for up to a minute after the apiserver is back: the
/// control-plane restart test saw a spec change go unseen for longer than
/// its 90 s deadline. Five seconds caps what a restart costs; a watch that
/// keeps failing still retries no more than every five seconds.
fn watch_backoff() -> ResetTimerBackoff<Doubling> {
    ResetTimerBackoff::new(Doubling::default(), WATCH_RETRY_RESET)
}

const WATCH_RETRY_FIRST: Duration = Duration::from_millis(250);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(5);
const WATCH_RETRY_RESET: Duration = Duration::from_secs(10);

/// Delays that double from [`WATCH_RETRY_FIRST`] up to [`WATCH_RETRY_MAX`].
pub struct Doubling {
    next: Duration,
}

impl Default for Doubling {
    fn default() -> Self {
        Self {
            next: WATCH_RETRY_FIRST,
        }
    }
}

impl Iterator for Doubling {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (delay * 2).min(WATCH_RETRY_MAX);
        Some(delay)
    }
}

impl Backoff for Doubling {
    fn reset(&mut self) {
        self.next = WATCH_RETRY_FIRST;
    }
}

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
fn children() -> watcher::Config {
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
fn compact<K>(event: watcher::Event<K>) -> Result<watcher::Event<Cached<K>>, watcher::Error>
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

fn trim_goserver(gs: &mut GoServer) {
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
fn keep_own_apply_entry(deployment: &mut Deployment) {
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
    use serde_json::json;

    use super::*;

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
    fn watch_retries_double_to_five_seconds_and_start_over() {
        let mut delays = Doubling::default();
        let first: Vec<u64> = delays
            .by_ref()
            .take(7)
            .map(|d| u64::try_from(d.as_millis()).unwrap())
            .collect();
        assert_eq!(first, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        delays.reset();
        assert_eq!(delays.next(), Some(Duration::from_millis(250)));
    }

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
