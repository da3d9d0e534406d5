//! The condition types, and a condition's draft before its transition
//! time is settled.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::crd::GoServerStatus;

/// The condition types a `GoServer` reports.
pub const READY: &str = "Ready";
pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const VERIFIED: &str = "Verified";
pub const SCALING: &str = "Scaling";
pub const MONITORED: &str = "Monitored";
pub const ROUTED: &str = "Routed";

/// One condition before its transition time is known.
pub(super) struct Draft {
    pub(super) type_: &'static str,
    pub(super) status: &'static str,
    pub(super) reason: String,
    pub(super) message: String,
}

impl Draft {
    pub(super) fn new(
        type_: &'static str,
        status: &'static str,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

pub(super) const DEADLINE_MESSAGE: &str =
    "the rollout did not finish within the Deployment's progress deadline";

/// The condition `type_` of a status, if present.
pub fn condition<'a>(status: &'a GoServerStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}
