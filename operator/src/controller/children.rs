//! The children in force: the revision to run (the spec's, or a stored
//! one after a rollback), the canary beside it, and the live objects read
//! from the caches.

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::context::{Context, namespaced};
use super::events::publish_changes;
use crate::apply::{self, Applier, Told};
use crate::build::{self, Revision};
use crate::cache;
use crate::crd::GoServer;
use crate::error::{Error, Result};
use crate::fault;
use crate::gateway::HttpRoute;
use crate::rollout;

/// What the apply step left in force, for the verification and the status.
pub(super) struct Applied {
    /// The revision the stable Deployment runs: the spec's, or a stored one
    /// after a rollback.
    pub(super) in_force: Revision,
    /// The canary's revision, while one runs.
    pub(super) canary_revision: Option<Revision>,
    /// Whether the canary is draining (at weight 0, on its way out).
    pub(super) draining: bool,
    /// The live stable Deployment.
    pub(super) deployment: Deployment,
    /// The live canary Deployment, while one runs.
    pub(super) canary: Option<Deployment>,
    /// The live route, when the spec has one.
    pub(super) route: Option<HttpRoute>,
    /// The Events for the writes made, not yet published.
    pub(super) told: Vec<Told>,
    /// The note of a `DefaultedRequests` Event to publish with them.
    pub(super) defaulted: Option<String>,
}

/// Build and apply: the revision in force (and the canary, if a step
/// runs one) made into children and applied where they differ from the
/// caches.
pub(super) async fn apply(
    ctx: &Context,
    gs: &GoServer,
    spec_revision: &Revision,
    now: &Time,
) -> Result<Applied> {
    let mut plan = rollout::canary::plan(gs, &spec_revision.name, now);
    let in_force = if plan.stable == spec_revision.name {
        spec_revision.clone()
    } else {
        stored_revision(ctx, gs, &plan.stable).await?
    };
    let canary_run = canary_run(ctx, gs, &mut plan, spec_revision).await?;
    let canary_revision = canary_run.as_ref().map(|c| c.revision.clone());
    let children = build::build_with_canary(gs, in_force.clone(), canary_run)?;
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
        canary,
        route,
    } = match outcome {
        Ok(live) => live,
        Err(err) => {
            publish_changes(ctx, gs, told).await;
            return Err(err);
        }
    };
    Ok(Applied {
        in_force,
        canary_revision,
        draining: plan.canary.as_ref().is_some_and(|c| c.draining),
        deployment,
        canary,
        route,
        told,
        defaulted,
    })
}

/// The canary to run for `plan`, if any. It runs the spec's revision,
/// sized by its weight's share of the stable Deployment as it is now (the
/// HPA's count, when it scales). One that drains keeps the pods it has,
/// and is never made again: without a canary Deployment to drain, the plan
/// loses its canary.
pub(super) async fn canary_run(
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
        baseline: rollout::compares_beside(gs, &revision.name),
        revision,
        weight: canary.weight,
        replicas,
    }))
}

/// The note of an Event saying which requests the pods got by default
/// (see [`build::defaulted_requests`]), when this reconcile wrote the
/// Deployment that carries them: once per template, not per reconcile.
pub(super) fn defaulted_note(gs: &GoServer, changes: &[apply::Change]) -> Option<String> {
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

/// The stable Deployment's replicas as they are now: set by the HPA when
/// it scales, else by the spec.
pub(super) async fn stable_replicas(ctx: &Context, gs: &GoServer) -> Result<i32> {
    let live = cached_deployment(ctx, gs).await?;
    Ok(live
        .and_then(|d| d.spec)
        .and_then(|s| s.replicas)
        .unwrap_or(gs.spec.replicas))
}

/// A revision read back from its `ControllerRevision`, to put it back in
/// force after a rollback or to run beside a canary.
pub(super) async fn stored_revision(ctx: &Context, gs: &GoServer, name: &str) -> Result<Revision> {
    let record = namespaced::<ControllerRevision>(ctx, gs)?
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("get ControllerRevision {name}"), e))?
        .ok_or_else(|| Error::RevisionMissing {
            name: name.to_owned(),
        })?;
    Revision::from_controller_revision(&record)
}

/// The Deployment of `gs` as the cache has it, or from the apiserver when
/// the cache does not.
pub(super) async fn cached_deployment(ctx: &Context, gs: &GoServer) -> Result<Option<Deployment>> {
    let ns = gs.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    if let Some(cached) = cache::get(&ctx.caches.deployments, &ns, &gs.name_any())? {
        return Ok(Some(cached));
    }
    namespaced::<Deployment>(ctx, gs)?
        .get_opt(&gs.name_any())
        .await
        .map_err(|e| Error::kube("get Deployment", e))
}
