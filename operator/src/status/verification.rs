//! `Verified`, and what a verification or an aborted canary adds to
//! `Degraded`.

use super::draft::{DEGRADED, Draft, VERIFIED};
use crate::crd::{CanaryPhase, CanaryStatus, GoServer, VerificationPhase, VerificationStatus};
use crate::rollout::{self};

/// `Degraded` while a canary that failed a step stays at weight 0 (no
/// `autoRollback`): the spec asks for a revision that does not serve.
pub(super) fn canary_aborted(
    revision: Option<&str>,
    failed_revision: Option<&str>,
    verification: Option<&VerificationStatus>,
    canary: Option<&CanaryStatus>,
) -> Option<Draft> {
    let canary = canary.filter(|c| c.phase == CanaryPhase::Aborted)?;
    let v = verification
        .filter(|v| v.revision == canary.revision && v.phase == VerificationPhase::Failed)?;
    if failed_revision.is_some() {
        return None;
    }
    Some(Draft::new(
        DEGRADED,
        "True",
        "CanaryFailed",
        format!(
            "canary {} failed ({}); {} serves all traffic, and the canary stays at weight 0 \
             until the spec changes",
            canary.revision,
            v.message,
            revision.unwrap_or("the stable revision")
        ),
    ))
}

/// The `Verified` condition (absent without verification), and a
/// `Degraded` verdict when a revision failed: `RolledBack` when the good
/// one is back in force, `VerificationFailed` when the failed one stays.
pub(super) fn verification_verdicts(
    gs: &GoServer,
    revision: Option<&str>,
    failed_revision: Option<&str>,
    verification: Option<&VerificationStatus>,
) -> (Option<Draft>, Option<Draft>) {
    let verification_set = gs
        .spec
        .rollout
        .as_ref()
        .is_some_and(|r| r.verification.is_some());
    let Some(v) = verification.filter(|_| verification_set) else {
        return (None, None);
    };
    let status = match v.phase {
        VerificationPhase::Passed => "True",
        VerificationPhase::Failed => "False",
        // It will not pass as written: a person must edit a query.
        _ if v.reason == rollout::INVALID_QUERY => "False",
        _ => "Unknown",
    };
    let message = if v.message.is_empty() {
        format!("revision {}", v.revision)
    } else {
        format!("revision {}: {}", v.revision, v.message)
    };
    let verified = Draft::new(VERIFIED, status, &v.reason, message);
    let degraded = match failed_revision {
        Some(failed) => {
            let in_force = revision.unwrap_or("the last verified revision");
            let message = if v.revision == failed && v.reason == "RolledBack" {
                // Rolled back by request (see `rollout::request`).
                format!("revision {failed} was rolled back by request; {in_force} is in force")
            } else {
                let why = if v.revision == failed {
                    v.message.as_str()
                } else {
                    "see its history entry"
                };
                format!(
                    "revision {failed} failed verification ({why}); {in_force} is back in force"
                )
            };
            Some(Draft::new(DEGRADED, "True", "RolledBack", message))
        }
        None if v.phase == VerificationPhase::Failed && revision == Some(v.revision.as_str()) => {
            Some(Draft::new(
                DEGRADED,
                "True",
                "VerificationFailed",
                format!("revision {} failed verification: {}", v.revision, v.message),
            ))
        }
        None if v.reason == rollout::INVALID_QUERY => Some(Draft::new(
            DEGRADED,
            "True",
            rollout::INVALID_QUERY,
            format!(
                "revision {} cannot be verified: {}; edit the query",
                v.revision, v.message
            ),
        )),
        None if v.overdue_at.is_some() && v.phase != VerificationPhase::Passed => {
            let since = v
                .overdue_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            Some(Draft::new(
                DEGRADED,
                "True",
                "VerificationOverdue",
                format!(
                    "revision {} has had no verdict since its deadline ({since}) and stays in                      force unverified: {}: {}",
                    v.revision, v.reason, v.message
                ),
            ))
        }
        None => None,
    };
    (Some(verified), degraded)
}
