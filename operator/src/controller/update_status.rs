//! The status write: computed from what was observed, written only when
//! it differs, guarded when it changes the rollout state.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use super::context::{Context, RolloutWritten, namespaced, now, rollout_state};
use super::events::{publish, publish_changes, publish_defaulted, publish_dropped};
use super::requests;
use crate::apply::Told;
use crate::build::FIELD_MANAGER;
use crate::cache::{self, Cached};
use crate::crd::{GoServer, GoServerStatus};
use crate::error::{Error, Result};
use crate::fault;
use crate::gateway::{self, HttpRoute};
use crate::rollout::request::Handled;
use crate::rollout::{self, outbox};
use crate::status::{self, Inputs};

/// A `GoServer` is reconciled at least this often, even without events.
pub(super) const RESYNC: Duration = Duration::from_secs(600);
/// The soonest a verification asks to be looked at again.
pub(super) const MIN_REQUEUE: Duration = Duration::from_millis(200);

/// What [`super::sync`] did and saw, for [`report`] to write and tell.
pub(super) struct Synced {
    pub(super) deployment: Deployment,
    pub(super) decision: rollout::Decision,
    /// The Events for the writes made, not yet published.
    pub(super) told: Vec<Told>,
    /// The note of a `DefaultedRequests` Event to publish with them.
    pub(super) defaulted: Option<String>,
    /// Requests by annotation, applied to the status to write.
    pub(super) handled: Vec<Handled>,
}

/// What every status write reads of the children besides the Deployment:
/// the HPA's and the route's status (the `Scaling` and `Routed`
/// conditions), from the caches. A change of either brings the `GoServer`
/// back here through the watch.
pub(super) struct Around {
    hpa: Option<HorizontalPodAutoscaler>,
    route: Option<HttpRoute>,
    route_https: bool,
}

impl Around {
    pub(super) fn read(ctx: &Context, gs: &GoServer) -> Result<Self> {
        Ok(Self {
            hpa: cached_child(&ctx.caches.hpas, gs, gs.spec.autoscaling.is_some())?,
            route: cached_child(&ctx.caches.routes.store, gs, gs.spec.route.is_some())?,
            route_https: gateway::listeners::serves_https(gs, &ctx.caches.gateways.store)?,
        })
    }

    /// What one status write observes: the Deployment, and the rollout
    /// decision as it stands then or the error that stopped the reconcile.
    pub(super) fn observe<'a>(
        &'a self,
        ctx: &Context,
        deployment: Option<&'a Deployment>,
        rollout: Option<&'a rollout::Decision>,
        error: Option<&'a Error>,
    ) -> Inputs<'a> {
        Inputs {
            deployment,
            rollout,
            error,
            hpa: self.hpa.as_ref(),
            service_monitors: ctx.caches.service_monitors.presence(),
            routes: ctx.caches.routes.presence(),
            route: self.route.as_ref(),
            route_https: self.route_https,
        }
    }
}

/// Writes what a successful [`super::sync`] found, then tells its decisions: the
/// status first (the decision recorded), the Events and the deliveries
/// after, and a second status write for the Events recorded.
pub(super) async fn report(gs: &GoServer, ctx: &Context, synced: Synced) -> Result<Action> {
    let Synced {
        deployment,
        mut decision,
        told,
        defaulted,
        handled,
    } = synced;
    let around = Around::read(ctx, gs)?;
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
        let first = around.observe(ctx, Some(&deployment), Some(&decision), None);
        let ((), (), written) = tokio::join!(
            publish_changes(ctx, gs, told),
            publish_defaulted(ctx, gs, defaulted),
            write_status(gs, ctx, &first, Some(requests))
        );
        written?
    };
    ctx.notifier.forget(gs, &learnt);
    requests::finish(ctx, gs, handled).await?;
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
        let second = around.observe(ctx, Some(&deployment), Some(&decision), None);
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

/// What [`write_status`] left in the apiserver.
pub(super) struct StatusWritten {
    /// Whether it wrote (the status differed).
    pub(super) written: bool,
    /// The status the `GoServer` has now.
    pub(super) status: GoServerStatus,
    /// The `GoServer`'s resource version after the write, when it wrote.
    pub(super) resource_version: Option<String>,
}

/// Writes the status when it differs from the stored one.
///
/// With `guard` (`Some(requests)`), a write that carries requests
/// (`requests`) or changes the rollout state is made only over the version
/// of `gs` this reconcile read: a conflict (the view was stale) is
/// [`Error::StatusConflict`], and the reconcile looks again.
pub(super) async fn write_status(
    gs: &GoServer,
    ctx: &Context,
    observed: &Inputs<'_>,
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
pub(super) fn status_phase(
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

pub(super) async fn patch_status(
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

/// The note of a Warning Event when the `Scaling` condition has just
/// turned False (or False for another reason): told once, not at every
/// reconcile that still finds it so.
pub(super) fn scaling_failure(
    old: Option<&GoServerStatus>,
    new: &GoServerStatus,
) -> Option<String> {
    let now = status::condition(new, status::SCALING).filter(|c| c.status == "False")?;
    let before = old.and_then(|o| status::condition(o, status::SCALING));
    let told = before.is_some_and(|b| b.status == now.status && b.reason == now.reason);
    (!told).then(|| now.message.clone())
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
