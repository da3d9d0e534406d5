//! Requests by annotation (`gantry.dev/rollback`, `promote`, `retry`):
//! applied to the view a reconcile works on, then removed once recorded.

use std::borrow::Cow;

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::{debug, info};

use super::context::{Context, namespaced, now};
use super::events::publish;
use crate::apply::{self};
use crate::cache::{self};
use crate::crd::GoServer;
use crate::error::{Error, Result};
use crate::fault;
use crate::rollout::request::{self, Handled};
use crate::rollout::{self};

/// Applies the requests made by annotation (see [`rollout::request`]) to a
/// copy of `gs`; the copy (`gs` itself when there is none) and what came of
/// each request. Whether a rollback's revision is recorded is read from the
/// `ControllerRevision` cache.
pub(super) fn handle<'a>(
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
pub(super) async fn finish(ctx: &Context, gs: &GoServer, handled: Vec<Handled>) -> Result<()> {
    if handled.is_empty() {
        return Ok(());
    }
    fault::in_phase("requests", remove(ctx, gs, handled)).await
}

/// The removal of [`finish`], and its Events.
pub(super) async fn remove(ctx: &Context, gs: &GoServer, handled: Vec<Handled>) -> Result<()> {
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
