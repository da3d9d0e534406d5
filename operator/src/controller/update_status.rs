//! The status write: computed from what was observed, written only when
//! it differs, guarded when it changes the rollout state.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use super::context::{Context, RolloutWritten, namespaced, now, rollout_state};
use super::events::publish;
use crate::apply::FIELD_MANAGER;
use crate::crd::{GoServer, GoServerStatus};
use crate::error::{Error, Result};
use crate::fault;
use crate::gateway::HttpRoute;
use crate::rollout::{self};
use crate::status::{self, Observed};

/// What a status write of [`super::report`] reads: one per write, each seeing the
/// decision as it stands then.
pub(super) fn observed<'a>(
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
