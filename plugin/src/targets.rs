//! The revisions the requests aim at: where `rollback` goes, what
//! `promote` passes, what `retry` deploys again and what `abort` ends.

use anyhow::{Result, bail};
use gantry_operator::crd::{CanaryPhase, GoServerStatus, Verdict, VerificationPhase};

/// The revision `rollback` goes to without `--to`: the last good one when
/// another is in force, else the newest older revision that passed (or,
/// without verification, that was not rolled back).
pub fn rollback_target(status: &GoServerStatus) -> Result<String> {
    let current = status.revision.as_deref();
    if let Some(good) = status.last_good_revision.as_deref()
        && Some(good) != current
    {
        return Ok(good.to_owned());
    }
    let older = status
        .history
        .iter()
        .skip_while(|h| Some(h.revision.as_str()) != current)
        .skip(1);
    let mut candidates =
        older.filter(|h| h.verdict != Verdict::Failed && h.verdict != Verdict::RolledBack);
    match candidates.next() {
        Some(h) => Ok(h.revision.clone()),
        None => bail!("no earlier revision to roll back to in the history"),
    }
}

/// The revision `promote` passes: the one under verification.
pub fn promote_target(status: &GoServerStatus) -> Result<String> {
    match &status.verification {
        Some(v)
            if !matches!(
                v.phase,
                VerificationPhase::Passed | VerificationPhase::Failed
            ) =>
        {
            Ok(v.revision.clone())
        }
        Some(v) => bail!(
            "the verification of {} has ended ({}); nothing to promote",
            v.revision,
            phase(v.phase)
        ),
        None => bail!("no revision is under verification"),
    }
}

/// The revision `retry` deploys again: the rolled-back one.
pub fn retry_target(status: &GoServerStatus) -> Result<String> {
    match &status.failed_revision {
        Some(r) => Ok(r.clone()),
        None => bail!("no revision is rolled back; nothing to retry"),
    }
}

/// What `abort` ends and where it goes back to: the revision under
/// verification (or in a canary) and the last good revision. Refused when
/// nothing is in progress, or there is nothing verified to go back to (a
/// GoServer's first revision).
pub fn abort_target(status: &GoServerStatus) -> Result<(String, String)> {
    let current = status
        .verification
        .as_ref()
        .filter(|v| {
            matches!(
                v.phase,
                VerificationPhase::Pending | VerificationPhase::Measuring
            )
        })
        .map(|v| v.revision.clone())
        .or_else(|| {
            status
                .canary
                .as_ref()
                .filter(|c| matches!(c.phase, CanaryPhase::Progressing | CanaryPhase::Promoting))
                .map(|c| c.revision.clone())
        });
    let Some(current) = current else {
        bail!("no rollout is in progress; nothing to abort (`rollback` goes back by hand)");
    };
    match status.last_good_revision.as_deref() {
        Some(good) if good != current => Ok((current, good.to_owned())),
        _ => bail!("{current} has no verified revision before it to go back to"),
    }
}

/// A verification phase as the tables print it.
pub(crate) fn phase(phase: VerificationPhase) -> &'static str {
    match phase {
        VerificationPhase::Pending => "Pending",
        VerificationPhase::Measuring => "Measuring",
        VerificationPhase::PostVerification => "PostVerification",
        VerificationPhase::Passed => "Passed",
        VerificationPhase::Failed => "Failed",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn status(value: serde_json::Value) -> GoServerStatus {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn abort_ends_what_is_in_progress_and_goes_back_to_the_last_good() {
        let measuring = status(json!({"revision": "web-2", "lastGoodRevision": "web-1",
            "verification": {"revision": "web-2", "phase": "Measuring", "reason": "Measuring"}}));
        assert_eq!(
            abort_target(&measuring).unwrap(),
            ("web-2".to_owned(), "web-1".to_owned())
        );
        let canary = status(json!({"revision": "web-1", "lastGoodRevision": "web-1",
            "canary": {"revision": "web-2", "phase": "Progressing", "step": 0, "weight": 10}}));
        assert_eq!(
            abort_target(&canary).unwrap(),
            ("web-2".to_owned(), "web-1".to_owned())
        );
        let done = status(json!({"revision": "web-2", "lastGoodRevision": "web-2",
            "verification": {"revision": "web-2", "phase": "Passed", "reason": "Passed"}}));
        assert!(
            abort_target(&done)
                .unwrap_err()
                .to_string()
                .contains("nothing to abort")
        );
        let first = status(json!({"revision": "web-1",
            "verification": {"revision": "web-1", "phase": "Measuring", "reason": "Measuring"}}));
        assert!(
            abort_target(&first)
                .unwrap_err()
                .to_string()
                .contains("no verified revision")
        );
    }
}
