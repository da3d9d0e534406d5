//! The reconcile loop: fetch, validate, build, apply, prune, report.
//!
//! ```text
//! GoServer or child event
//!   -> fetch     referenced Secrets exist? (metadata only: values are never read)
//!   -> validate  what the schema cannot check (build::validate)
//!   -> build     pure: &GoServer -> Children
//!   -> apply     apply::Applier: compare with the caches, server-side apply
//!                what differs, prune what the spec no longer wants
//!   -> events    what the applier changed (one Event for the children created)
//!   -> status    computed from the Deployment, written only when it changed
//! ```
//!
//! Children are watched into reflector stores ([`crate::cache`]) by the same
//! watches that trigger reconciles, so a reconcile of an unchanged
//! `GoServer` reads everything from memory and sends no request.
//!
//! Errors are sorted by [`Error::is_permanent`]: a permanent one is reported
//! in the `Degraded` condition and the `GoServer` waits for a change; a
//! transient one is retried with exponential backoff per object.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{PartialObjectMeta, PartialObjectMetaExt, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::apply::{self, Applier, FIELD_MANAGER, Told, Written};
use crate::build::{self, Revision, ServiceMonitor};
use crate::cache::{self, Cached, Caches};
use crate::crd::{GoServer, GoServerStatus};
use crate::error::{Error, Result};
use crate::fault;
use crate::gateway::{self, Gateway, HttpRoute};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::rollout::request::{self, Handled};
use crate::rollout::{self, outbox, prometheus::Prometheus};
use crate::status::{self, Observed};

/// How long reconciles in flight may take to finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A `GoServer` is reconciled at least this often, even without events.
const RESYNC: Duration = Duration::from_secs(600);
/// How often a `GoServer` waiting for a missing Secret looks again: Secrets
/// are not watched, so their creation is no event for the operator.
const MISSING_REFERENCE_RECHECK: Duration = Duration::from_secs(60);
/// Backoff bounds of transient errors.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// The soonest a verification asks to be looked at again.
const MIN_REQUEUE: Duration = Duration::from_millis(200);

/// State shared by every reconcile.
pub struct Context {
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    caches: Caches,
    /// The controller's own `GoServer` store: backoff state of objects that
    /// are gone is dropped by looking here.
    goservers: Store<GoServer>,
    written: Written,
    prometheus: Prometheus,
    notifier: Notifier,
    /// Consecutive transient failures per `GoServer` UID, for backoff. A
    /// `GoServer` deleted and created again under its name starts afresh.
    failures: Mutex<HashMap<String, (ObjectRef<GoServer>, u32)>>,
    /// The last status this process wrote that changed the rollout state,
    /// per `GoServer` UID: its resource version and the rollout state it
    /// holds. A reconcile whose cached `GoServer` shows neither runs on a
    /// view from before that write (the watch lags): it reads the
    /// `GoServer` afresh instead, so that it never undoes a decision it
    /// cannot see yet (a rollback already told, say).
    rollout_written: Mutex<HashMap<String, (ObjectRef<GoServer>, RolloutWritten)>>,
}

/// A status write that changed the rollout state.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RolloutWritten {
    resource_version: Option<String>,
    state: String,
}

impl Context {
    /// `instance` names this replica in the Events it records (the pod name).
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        caches: Caches,
        goservers: Store<GoServer>,
        settings: &Settings,
        wake: mpsc::UnboundedSender<ObjectRef<GoServer>>,
    ) -> Self {
        let reporter = Reporter {
            controller: crate::notify::CONTROLLER.to_owned(),
            instance: settings.instance.clone(),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            notifier: Notifier::new(
                client.clone(),
                recorder.clone(),
                settings.instance.clone(),
                settings.webhook_signing_key_file.clone(),
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
                settings.prometheus_url.clone(),
                settings.prometheus_token_file.clone(),
            ),
            failures: Mutex::new(HashMap::new()),
            rollout_written: Mutex::new(HashMap::new()),
        }
    }

    /// `gs` as this reconcile should see it: the cached object, unless it
    /// shows neither this process's last rollout write nor anything after
    /// it, in which case the apiserver's (one GET, only then).
    async fn fresh<'a>(&self, gs: &'a GoServer) -> Result<Cow<'a, GoServer>> {
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
    fn remember_rollout_write(&self, gs: &GoServer, written: RolloutWritten) {
        if let Some(uid) = gs.uid() {
            self.rollout_written
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(uid, (ObjectRef::from_obj(gs), written));
        }
    }

    /// Counts a transient failure of `gs` and returns how many in a row.
    /// Entries of `GoServers` that have left the store go at the same time.
    fn record_failure(&self, gs: &GoServer) -> u32 {
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

    fn clear_failures(&self, gs: &GoServer) {
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
fn seen(gs: &GoServer, written: &RolloutWritten) -> bool {
    (written.resource_version.is_some() && gs.resource_version() == written.resource_version)
        || rollout_state(gs.status.as_ref()) == written.state
}

/// The part of a status that rollout decisions are made from, as text to
/// compare: a reconcile that does not see the latest of it must not act.
fn rollout_state(status: Option<&GoServerStatus>) -> String {
    let Some(s) = status else {
        return String::new();
    };
    serde_json::to_string(&(
        &s.last_good_revision,
        &s.failed_revision,
        &s.verification,
        &s.canary,
        &s.outbox,
    ))
    .unwrap_or_default()
}

/// What the controller needs besides the client.
pub struct Settings {
    /// Watch only this namespace; `None`: all namespaces.
    pub namespace: Option<String>,
    /// Names this replica in Events (the pod name).
    pub instance: Option<String>,
    /// `GoServers` reconciled at once; 0 means no limit.
    pub concurrency: u16,
    /// The Prometheus a verification asks when its spec names none.
    pub prometheus_url: Option<String>,
    /// A bearer token for `prometheus_url` only.
    pub prometheus_token_file: Option<PathBuf>,
    /// The key that signs webhook calls.
    pub webhook_signing_key_file: Option<PathBuf>,
}

/// Runs the controller until SIGINT or SIGTERM. `health` turns ready once
/// the `GoServer` watch and every child cache have listed everything;
/// reconciles are counted in `metrics`.
pub async fn run(client: Client, settings: Settings, metrics: Arc<Metrics>, health: Arc<Health>) {
    let namespace = settings.namespace.as_deref();
    info!(
        namespace = namespace.unwrap_or("*"),
        "gantry-operator starting"
    );
    let (caches, streams) = Caches::new(&client, namespace);
    let (store, goservers) = cache::goservers(&client, namespace);
    metrics.export_goservers(store.clone());
    let attached = store.clone();
    let controller = Controller::for_stream(goservers, store.clone()).with_config(
        kube::runtime::controller::Config::default().concurrency(settings.concurrency),
    );
    // A delivery answered wakes its GoServer, whose next status write
    // records it.
    let (wake, woken) = mpsc::unbounded();
    let ctx = Arc::new(Context::new(
        client,
        metrics,
        caches.clone(),
        store.clone(),
        &settings,
        wake,
    ));
    tokio::spawn(async move {
        if cache::ready(&store).await && caches.wait_until_ready().await {
            health.set_ready(true);
            info!("watches synced, ready");
        }
    });
    let cache::Streams {
        deployments,
        services,
        config_maps,
        ingresses,
        hpas,
        revisions,
        service_monitors,
        routes,
        gateways,
    } = streams;
    let running = controller
        .watches_stream(deployments.map_ok(trigger::<_, Deployment>), goserver_of)
        .watches_stream(services.map_ok(trigger::<_, Service>), goserver_of)
        .watches_stream(config_maps.map_ok(trigger::<_, ConfigMap>), goserver_of)
        .watches_stream(ingresses.map_ok(trigger::<_, Ingress>), goserver_of)
        .watches_stream(
            hpas.map_ok(trigger::<_, HorizontalPodAutoscaler>),
            goserver_of,
        )
        .watches_stream(
            revisions.map_ok(trigger::<_, ControllerRevision>),
            goserver_of,
        )
        .watches_stream(
            service_monitors
                .children
                .map_ok(trigger::<_, ServiceMonitor>),
            goserver_of,
        )
        .watches_stream(routes.children.map_ok(trigger::<_, HttpRoute>), goserver_of)
        // A Gateway's listeners give the scheme of the routes on it.
        .watches_stream(
            gateways.children.map_ok(trigger::<_, Gateway>),
            move |gateway| routes_on(&attached, &gateway),
        )
        // An optional kind installed or removed: every GoServer learns
        // whether it can have its child.
        .reconcile_all_on(futures::stream::select_all([
            service_monitors.changes,
            routes.changes,
            gateways.changes,
        ]))
        .reconcile_on(woken)
        .trigger_backoff(cache::NoTriggerBackoff)
        .graceful_shutdown_on(crate::shutdown_signal())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(object = %object, "reconciled"),
                // Told at info by the reconcile itself; the watch brings the news.
                Err(kube::runtime::controller::Error::ReconcilerFailed(
                    Error::Outdated { .. },
                    object,
                )) => debug!(object = %object, "reconcile skipped"),
                Err(err) => warn!(error = %err, "reconcile failed"),
            }
        });
    // A graceful shutdown waits for the reconciles in flight; one waiting
    // on an apiserver that cannot be reached would hold the process until
    // the kubelet's SIGKILL. They get a grace period, then are dropped:
    // nothing a reconcile writes depends on it finishing.
    let overdue = async {
        crate::shutdown_signal().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        () = running => {}
        () = overdue => warn!(
            grace_seconds = SHUTDOWN_GRACE.as_secs(),
            "reconciles still running after the shutdown grace period; stopping without them"
        ),
    }
    info!("gantry-operator stopped");
}

fn next_reconcile_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `GoServers` whose route names `gateway` as a parent.
fn routes_on<C: Resource>(goservers: &Store<GoServer>, gateway: &C) -> Vec<ObjectRef<GoServer>> {
    let (Some(name), Some(namespace)) = (
        gateway.meta().name.as_deref(),
        gateway.meta().namespace.as_deref(),
    ) else {
        return Vec::new();
    };
    goservers
        .state()
        .iter()
        .filter(|gs| {
            let own = gs.metadata.namespace.as_deref();
            gs.spec.route.as_ref().is_some_and(|route| {
                route
                    .parent_refs
                    .iter()
                    .any(|p| p.name == name && p.namespace.as_deref().or(own) == Some(namespace))
            })
        })
        .map(|gs| ObjectRef::from_obj(gs.as_ref()))
        .collect()
}

/// The `GoServer` an event of one of gantry's children is for: its
/// controller if that is a `GoServer`, else, when nothing controls it, the
/// `GoServer` its instance label names. A child deleted and created again
/// by someone else (restored from a backup, say) has gantry's labels and
/// no owner; a watch that coalesced the two events shows only the new
/// object, and without the label nothing would reconcile its `GoServer`
/// (found by the lost-state test).
fn goserver_of<K>(child: PartialObjectMeta<K>) -> Option<ObjectRef<GoServer>> {
    let ObjectMeta {
        namespace,
        owner_references,
        labels,
        ..
    } = child.metadata;
    let controller = owner_references
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.controller == Some(true));
    let name = match controller {
        Some(owner)
            if owner.kind == GoServer::kind(&())
                && owner.api_version == GoServer::api_version(&()) =>
        {
            owner.name
        }
        Some(_) => return None,
        None => labels?.remove(build::INSTANCE_LABEL)?,
    };
    Some(ObjectRef::new(&name).within(&namespace?))
}

/// What [`goserver_of`] reads of a child event: its namespace, controller
/// and instance label, in the form kube's trigger streams take.
// By value: the signature `map_ok` asks for.
#[allow(clippy::needless_pass_by_value)]
fn trigger<C, K>(child: C) -> PartialObjectMeta<K>
where
    C: Resource<DynamicType = ()>,
    K: Resource<DynamicType = ()>,
{
    let meta = child.meta();
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        owner_references: meta.owner_references.as_ref().map(|owners| {
            owners
                .iter()
                .filter(|r| r.controller == Some(true))
                .cloned()
                .collect()
        }),
        labels: meta.labels.as_ref().and_then(|labels| {
            let instance = labels.get(build::INSTANCE_LABEL)?;
            Some([(build::INSTANCE_LABEL.to_owned(), instance.clone())].into())
        }),
        ..ObjectMeta::default()
    }
    .into_request_partial()
}

/// Brings the children of one `GoServer` in line with its spec.
pub async fn reconcile(gs: Arc<GoServer>, ctx: Arc<Context>) -> Result<Action> {
    let span = info_span!(
        "reconcile",
        namespace = gs.namespace().unwrap_or_default(),
        goserver = gs.name_any(),
        reconcile_id = next_reconcile_id(),
    );
    let started = Instant::now();
    let result = Box::pin(reconcile_inner(&gs, &ctx).instrument(span)).await;
    ctx.metrics.reconciled(
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    result
}

async fn reconcile_inner(gs: &GoServer, ctx: &Context) -> Result<Action> {
    if gs.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the children through their owner
        // references; there is nothing to keep in shape any more.
        return Ok(Action::await_change());
    }
    // The controller starts once the GoServer cache is filled, not the
    // child caches: a reconcile that ran before them would take every
    // child it does not find yet for missing (found by the restart test:
    // a restarted operator tried to create ControllerRevisions that
    // existed). Immediate once they are ready.
    ctx.caches.wait_until_ready().await;
    // A view older than our own last rollout write would act on a rollout
    // state that is no more (found by the stale-status test: a reconcile
    // on the status from before a rollback measured again and erased it).
    let gs = ctx.fresh(gs).await?;
    let gs = gs.as_ref();
    debug!(generation = gs.metadata.generation, "reconcile started");
    match Box::pin(sync(gs, ctx)).await {
        Ok(synced) => match Box::pin(report(gs, ctx, synced)).await {
            Err(Error::StatusConflict { .. }) => {
                info!("the GoServer changed since it was read; looking again");
                Ok(Action::requeue(MIN_REQUEUE))
            }
            other => other,
        },
        Err(err @ Error::Outdated { .. }) => {
            // Nothing is written for an object that is not there: no
            // status, no Event.
            info!(error = %err, "reconcile skipped: the cached GoServer is outdated");
            Err(err)
        }
        Err(err) if err.is_permanent() => {
            warn!(error = %err, category = err.category(), "reconcile stopped by a permanent error");
            let deployment = cached_deployment(ctx, gs).await?;
            let hpa = cached_child(&ctx.caches.hpas, gs, gs.spec.autoscaling.is_some())?;
            let route = cached_child(&ctx.caches.routes.store, gs, gs.spec.route.is_some())?;
            let observed = Observed {
                deployment: deployment.as_ref(),
                rollout: None,
                error: Some(&err),
                hpa: hpa.as_ref(),
                service_monitors: ctx.caches.service_monitors.presence(),
                routes: ctx.caches.routes.presence(),
                route: route.as_ref(),
                route_https: gateway::serves_https(gs, &ctx.caches.gateways.store)?,
            };
            // An unchanged status means this error was reported already:
            // no second Event, no write.
            if write_status(gs, ctx, &observed, None).await?.written {
                publish_error(ctx, gs, &err).await;
            }
            Err(err)
        }
        Err(err) => {
            warn!(error = %err, category = err.category(), "reconcile failed, will retry");
            publish_error(ctx, gs, &err).await;
            Err(err)
        }
    }
}

/// What a status write of [`report`] reads: one per write, each seeing the
/// decision as it stands then.
fn observed<'a>(
    ctx: &Context,
    deployment: &'a Deployment,
    decision: &'a rollout::Decision,
    hpa: Option<&'a HorizontalPodAutoscaler>,
    route: Option<&'a HttpRoute>,
    route_https: bool,
) -> Observed<'a> {
    Observed {
        deployment: Some(deployment),
        rollout: Some(decision),
        error: None,
        hpa,
        service_monitors: ctx.caches.service_monitors.presence(),
        routes: ctx.caches.routes.presence(),
        route,
        route_https,
    }
}
/// Writes what a successful [`sync`] found, then tells its decisions: the
/// status first (the decision recorded), the Events and the deliveries
/// after, and a second status write for the Events recorded.
async fn report(gs: &GoServer, ctx: &Context, synced: Synced) -> Result<Action> {
    let Synced {
        deployment,
        mut decision,
        told,
        defaulted,
        handled,
    } = synced;
    let hpa = cached_child(&ctx.caches.hpas, gs, gs.spec.autoscaling.is_some())?;
    let route = cached_child(&ctx.caches.routes.store, gs, gs.spec.route.is_some())?;
    let route_https = gateway::serves_https(gs, &ctx.caches.gateways.store)?;
    let receivers = rollout::receivers(gs);
    ctx.notifier.drop_gone(|object, uid| {
        ctx.goservers
            .get(object)
            .is_some_and(|live| live.uid().as_deref() == Some(uid))
    });
    // What this process learnt since its last write (Events recorded,
    // deliveries answered) goes into this one.
    let learnt = ctx.notifier.learnt(gs);
    outbox::settle(&mut decision.outbox, &learnt, &receivers);
    // A status that carries requests is written only over the version of
    // the GoServer they were read from: a cached copy older than the live
    // one (whose requests may be done already) gets a conflict and a retry
    // on a fresh copy. The same holds for every write that changes the
    // rollout state (see `Error::StatusConflict`).
    let requests = !handled.is_empty();
    // The Events are not waited for before the status: a Deployment that
    // comes up meanwhile is seen one round trip sooner.
    let written = {
        let first = observed(
            ctx,
            &deployment,
            &decision,
            hpa.as_ref(),
            route.as_ref(),
            route_https,
        );
        let ((), (), written) = tokio::join!(
            publish_changes(ctx, gs, told),
            publish_defaulted(ctx, gs, defaulted),
            write_status(gs, ctx, &first, Some(requests))
        );
        written?
    };
    ctx.notifier.forget(gs, &learnt);
    finish_requests(ctx, gs, handled).await?;
    publish_dropped(ctx, gs, &decision.dropped).await;

    // Told only once recorded: an operator stopped before this point tells
    // it after its restart, and nothing is told of a decision that was
    // never recorded.
    let mut requeue = decision.requeue;
    if ctx.notifier.record_events(gs, &decision.outbox).await {
        // The recorded Events leave the outbox now, not at the next write.
        let mut after = gs.clone();
        after.status = Some(written.status.clone());
        after.metadata.resource_version = written.resource_version.clone();
        let learnt = ctx.notifier.learnt(&after);
        outbox::settle(&mut decision.outbox, &learnt, &receivers);
        let second = observed(
            ctx,
            &deployment,
            &decision,
            hpa.as_ref(),
            route.as_ref(),
            route_https,
        );
        write_status(&after, ctx, &second, Some(false)).await?;
        ctx.notifier.forget(&after, &learnt);
    }
    let now = now();
    ctx.notifier.deliver(gs, &decision.outbox, &now);
    if let Some(next) = outbox::next_due(&decision.outbox, &now) {
        requeue = Some(requeue.map_or(next, |r| r.min(next)));
    }
    ctx.clear_failures(gs);
    info!(outcome = "ok", "reconcile finished");
    let next = requeue.map_or(RESYNC, |d| d.clamp(MIN_REQUEUE, RESYNC));
    Ok(Action::requeue(next))
}

/// A Warning Event for each decision that left a full outbox untold.
async fn publish_dropped(ctx: &Context, gs: &GoServer, dropped: &[crate::crd::Notification]) {
    for dropped in dropped {
        publish(
            ctx,
            gs,
            EventType::Warning,
            "NotificationDropped",
            "Notify",
            format!(
                "decision {} ({} of {}) was never told in full and left the outbox, which keeps {}",
                dropped.id,
                dropped.event.as_str(),
                dropped.revision,
                outbox::LIMIT
            ),
            None,
        )
        .await;
    }
}

/// Tells the controller when to look at a failed `GoServer` again.
// The signature is the one `Controller::run` asks for.
#[allow(clippy::needless_pass_by_value)]
pub fn error_policy(gs: Arc<GoServer>, err: &Error, ctx: Arc<Context>) -> Action {
    match err {
        Error::SecretNotFound { .. } => Action::requeue(MISSING_REFERENCE_RECHECK),
        err if err.is_permanent() => Action::await_change(),
        _ => {
            let failures = ctx.record_failure(&gs);
            Action::requeue(backoff(failures))
        }
    }
}

/// Delay before retry number `failures` (1-based): 1 s, 2 s, 4 s, ... 5 min.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

/// A Warning Event on the `GoServer` for a failed reconcile.
async fn publish_error(ctx: &Context, gs: &GoServer, err: &Error) {
    publish(
        ctx,
        gs,
        EventType::Warning,
        err.reason(),
        "Reconcile",
        err.to_string(),
        None,
    )
    .await;
}

fn namespaced<K>(ctx: &Context, gs: &GoServer) -> Result<Api<K>>
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

/// Fetch, validate, build, apply, observe. Returns the live Deployment,
/// the rollout decision and the Events to publish; when it fails after a
/// write, it publishes those Events itself.
async fn sync(gs: &GoServer, ctx: &Context) -> Result<Synced> {
    // Fetch: every referenced Secret must exist. Only metadata is requested.
    let secrets = namespaced::<Secret>(ctx, gs)?;
    for secret in &gs.spec.secrets {
        match secrets.get_metadata_opt(&secret.name).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(Error::SecretNotFound {
                    name: secret.name.clone(),
                });
            }
            // Without `get` on Secrets the check cannot be made; the pods
            // then report a missing Secret themselves.
            Err(kube::Error::Api(status)) if status.code == 403 => {
                warn!(
                    secret = %secret.name,
                    "not allowed to check that referenced Secrets exist; skipping the check"
                );
                break;
            }
            Err(e) => return Err(Error::kube(format!("get Secret {}", secret.name), e)),
        }
    }

    build::validate(gs)?;
    let spec_revision = build::spec_revision(gs)?;
    // Requests by annotation change the status this reconcile starts from;
    // the rest of it works on that view.
    let (view, handled) = handle_requests(ctx, gs, &spec_revision.name)?;
    let gs = view.as_ref();
    let now = now();
    let mut plan = rollout::canary::plan(gs, &spec_revision.name, &now);
    let in_force = if plan.stable == spec_revision.name {
        spec_revision.clone()
    } else {
        stored_revision(ctx, gs, &plan.stable).await?
    };
    let canary = canary_run(ctx, gs, &mut plan, &spec_revision).await?;
    let canary_revision = canary.as_ref().map(|c| c.revision.clone());
    let children = build::build_with_canary(gs, in_force.clone(), canary)?;
    let applier = Applier {
        client: &ctx.client,
        caches: &ctx.caches,
        written: &ctx.written,
        gs,
    };
    let mut changes = Vec::new();
    let phase = match &plan.canary {
        Some(c) if c.draining => "drain",
        Some(_) => "canary",
        None if plan.stable != spec_revision.name => "rollback",
        None => "apply",
    };
    let outcome = fault::in_phase(phase, Box::pin(applier.apply(children, &mut changes))).await;
    let defaulted = defaulted_note(gs, &changes);
    let told = apply::tell(&changes);
    // Every write made is told, also when a later one failed.
    let apply::Applied {
        deployment,
        canary: live_canary,
        route,
    } = match outcome {
        Ok(live) => live,
        Err(err) => {
            publish_changes(ctx, gs, told).await;
            return Err(err);
        }
    };

    // Observe: how far the revision in force is, and its verification.
    let runs_in_force = runs(&deployment, &in_force.name);
    let canary_observed = match (&live_canary, &canary_revision) {
        (Some(live), Some(revision)) => Some(rollout::canary::Observed {
            revision,
            complete: runs(live, &revision.name) && status::rollout_complete(live),
            deadline_exceeded: runs(live, &revision.name) && status::deadline_exceeded(live),
            draining: plan.canary.as_ref().is_some_and(|c| c.draining),
        }),
        _ => None,
    };
    let decision_id = decision_id();
    let observation = rollout::Observation {
        now: &now,
        spec_revision: &spec_revision.name,
        in_force: &in_force,
        complete: runs_in_force && status::rollout_complete(&deployment),
        deadline_exceeded: runs_in_force && status::deadline_exceeded(&deployment),
        canary: canary_observed,
        routing: rollout::canary::routing(gs, route.as_ref()),
        decision_id: &decision_id,
    };
    let mut decision = rollout::progress(gs, &observation, None);
    if let Some(due) = decision.measure.take() {
        let samples = measure(ctx, gs, &due).await;
        decision = rollout::progress(gs, &observation, Some(&samples));
    }
    Ok(Synced {
        deployment,
        decision,
        told,
        defaulted,
        handled,
    })
}

/// The canary to run for `plan`, if any. It runs the spec's revision,
/// sized by its weight's share of the stable Deployment as it is now (the
/// HPA's count, when it scales). One that drains keeps the pods it has,
/// and is never made again: without a canary Deployment to drain, the plan
/// loses its canary.
async fn canary_run(
    ctx: &Context,
    gs: &GoServer,
    plan: &mut rollout::canary::Plan,
    spec_revision: &Revision,
) -> Result<Option<build::CanaryRun>> {
    let namespace = gs.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let live_canary: Option<Deployment> = cache::get(
        &ctx.caches.deployments,
        &namespace,
        &build::canary::name(&gs.name_any()),
    )?;
    if plan
        .canary
        .as_ref()
        .is_some_and(|c| c.draining && live_canary.is_none())
    {
        plan.canary = None;
    }
    let Some(canary) = &plan.canary else {
        return Ok(None);
    };
    let revision = if canary.revision == spec_revision.name {
        spec_revision.clone()
    } else {
        stored_revision(ctx, gs, &canary.revision).await?
    };
    let replicas = if canary.draining {
        live_canary
            .as_ref()
            .and_then(|d| d.spec.as_ref())
            .and_then(|s| s.replicas)
            .unwrap_or(0)
    } else {
        build::canary::replicas(stable_replicas(ctx, gs).await?, canary.weight)
    };
    Ok(Some(build::CanaryRun {
        revision,
        weight: canary.weight,
        replicas,
    }))
}

/// A fresh decision id: a UUID (version 7, so ids sort by time).
fn decision_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Applies the requests made by annotation (see [`rollout::request`]) to a
/// copy of `gs`; the copy (`gs` itself when there is none) and what came of
/// each request. Whether a rollback's revision is recorded is read from the
/// `ControllerRevision` cache.
fn handle_requests<'a>(
    ctx: &Context,
    gs: &'a GoServer,
    spec_revision: &str,
) -> Result<(Cow<'a, GoServer>, Vec<Handled>)> {
    let requests = request::requests(gs);
    if requests.is_empty() {
        return Ok((Cow::Borrowed(gs), Vec::new()));
    }
    let namespace = gs.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let uid = gs.uid();
    let stored = |name: &str| {
        cache::lookup(&ctx.caches.revisions, &namespace, name).is_some_and(|record| {
            apply::owned_by(
                record
                    .metadata
                    .owner_references
                    .as_deref()
                    .unwrap_or_default(),
                uid.as_deref(),
            )
        })
    };
    let now = now();
    let in_force = rollout::in_force(gs, spec_revision);
    let facts = request::Facts {
        spec_revision,
        in_force: &in_force,
        now: &now,
        stored: &stored,
    };
    let mut view = gs.clone();
    let handled = request::apply(&mut view, requests, &facts);
    Ok((Cow::Owned(view), handled))
}

/// Tells what came of each request (an Event each) and removes its
/// annotation, once the status that records it is written. The removal
/// tests the annotation's value first: a request changed meanwhile stays,
/// for the next reconcile.
async fn finish_requests(ctx: &Context, gs: &GoServer, handled: Vec<Handled>) -> Result<()> {
    if handled.is_empty() {
        return Ok(());
    }
    fault::in_phase("requests", remove_requests(ctx, gs, handled)).await
}

/// The removal of [`finish_requests`], and its Events.
async fn remove_requests(ctx: &Context, gs: &GoServer, handled: Vec<Handled>) -> Result<()> {
    let mut ops = Vec::new();
    for h in &handled {
        let path = format!(
            "/metadata/annotations/{}",
            h.request
                .kind
                .annotation()
                .replace('~', "~0")
                .replace('/', "~1")
        );
        ops.push(json!({"op": "test", "path": path, "value": h.request.raw}));
        ops.push(json!({"op": "remove", "path": path}));
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).map_err(|source| {
            Error::Serialize {
                kind: "JSON patch",
                source,
            }
        })?;
    match namespaced::<GoServer>(ctx, gs)?
        .patch(
            &gs.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(_) => {}
        // A value changed since: the newer request is the next reconcile's.
        Err(kube::Error::Api(status)) if status.code == 422 || status.code == 409 => {
            debug!(message = %status.message, "a request annotation changed meanwhile");
            return Ok(());
        }
        Err(e) => return Err(Error::kube("remove the handled request annotations", e)),
    }
    for h in handled {
        let (type_, reason, note) = match h.outcome {
            Ok(note) => (EventType::Normal, h.request.kind.reason(), note),
            Err(why) => (
                EventType::Warning,
                "RequestRefused",
                format!("{}: {why}", h.request.kind.annotation()),
            ),
        };
        info!(request = h.request.kind.annotation(), revision = %h.request.revision, %note, "request handled");
        publish(ctx, gs, type_, reason, "Request", note, None).await;
    }
    Ok(())
}

/// The note of an Event saying which requests the pods got by default
/// (see [`build::defaulted_requests`]), when this reconcile wrote the
/// Deployment that carries them: once per template, not per reconcile.
fn defaulted_note(gs: &GoServer, changes: &[apply::Change]) -> Option<String> {
    let defaulted = build::defaulted_requests(gs);
    let wrote_deployment = changes.iter().any(|c| {
        c.action != apply::Action::Deleted && c.child.kind.as_deref() == Some("Deployment")
    });
    if defaulted.is_empty() || !wrote_deployment {
        return None;
    }
    let list = defaulted
        .iter()
        .map(|(resource, quantity)| format!("{resource} {quantity}"))
        .collect::<Vec<_>>()
        .join(", ");
    let fields = defaulted
        .iter()
        .map(|(resource, _)| format!("spec.resources.requests.{resource}"))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "autoscaling measures use as a share of the request, and {fields} is not set: \
         the pods request {list}; set the field to choose"
    ))
}

/// What [`sync`] did and saw.
struct Synced {
    deployment: Deployment,
    decision: rollout::Decision,
    /// The Events for the writes made, not yet published.
    told: Vec<Told>,
    /// The note of a `DefaultedRequests` Event to publish with them.
    defaulted: Option<String>,
    /// Requests by annotation, applied to the status to write.
    handled: Vec<Handled>,
}

/// Whether `deployment`'s template is that of `revision`.
fn runs(deployment: &Deployment, revision: &str) -> bool {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get(build::REVISION_LABEL))
        .is_some_and(|r| r == revision)
}

/// The stable Deployment's replicas as they are now: set by the HPA when
/// it scales, else by the spec.
async fn stable_replicas(ctx: &Context, gs: &GoServer) -> Result<i32> {
    let live = cached_deployment(ctx, gs).await?;
    Ok(live
        .and_then(|d| d.spec)
        .and_then(|s| s.replicas)
        .unwrap_or(gs.spec.replicas))
}

/// A revision read back from its `ControllerRevision`, to put it back in
/// force after a rollback or to run beside a canary.
async fn stored_revision(ctx: &Context, gs: &GoServer, name: &str) -> Result<Revision> {
    let record = namespaced::<ControllerRevision>(ctx, gs)?
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("get ControllerRevision {name}"), e))?
        .ok_or_else(|| Error::RevisionMissing {
            name: name.to_owned(),
        })?;
    Revision::from_controller_revision(&record)
}

/// Runs the due queries (and their traffic guards) once, all at the same
/// time.
async fn measure(ctx: &Context, gs: &GoServer, due: &rollout::Due) -> Vec<rollout::Sample> {
    let Some(spec) = rollout::spec(gs) else {
        return Vec::new();
    };
    let url = spec.prometheus.as_ref().map(|p| p.url.as_str());
    let timeout = rollout::query_timeout(spec);
    let samples = futures::future::join_all(due.queries.iter().map(|q| async move {
        let (value, traffic) = tokio::join!(ctx.prometheus.query(url, &q.query, timeout), async {
            match &q.traffic {
                Some(traffic) => Some(ctx.prometheus.query(url, traffic, timeout).await),
                None => None,
            }
        });
        rollout::Sample {
            metric: q.metric.clone(),
            value,
            traffic,
        }
    }))
    .await;
    for sample in &samples {
        match &sample.value {
            Ok(value) => {
                debug!(metric = %sample.metric, value = ?value, traffic = ?sample.traffic, "measured");
            }
            Err(err) => warn!(metric = %sample.metric, error = %err, "measurement failed"),
        }
    }
    samples
}

/// Now, to the second, by the apiserver's clock (see [`crate::clock`]).
fn now() -> Time {
    crate::clock::now()
}

/// The Deployment of `gs` as the cache has it, or from the apiserver when
/// the cache does not.
async fn cached_deployment(ctx: &Context, gs: &GoServer) -> Result<Option<Deployment>> {
    let ns = gs.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    if let Some(cached) = cache::get(&ctx.caches.deployments, &ns, &gs.name_any())? {
        return Ok(Some(cached));
    }
    namespaced::<Deployment>(ctx, gs)?
        .get_opt(&gs.name_any())
        .await
        .map_err(|e| Error::kube("get Deployment", e))
}

/// The child of `gs` named like it, as `store` caches it, when the spec
/// asks for one (`wanted`). The HPA's and the route's status are all the
/// `Scaling` and `Routed` conditions read, and a change of either brings
/// the `GoServer` back here through the watch.
fn cached_child<K>(store: &Store<Cached<K>>, gs: &GoServer, wanted: bool) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + serde::Serialize + serde::de::DeserializeOwned,
{
    if !wanted {
        return Ok(None);
    }
    let ns = gs.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    cache::get(store, &ns, &gs.name_any())
}

/// The note of a Warning Event when the `Scaling` condition has just
/// turned False (or False for another reason): told once, not at every
/// reconcile that still finds it so.
fn scaling_failure(old: Option<&GoServerStatus>, new: &GoServerStatus) -> Option<String> {
    let now = status::condition(new, status::SCALING).filter(|c| c.status == "False")?;
    let before = old.and_then(|o| status::condition(o, status::SCALING));
    let told = before.is_some_and(|b| b.status == now.status && b.reason == now.reason);
    (!told).then(|| now.message.clone())
}

async fn publish_defaulted(ctx: &Context, gs: &GoServer, note: Option<String>) {
    if let Some(note) = note {
        publish(
            ctx,
            gs,
            EventType::Normal,
            "DefaultedRequests",
            "Reconcile",
            note,
            None,
        )
        .await;
    }
}

/// The Events for writes of the applier, published together.
async fn publish_changes(ctx: &Context, gs: &GoServer, told: Vec<Told>) {
    futures::future::join_all(told.into_iter().map(|told| publish_change(ctx, gs, told))).await;
}

/// A Normal Event on the `GoServer` for writes of the applier.
async fn publish_change(ctx: &Context, gs: &GoServer, told: Told) {
    let action = if told.action == apply::Action::Deleted {
        "Prune"
    } else {
        "Apply"
    };
    publish(
        ctx,
        gs,
        EventType::Normal,
        told.action.as_str(),
        action,
        told.note,
        Some(told.related),
    )
    .await;
}

/// What [`write_status`] left in the apiserver.
struct StatusWritten {
    /// Whether it wrote (the status differed).
    written: bool,
    /// The status the `GoServer` has now.
    status: GoServerStatus,
    /// The `GoServer`'s resource version after the write, when it wrote.
    resource_version: Option<String>,
}

/// Writes the status when it differs from the stored one.
///
/// With `guard` (`Some(requests)`), a write that carries requests
/// (`requests`) or changes the rollout state is made only over the version
/// of `gs` this reconcile read: a conflict (the view was stale) is
/// [`Error::StatusConflict`], and the reconcile looks again.
async fn write_status(
    gs: &GoServer,
    ctx: &Context,
    observed: &Observed<'_>,
    guard: Option<bool>,
) -> Result<StatusWritten> {
    let new = status::compute(gs, observed, &now());
    if gs.status.as_ref() == Some(&new) {
        return Ok(StatusWritten {
            written: false,
            status: new,
            resource_version: None,
        });
    }
    let old_state = rollout_state(gs.status.as_ref());
    let new_state = rollout_state(Some(&new));
    let rollout_changed = old_state != new_state;
    let precondition = guard
        .is_some_and(|requests| requests || rollout_changed)
        .then(|| gs.resource_version())
        .flatten();
    let phase = status_phase(gs.status.as_ref(), &new, guard == Some(true));
    let live = fault::in_phase(phase, patch_status(gs, ctx, &new, precondition)).await?;
    let resource_version = live.resource_version();
    if rollout_changed {
        ctx.remember_rollout_write(
            gs,
            RolloutWritten {
                resource_version: resource_version.clone(),
                state: new_state,
            },
        );
    }
    if let Some(note) = scaling_failure(gs.status.as_ref(), &new) {
        publish(
            ctx,
            gs,
            EventType::Warning,
            "AutoscalerCannotScale",
            "Scale",
            note,
            None,
        )
        .await;
    }
    let ready = status::condition(&new, status::READY).map_or("Unknown", |c| c.status.as_str());
    info!(
        ready,
        revision = new.revision.as_deref().unwrap_or(""),
        "status updated"
    );
    Ok(StatusWritten {
        written: true,
        status: new,
        resource_version,
    })
}

/// The step of the reconcile a status write is (see [`fault::in_phase`]):
/// what it changes of the rollout state.
fn status_phase(
    old: Option<&GoServerStatus>,
    new: &GoServerStatus,
    requests: bool,
) -> &'static str {
    let empty = GoServerStatus::default();
    let old = old.unwrap_or(&empty);
    let counts = |s: &GoServerStatus| s.verification.as_ref().map(|v| v.metrics.clone());
    if requests {
        "requests"
    } else if new
        .outbox
        .iter()
        .any(|n| !old.outbox.iter().any(|o| o.id == n.id))
    {
        "decision"
    } else if old.canary != new.canary {
        "step"
    } else if counts(old) != counts(new) {
        "measure"
    } else if old.outbox != new.outbox {
        "told"
    } else {
        "status"
    }
}

async fn patch_status(
    gs: &GoServer,
    ctx: &Context,
    status: &GoServerStatus,
    resource_version: Option<String>,
) -> Result<GoServer> {
    let api = namespaced::<GoServer>(ctx, gs)?;
    // Applying the whole status lets fields that are gone (a URL after the
    // Ingress was removed) disappear, which a merge patch would keep. The
    // UID makes it a precondition: the apiserver refuses the write if the
    // object of this name is another one (deleted and created again while
    // the cache lagged), instead of giving it the old object's status.
    let uid = gs.uid().ok_or(Error::MissingObjectKey("uid"))?;
    let mut metadata = json!({"uid": uid});
    let guarded = resource_version.is_some();
    if let Some(version) = resource_version {
        metadata["resourceVersion"] = json!(version);
    }
    let body = json!({
        "apiVersion": GoServer::api_version(&()),
        "kind": GoServer::kind(&()),
        "metadata": metadata,
        "status": status,
    });
    match api
        .patch_status(
            &gs.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(live) => Ok(live),
        // "metadata.uid: field is immutable": another object has the name.
        Err(kube::Error::Api(status))
            if status.code == 422 && status.message.contains("metadata.uid") =>
        {
            Err(Error::Outdated {
                name: gs.name_any(),
                uid,
                live: "another object of the name".to_owned(),
            })
        }
        Err(kube::Error::Api(status)) if status.code == 409 && guarded => {
            Err(Error::StatusConflict {
                name: gs.name_any(),
            })
        }
        Err(e) => Err(Error::kube("patch GoServer status", e)),
    }
}

async fn publish(
    ctx: &Context,
    gs: &GoServer,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
    // The child concerned; Events about different children are then kept
    // apart instead of being folded into one series.
    secondary: Option<ObjectReference>,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary,
    };
    if let Err(err) = ctx.recorder.publish(&event, &gs.object_ref(&())).await {
        warn!(error = %err, "could not publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    fn service(owners: &serde_json::Value, labels: &serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "svc", "namespace": "shop", "ownerReferences": owners, "labels": labels},
        }))
        .expect("a Service")
    }

    fn owner(kind: &str, api_version: &str, name: &str, controller: bool) -> serde_json::Value {
        json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": "u", "controller": controller})
    }

    #[test]
    fn a_child_event_is_for_its_controlling_goserver() {
        let labels = json!({build::INSTANCE_LABEL: "labelled"});
        let child = service(
            &json!([owner("GoServer", "gantry.dev/v1alpha1", "web", true)]),
            &labels,
        );
        assert_eq!(
            goserver_of(trigger::<_, Service>(child)),
            Some(ObjectRef::new("web").within("shop"))
        );
        // Controlled by something else: not ours, whatever its labels say.
        let child = service(
            &json!([owner("ReplicaSet", "apps/v1", "rs", true)]),
            &labels,
        );
        assert_eq!(goserver_of(trigger::<_, Service>(child)), None);
    }

    #[test]
    fn a_child_without_controller_is_for_the_goserver_its_label_names() {
        // A replacement made by someone else: gantry's labels, no owner.
        let child = service(&json!([]), &json!({build::INSTANCE_LABEL: "web"}));
        assert_eq!(
            goserver_of(trigger::<_, Service>(child)),
            Some(ObjectRef::new("web").within("shop"))
        );
        let child = service(
            &json!([owner("GoServer", "gantry.dev/v1alpha1", "other", false)]),
            &json!({}),
        );
        assert_eq!(goserver_of(trigger::<_, Service>(child)), None);
    }
}
