//! What every reconcile shares: the client, the caches, the Event
//! recorder, the Prometheus client, the notifier, and the per-`GoServer`
//! memories (backoff, the last rollout write).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::channel::mpsc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::debug;

use crate::apply::Written;
use crate::cache::Caches;
use crate::crd::{GoServer, GoServerStatus};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::options::RunOptions;
use crate::rollout::prometheus::Prometheus;

/// State shared by every reconcile.
pub struct Context {
    pub(super) client: Client,
    pub(super) recorder: Recorder,
    pub(super) metrics: Arc<Metrics>,
    pub(super) caches: Caches,
    /// The controller's own `GoServer` store: backoff state of objects that
    /// are gone is dropped by looking here.
    pub(super) goservers: Store<GoServer>,
    pub(super) written: Written,
    pub(super) prometheus: Prometheus,
    pub(super) notifier: Notifier,
    /// Consecutive transient failures per `GoServer` UID, for backoff. A
    /// `GoServer` deleted and created again under its name starts afresh.
    pub(super) failures: Mutex<HashMap<String, (ObjectRef<GoServer>, u32)>>,
    /// The last status this process wrote that changed the rollout state,
    /// per `GoServer` UID: its resource version and the rollout state it
    /// holds. A reconcile whose cached `GoServer` shows neither runs on a
    /// view from before that write (the watch lags): it reads the
    /// `GoServer` afresh instead, so that it never undoes a decision it
    /// cannot see yet (a rollback already told, say).
    pub(super) rollout_written: Mutex<HashMap<String, (ObjectRef<GoServer>, RolloutWritten)>>,
}

/// A status write that changed the rollout state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RolloutWritten {
    pub(super) resource_version: Option<String>,
    pub(super) state: String,
}

impl Context {
    /// `instance` names this replica in the Events it records (the pod name).
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        caches: Caches,
        goservers: Store<GoServer>,
        options: &RunOptions,
        wake: mpsc::UnboundedSender<ObjectRef<GoServer>>,
    ) -> Self {
        let reporter = Reporter {
            controller: crate::notify::CONTROLLER.to_owned(),
            instance: options.instance.clone(),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            notifier: Notifier::new(
                client.clone(),
                recorder.clone(),
                options.instance.clone(),
                options.webhook_signing_key_file.clone(),
                Arc::clone(&metrics),
                wake,
            ),
            recorder,
            client,
            metrics,
            caches,
            goservers,
            written: Written::default(),
            prometheus: Prometheus::new(
                options.prometheus_url.clone(),
                options.prometheus_token_file.clone(),
            ),
            failures: Mutex::new(HashMap::new()),
            rollout_written: Mutex::new(HashMap::new()),
        }
    }

    /// `gs` as this reconcile should see it: the cached object, unless it
    /// shows neither this process's last rollout write nor anything after
    /// it, in which case the apiserver's (one GET, only then).
    pub(super) async fn fresh<'a>(&self, gs: &'a GoServer) -> Result<Cow<'a, GoServer>> {
        let Some(uid) = gs.uid() else {
            return Ok(Cow::Borrowed(gs));
        };
        let written = {
            let mut entries = self
                .rollout_written
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.drop_gone(&mut entries);
            let Some((_, written)) = entries.get(&uid) else {
                return Ok(Cow::Borrowed(gs));
            };
            if seen(gs, written) {
                entries.remove(&uid);
                return Ok(Cow::Borrowed(gs));
            }
            written.clone()
        };
        debug!(
            "the cached GoServer is older than this process's last status write; reading it afresh"
        );
        let live = namespaced::<GoServer>(self, gs)?
            .get_opt(&gs.name_any())
            .await
            .map_err(|e| Error::kube("get GoServer", e))?;
        match live {
            Some(live) if live.uid().as_deref() == Some(uid.as_str()) => {
                if !seen(&live, &written) {
                    // Someone else wrote the status since: nothing of ours
                    // to wait for.
                    self.rollout_written
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&uid);
                }
                Ok(Cow::Owned(live))
            }
            // Gone, or another object of the name: the watch tells.
            _ => Ok(Cow::Borrowed(gs)),
        }
    }

    /// Keeps what a status write that changed the rollout state wrote.
    pub(super) fn remember_rollout_write(&self, gs: &GoServer, written: RolloutWritten) {
        if let Some(uid) = gs.uid() {
            self.rollout_written
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(uid, (ObjectRef::from_obj(gs), written));
        }
    }

    /// Counts a transient failure of `gs` and returns how many in a row.
    /// Entries of `GoServers` that have left the store go at the same time.
    pub(super) fn record_failure(&self, gs: &GoServer) -> u32 {
        let uid = gs.uid().unwrap_or_default();
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        self.drop_gone(&mut failures);
        let (_, count) = failures
            .entry(uid)
            .or_insert_with(|| (ObjectRef::from_obj(gs), 0));
        *count = count.saturating_add(1);
        *count
    }

    /// Drops the entries, keyed by UID, of `GoServers` that are no longer
    /// in the store (deleted, or deleted and created again under the name).
    fn drop_gone<T>(&self, entries: &mut HashMap<String, (ObjectRef<GoServer>, T)>) {
        entries.retain(|uid, (object, _)| {
            self.goservers
                .get(object)
                .is_some_and(|live| live.uid().as_deref() == Some(uid.as_str()))
        });
    }

    pub(super) fn clear_failures(&self, gs: &GoServer) {
        if let Some(uid) = gs.uid() {
            self.failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&uid);
        }
    }

    /// How many `GoServers` have backoff state (for tests of its cleanup).
    pub fn failing(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Whether `gs` shows the status write `written` (or a later object with
/// the same rollout state).
pub(super) fn seen(gs: &GoServer, written: &RolloutWritten) -> bool {
    (written.resource_version.is_some() && gs.resource_version() == written.resource_version)
        || rollout_state(gs.status.as_ref()) == written.state
}

/// The part of a status that rollout decisions are made from, as text to
/// compare: a reconcile that does not see the latest of it must not act.
pub(super) fn rollout_state(status: Option<&GoServerStatus>) -> String {
    let Some(s) = status else {
        return String::new();
    };
    serde_json::to_string(&(
        &s.last_good_revision,
        &s.failed_revision,
        &s.verification,
        &s.baseline,
        &s.canary,
        &s.outbox,
    ))
    .unwrap_or_default()
}

pub(super) fn namespaced<K>(ctx: &Context, gs: &GoServer) -> Result<Api<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    let ns = gs
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    Ok(Api::namespaced(ctx.client.clone(), ns))
}

/// Now, to the second, by the apiserver's clock (see [`crate::clock`]).
pub(super) fn now() -> Time {
    crate::clock::now()
}
