//! `Ready`, `Available`, `Progressing` and `Degraded`: the workload's
//! conditions.

use k8s_openapi::api::apps::v1::Deployment;

use super::children::{GATEWAY_API_MISSING, gateway_api_missing};
use super::deployment::Rollout;
use super::draft::{AVAILABLE, DEADLINE_MESSAGE, DEGRADED, Draft, PROGRESSING, READY};
use super::inputs::Inputs;
use crate::cache::optional::Presence;
use crate::crd::GoServer;

pub(super) fn ready(observed: &Inputs<'_>, rollout: Option<&Rollout>) -> Draft {
    match (observed.error, rollout) {
        (Some(err), _) => Draft::new(READY, "False", err.reason(), err.to_string()),
        (None, None) => Draft::new(
            READY,
            "False",
            "DeploymentMissing",
            "the Deployment does not exist yet",
        ),
        (None, Some(r)) if r.deadline_exceeded => {
            Draft::new(READY, "False", "ProgressDeadlineExceeded", DEADLINE_MESSAGE)
        }
        (None, Some(r)) if r.complete() && r.ready >= r.desired => Draft::new(
            READY,
            "True",
            "Ready",
            format!("{} of {} replicas ready", r.ready, r.desired),
        ),
        (None, Some(r)) => Draft::new(
            READY,
            "False",
            "RolloutInProgress",
            format!(
                "{} of {} replicas updated, {} ready",
                r.updated, r.desired, r.ready
            ),
        ),
    }
}

/// Mirrors the Deployment's own `Available` condition.
pub(super) fn available(deployment: Option<&Deployment>) -> Draft {
    let condition = deployment
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Available"));
    match condition {
        Some(c) => Draft::new(
            AVAILABLE,
            match c.status.as_str() {
                "True" => "True",
                "False" => "False",
                _ => "Unknown",
            },
            c.reason.as_deref().unwrap_or("Unknown"),
            c.message.clone().unwrap_or_default(),
        ),
        None => Draft::new(
            AVAILABLE,
            "Unknown",
            "DeploymentPending",
            "the Deployment reports no availability yet",
        ),
    }
}

/// True while a rollout is under way.
pub(super) fn progressing(revision: Option<&str>, rollout: Option<&Rollout>) -> Draft {
    match rollout {
        Some(r) if r.deadline_exceeded => Draft::new(
            PROGRESSING,
            "False",
            "ProgressDeadlineExceeded",
            "the rollout stalled",
        ),
        Some(r) if r.complete() => Draft::new(
            PROGRESSING,
            "False",
            "RolloutComplete",
            format!("revision {} is rolled out", revision.unwrap_or("unknown")),
        ),
        Some(r) => Draft::new(
            PROGRESSING,
            "True",
            "RollingOut",
            format!("{} of {} replicas updated", r.updated, r.desired),
        ),
        None => Draft::new(
            PROGRESSING,
            "Unknown",
            "DeploymentMissing",
            "the Deployment does not exist yet",
        ),
    }
}

/// A permanent error, a stalled rollout, or a route the cluster cannot
/// have.
pub(super) fn degraded(gs: &GoServer, observed: &Inputs<'_>, rollout: Option<&Rollout>) -> Draft {
    match (observed.error, rollout) {
        (Some(err), _) => Draft::new(DEGRADED, "True", err.reason(), err.to_string()),
        (None, Some(r)) if r.deadline_exceeded => Draft::new(
            DEGRADED,
            "True",
            "ProgressDeadlineExceeded",
            DEADLINE_MESSAGE,
        ),
        _ if gs.spec.route.is_some() && observed.routes == Presence::Missing => {
            Draft::new(DEGRADED, "True", GATEWAY_API_MISSING, gateway_api_missing())
        }
        _ => Draft::new(DEGRADED, "False", "AsExpected", ""),
    }
}
