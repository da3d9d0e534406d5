//! Children of a kind the cluster may not serve: one defined by another
//! project's CRD, such as prometheus-operator's `ServiceMonitor`.
//!
//! A watch of a kind the apiserver does not serve fails until the kind
//! appears, and its store never becomes ready; the controller must neither
//! wait for it nor log its failures every few seconds. An [`OptionalKind`]
//! asks discovery (which every authenticated client may read) every
//! [`POLL`] whether the kind is served, starts its watch only once it is,
//! and keeps asking afterwards, so a CRD installed or removed later is seen
//! without a restart. Each change, once the store has listed, triggers a
//! reconcile of every `GoServer` (`Controller::reconcile_all_on`), so that
//! those that want the child get it, or are told why not.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use kube::runtime::reflector::Store;
use kube::{Client, Resource};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::feed;
use super::store::{self, Cached, CachedKind, ChildStream};

/// How often discovery is asked whether the kind is served.
pub const POLL: Duration = Duration::from_secs(10);

/// Whether the apiserver serves the kind, as last asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Served {
    NotAsked,
    No,
    Yes,
}

/// What a reconcile may do with the kind now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Not known yet: discovery has not answered, or the watch has not
    /// listed. Wait for the reconcile that follows.
    Pending,
    /// The cluster does not serve the kind.
    Missing,
    /// Served and cached: apply and prune as usual.
    Ready,
}

/// A cache of one optional kind and what is known of its presence.
pub struct OptionalKind<K: Resource<DynamicType = ()> + 'static> {
    pub store: Store<Cached<K>>,
    served: watch::Receiver<Served>,
}

impl<K: Resource<DynamicType = ()> + 'static> Clone for OptionalKind<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            served: self.served.clone(),
        }
    }
}

/// The streams an [`OptionalKind`] needs driven: its child events (for
/// `watches_stream`) and its changes of presence (for `reconcile_all_on`).
pub struct OptionalStreams<K> {
    pub children: ChildStream<Cached<K>>,
    pub changes: BoxStream<'static, ()>,
}

impl<K> OptionalKind<K>
where
    K: CachedKind,
{
    /// A cache of gantry's `K` children in `namespace` (all when `None`),
    /// empty until the kind is served, and the streams that drive it.
    pub fn new(client: &Client, namespace: Option<&str>) -> (Self, OptionalStreams<K>) {
        let cache = feed::cached::<K>(client, namespace, feed::drop_managed_fields);
        Self::of(client, cache)
    }

    /// A cache of every `K` in `namespace` (all when `None`), gantry's or
    /// not, as `trim` leaves it: for a kind the operator reads but does
    /// not own.
    pub fn unowned(
        client: &Client,
        namespace: Option<&str>,
        trim: fn(&mut K),
    ) -> (Self, OptionalStreams<K>) {
        Self::of(client, feed::cached_unowned::<K>(client, namespace, trim))
    }

    fn of(
        client: &Client,
        (store, events): (Store<Cached<K>>, ChildStream<Cached<K>>),
    ) -> (Self, OptionalStreams<K>) {
        let (tell, served) = watch::channel(Served::NotAsked);
        let mut opened = served.clone();
        let gate = async move {
            // An error means the sender is gone: nothing will open the
            // gate, and the stream stays empty.
            let _ = opened.wait_for(|s| *s == Served::Yes).await;
        };
        let children = futures::stream::once(gate)
            .filter_map(|()| std::future::ready(None))
            .chain(events)
            .boxed();
        let changes = watch_presence::<K>(client.clone(), tell, store.clone()).boxed();
        (
            Self { store, served },
            OptionalStreams { children, changes },
        )
    }

    /// What a reconcile may do with the kind now.
    pub fn presence(&self) -> Presence {
        match *self.served.borrow() {
            Served::NotAsked => Presence::Pending,
            Served::No => Presence::Missing,
            Served::Yes => match self.store.wait_until_ready().now_or_never() {
                Some(Ok(())) => Presence::Ready,
                _ => Presence::Pending,
            },
        }
    }
}

/// `group/version` and plural of `K`, as discovery names them.
pub fn api_resource<K: Resource<DynamicType = ()>>() -> (String, String) {
    (
        K::api_version(&()).into_owned(),
        K::plural(&()).into_owned(),
    )
}

/// Asks discovery every [`POLL`]; yields once per change of presence, after
/// the store has listed when the kind became served.
fn watch_presence<K>(
    client: Client,
    tell: watch::Sender<Served>,
    store: Store<Cached<K>>,
) -> impl futures::Stream<Item = ()> + Send
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    futures::stream::unfold((client, tell, store), |(client, tell, store)| async move {
        let (api_version, plural) = api_resource::<K>();
        loop {
            let last = *tell.borrow();
            let now = match served(&client, &api_version, &plural).await {
                Ok(now) => now,
                Err(err) => {
                    // An apiserver that does not answer tells nothing
                    // about the kind: keep what is known.
                    debug!(%api_version, %plural, error = %err, "discovery failed");
                    last
                }
            };
            if now != last {
                if now == Served::Yes {
                    info!(%api_version, %plural, "optional kind served, watching it");
                } else if last == Served::Yes {
                    warn!(%api_version, %plural, "optional kind no longer served");
                } else {
                    info!(%api_version, %plural, "optional kind not served");
                }
                tell.send_replace(now);
                if now == Served::Yes && !store::ready(&store).await {
                    return None;
                }
                return Some(((), (client, tell, store)));
            }
            tokio::time::sleep(POLL).await;
        }
    })
}

/// Whether discovery lists `plural` in `api_version`.
async fn served(client: &Client, api_version: &str, plural: &str) -> kube::Result<Served> {
    match client.list_api_group_resources(api_version).await {
        Ok(list) => Ok(if list.resources.iter().any(|r| r.name == plural) {
            Served::Yes
        } else {
            Served::No
        }),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Served::No),
        Err(err) => Err(err),
    }
}
