//! Every Event the reconcile publishes on a `GoServer`, in one place
//! (decisions are told by [`crate::notify`]).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType};
use tracing::warn;

use super::context::Context;
use crate::apply::{self, Told};
use crate::crd::GoServer;
use crate::error::Error;
use crate::rollout::outbox;

/// A Warning Event for each decision that left a full outbox untold.
pub(super) async fn publish_dropped(
    ctx: &Context,
    gs: &GoServer,
    dropped: &[crate::crd::Notification],
) {
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

/// A Warning Event on the `GoServer` for a failed reconcile.
pub(super) async fn publish_error(ctx: &Context, gs: &GoServer, err: &Error) {
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

pub(super) async fn publish_defaulted(ctx: &Context, gs: &GoServer, note: Option<String>) {
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
pub(super) async fn publish_changes(ctx: &Context, gs: &GoServer, told: Vec<Told>) {
    futures::future::join_all(told.into_iter().map(|told| publish_change(ctx, gs, told))).await;
}

/// A Normal Event on the `GoServer` for writes of the applier.
pub(super) async fn publish_change(ctx: &Context, gs: &GoServer, told: Told) {
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

pub(super) async fn publish(
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
