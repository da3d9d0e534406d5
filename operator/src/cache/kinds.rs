//! How the table of watched kinds (in [`crate::cache`]) becomes code.
//!
//! A row of the table names a field of [`Caches`](super::Caches), the kind,
//! how its watch feeds the store (one of the [`Feed`]s below), which
//! `GoServers` an event of it is for (a function of
//! [`triggers`](super::triggers)), and which of a `GoServer`'s names it
//! claims ([`Named`], read by the name-conflict guard). [`child_kinds!`]
//! turns the rows into the stores, the streams that fill them, the wait for
//! them to list, the controller's watches and the guard's claims, so that a
//! kind is written down once.

use std::marker::PhantomData;

use futures::stream::BoxStream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};

use super::feed;
use super::optional::{OptionalKind, OptionalStreams};
use super::store::{self, Cached, CachedKind, ChildStream, MetadataKind};

/// How a kind's watch fills its store, and what a reconcile reads of it.
pub trait Feed {
    /// What the rest of the operator reads: a store, or an
    /// [`OptionalKind`] that also says whether the kind is served.
    type Store: Clone;
    /// What the watch yields and the store holds.
    type Object: Resource<DynamicType = ()> + Clone + Send + Sync + 'static;
    /// Whether the operator waits for the store to list before it calls
    /// itself ready: not for kinds the cluster may not serve.
    const WAITED: bool;

    /// Starts nothing yet: the store, and the streams that fill it once
    /// the controller drives them.
    fn start(self, client: &Client, namespace: Option<&str>) -> (Self::Store, Fed<Self::Object>);

    /// The objects of the store.
    fn objects(store: &Self::Store) -> &Store<Self::Object>;
}

/// The streams a [`Feed`] needs driven: its objects' events, and for an
/// optional kind its changes of presence.
pub struct Fed<C> {
    pub children: ChildStream<C>,
    pub changes: Option<BoxStream<'static, ()>>,
}

impl<C> Fed<C> {
    /// The events of a kind the cluster always serves.
    fn listed(children: ChildStream<C>) -> Self {
        Self {
            children,
            changes: None,
        }
    }
}

/// Gantry's children of the kind, kept as [`Cached`], as `trim` leaves
/// them.
pub struct Owned<K>(fn(&mut K));

impl<K> Owned<K> {
    pub fn new(trim: fn(&mut K)) -> Self {
        Self(trim)
    }
}

impl<K: CachedKind> Feed for Owned<K> {
    type Store = Store<Cached<K>>;
    type Object = Cached<K>;
    const WAITED: bool = true;

    fn start(self, client: &Client, namespace: Option<&str>) -> (Self::Store, Fed<Self::Object>) {
        let (store, children) = feed::cached(client, namespace, self.0);
        (store, Fed::listed(children))
    }

    fn objects(store: &Self::Store) -> &Store<Self::Object> {
        store
    }
}

/// Gantry's children of the kind, metadata only.
pub struct MetadataOnly<K>(PhantomData<fn() -> K>);

impl<K> MetadataOnly<K> {
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<K> Default for MetadataOnly<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: MetadataKind> Feed for MetadataOnly<K> {
    type Store = Store<PartialObjectMeta<K>>;
    type Object = PartialObjectMeta<K>;
    const WAITED: bool = true;

    fn start(self, client: &Client, namespace: Option<&str>) -> (Self::Store, Fed<Self::Object>) {
        let (store, children) = feed::metadata_only(client, namespace);
        (store, Fed::listed(children))
    }

    fn objects(store: &Self::Store) -> &Store<Self::Object> {
        store
    }
}

/// Gantry's children of a kind the cluster may not serve (see
/// [`crate::cache::optional`]).
pub struct Optional<K>(PhantomData<fn() -> K>);

impl<K> Optional<K> {
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<K> Default for Optional<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: CachedKind> Feed for Optional<K> {
    type Store = OptionalKind<K>;
    type Object = Cached<K>;
    const WAITED: bool = false;

    fn start(self, client: &Client, namespace: Option<&str>) -> (Self::Store, Fed<Self::Object>) {
        let (kind, streams) = OptionalKind::new(client, namespace);
        (kind, streams.into())
    }

    fn objects(store: &Self::Store) -> &Store<Self::Object> {
        &store.store
    }
}

/// Every object of a kind the cluster may not serve, gantry's or not, as
/// `trim` leaves it: for a kind the operator reads but does not own.
pub struct OptionalUnowned<K>(fn(&mut K));

impl<K> OptionalUnowned<K> {
    pub fn new(trim: fn(&mut K)) -> Self {
        Self(trim)
    }
}

impl<K: CachedKind> Feed for OptionalUnowned<K> {
    type Store = OptionalKind<K>;
    type Object = Cached<K>;
    const WAITED: bool = false;

    fn start(self, client: &Client, namespace: Option<&str>) -> (Self::Store, Fed<Self::Object>) {
        let (kind, streams) = OptionalKind::unowned(client, namespace, self.0);
        (kind, streams.into())
    }

    fn objects(store: &Self::Store) -> &Store<Self::Object> {
        &store.store
    }
}

impl<K> From<OptionalStreams<K>> for Fed<Cached<K>> {
    fn from(streams: OptionalStreams<K>) -> Self {
        Self {
            children: streams.children,
            changes: Some(streams.changes),
        }
    }
}

/// Which of a `GoServer`'s names a kind's children take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Named {
    /// The `GoServer`'s own name.
    Primary,
    /// The canary's name, while a canary runs.
    Canary,
    /// The name of the canary's baseline, while one runs beside it.
    Baseline,
}

/// A name a `GoServer` needs for a child of `kind`, and the controller of
/// the cached child of that name when it is not this `GoServer`.
#[derive(Clone, Debug)]
pub struct Claim {
    pub kind: &'static str,
    pub name: String,
    pub foreign: Option<OwnerReference>,
}

impl Claim {
    /// The claim of `name` for a `K` of `store`, by the `GoServer` with
    /// `uid`.
    pub fn of<C>(store: &Store<C>, namespace: &str, name: &str, uid: Option<&str>) -> Self
    where
        C: Resource<DynamicType = ()> + Clone + 'static,
    {
        let foreign = store::lookup(store, namespace, name).and_then(|child| {
            child
                .owner_references()
                .iter()
                .find(|r| r.controller == Some(true) && Some(r.uid.as_str()) != uid)
                .cloned()
        });
        Self {
            kind: store::static_kind::<C>(),
            name: name.to_owned(),
            foreign,
        }
    }
}

/// Declares `Caches`, `Streams` and their methods from the table of
/// watched kinds: one row per field,
/// `field: Kind = Feed(args), events for mapper, names [Named...];`.
macro_rules! child_kinds {
    ($(
        $(#[$doc:meta])*
        $field:ident: $kind:ty = $feed:ident($($arg:expr)?), events for $mapper:path, names [$($named:ident),*];
    )*) => {
        /// Read handles of every watched kind's store.
        #[derive(Clone)]
        pub struct Caches {
            $(
                $(#[$doc])*
                pub $field: <$crate::cache::kinds::$feed<$kind> as $crate::cache::kinds::Feed>::Store,
            )*
        }

        /// The watch streams that fill [`Caches`]; the controller drives
        /// them ([`Streams::watched_by`]).
        pub struct Streams {
            $(
                $field: $crate::cache::kinds::Fed<
                    <$crate::cache::kinds::$feed<$kind> as $crate::cache::kinds::Feed>::Object,
                >,
            )*
        }

        impl Caches {
            /// Stores for every kind in `namespace` (all namespaces when
            /// `None`), and the streams that fill them.
            pub fn new(client: &kube::Client, namespace: Option<&str>) -> (Self, Streams) {
                use $crate::cache::kinds::Feed as _;
                $(
                    let $field = $crate::cache::kinds::$feed::<$kind>::new($($arg)?)
                        .start(client, namespace);
                )*
                (
                    Self { $($field: $field.0,)* },
                    Streams { $($field: $field.1,)* },
                )
            }

            /// Waits until every store has listed its objects once. Kinds
            /// the cluster may not serve are not waited for (see
            /// [`crate::cache::optional`]).
            ///
            /// kube-runtime's readiness sits behind a one-shot channel that
            /// wakes only the last task to poll it; asking again in a loop
            /// finds the value once anyone has seen it. Returns `false` if a
            /// store's writer is gone (the controller stopped) before it
            /// became ready.
            pub async fn wait_until_ready(&self) -> bool {
                use $crate::cache::kinds::Feed;
                $(
                    (!<$crate::cache::kinds::$feed<$kind> as Feed>::WAITED
                        || $crate::cache::store::ready(
                            <$crate::cache::kinds::$feed<$kind> as Feed>::objects(&self.$field),
                        )
                        .await) &&
                )* true
            }

            /// The names a `GoServer` with `uid` needs, each for every kind
            /// that takes it, in the order of `names` and then of the table.
            pub fn claims(
                &self,
                namespace: &str,
                names: &[($crate::cache::kinds::Named, &str)],
                uid: Option<&str>,
            ) -> Vec<$crate::cache::kinds::Claim> {
                use $crate::cache::kinds::{Claim, Feed, Named};
                let mut claims = Vec::new();
                for &(named, name) in names {
                    $(
                        let takes: &[Named] = &[$(Named::$named),*];
                        if takes.contains(&named) {
                            let store = <$crate::cache::kinds::$feed<$kind> as Feed>::objects(&self.$field);
                            claims.push(Claim::of(store, namespace, name, uid));
                        }
                    )*
                }
                claims
            }
        }

        impl Streams {
            /// `controller` with a watch of every kind, each event mapped
            /// to the `GoServers` it is for, and a reconcile of every
            /// `GoServer` when an optional kind is installed or removed
            /// (each learns whether it can have its child).
            pub fn watched_by(
                self,
                controller: kube::runtime::Controller<$crate::crd::GoServer>,
                goservers: &kube::runtime::reflector::Store<$crate::crd::GoServer>,
            ) -> kube::runtime::Controller<$crate::crd::GoServer> {
                use futures::TryStreamExt as _;
                use $crate::cache::triggers::trigger;
                let mut changes = Vec::new();
                $(
                    changes.extend(self.$field.changes);
                    let attached = goservers.clone();
                    let controller = controller.watches_stream(
                        self.$field.children.map_ok(trigger::<_, $kind>),
                        move |event| $mapper(&attached, event),
                    );
                )*
                controller.reconcile_all_on(futures::stream::select_all(changes))
            }
        }
    };
}

pub(crate) use child_kinds;
