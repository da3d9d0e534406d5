//! Requests made by hand, as annotations on the `GoServer` (what
//! `kubectl gantry rollback|promote|retry` sets):
//!
//! - `gantry.dev/rollback-to: <revision>`: put an earlier revision back in
//!   force. The spec's revision is held off as the failed one, exactly as
//!   after an automatic rollback, until the spec changes or it is retried.
//! - `gantry.dev/promote: <revision>`: the revision under verification
//!   passes now; the rest of its verification is skipped.
//! - `gantry.dev/retry: <revision>`: the revision that was rolled back is
//!   deployed and verified again, without a change to the spec.
//!
//! A request is a status transition, made once: the reconcile applies it to
//! the status it starts from, writes that status, and only then removes the
//! annotation (with a JSON patch that tests its value first, so a newer
//! request is never lost). A request seen twice, because the operator
//! stopped between the two writes, finds its work done and changes nothing.
//! A request that does not fit the state (an unknown revision, nothing
//! under verification) is refused with a Warning Event and removed too.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{GoServer, GoServerStatus, Verdict, VerificationPhase};

/// Puts an earlier revision back in force.
pub const ROLLBACK_TO: &str = "gantry.dev/rollback-to";
/// Passes the revision under verification now.
pub const PROMOTE: &str = "gantry.dev/promote";
/// Deploys a rolled-back revision again.
pub const RETRY: &str = "gantry.dev/retry";

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    RollbackTo,
    Promote,
    Retry,
}

impl Kind {
    /// The annotation that carries it.
    pub fn annotation(self) -> &'static str {
        match self {
            Self::RollbackTo => ROLLBACK_TO,
            Self::Promote => PROMOTE,
            Self::Retry => RETRY,
        }
    }

    /// The reason of the Event that tells it was done.
    pub fn reason(self) -> &'static str {
        match self {
            Self::RollbackTo => "RollbackRequested",
            Self::Promote => "PromoteRequested",
            Self::Retry => "RetryRequested",
        }
    }
}

/// One request read from the annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub kind: Kind,
    /// The annotation's value, trimmed: the revision named.
    pub revision: String,
    /// The annotation's value as set, for the test before its removal.
    pub raw: String,
}

/// A request with what came of it: a note for a Normal Event, or why it was
/// refused, for a Warning one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    pub request: Request,
    pub outcome: Result<String, String>,
}

/// The requests on `gs`, in the order they are applied: a rollback first,
/// then a retry, then a promotion.
pub fn requests(gs: &GoServer) -> Vec<Request> {
    let Some(annotations) = gs.metadata.annotations.as_ref() else {
        return Vec::new();
    };
    [Kind::RollbackTo, Kind::Retry, Kind::Promote]
        .into_iter()
        .filter_map(|kind| {
            let raw = annotations.get(kind.annotation())?;
            Some(Request {
                kind,
                revision: raw.trim().to_owned(),
                raw: raw.clone(),
            })
        })
        .collect()
}

/// What the state must hold for a request: the spec's revision, the
/// revision in force before any request, and whether a revision can be put
/// back in force (its `ControllerRevision` exists).
pub struct Facts<'a> {
    pub spec_revision: &'a str,
    pub in_force: &'a str,
    pub now: &'a Time,
    pub stored: &'a dyn Fn(&str) -> bool,
}

/// Applies `requests` to the status of `gs`, in order; the outcome of each.
pub fn apply(gs: &mut GoServer, requests: Vec<Request>, facts: &Facts<'_>) -> Vec<Handled> {
    let status = gs.status.get_or_insert_with(GoServerStatus::default);
    requests
        .into_iter()
        .map(|request| {
            let outcome = if request.revision.is_empty() {
                Err(format!("{} names no revision", request.kind.annotation()))
            } else {
                match request.kind {
                    Kind::RollbackTo => rollback_to(status, &request.revision, facts),
                    Kind::Promote => promote(status, &request.revision, facts.now),
                    Kind::Retry => retry(status, &request.revision, facts),
                }
            };
            Handled { request, outcome }
        })
        .collect()
}

fn rollback_to(
    status: &mut GoServerStatus,
    target: &str,
    facts: &Facts<'_>,
) -> Result<String, String> {
    let spec = facts.spec_revision;
    if target == spec {
        if status.failed_revision.as_deref() == Some(spec) {
            return Err(format!(
                "revision {target} is the spec's own and is held off after a rollback; \
                 `kubectl gantry retry` deploys it again"
            ));
        }
        return Err(format!(
            "revision {target} is the spec's own and in force already"
        ));
    }
    if status.failed_revision.as_deref() == Some(spec)
        && status.last_good_revision.as_deref() == Some(target)
    {
        // Seen before (the annotation outlived the status write): done.
        return Ok(format!("revision {target} is in force; {spec} is held off"));
    }
    if !(facts.stored)(target) {
        return Err(format!(
            "revision {target} is not recorded (no ControllerRevision of that name); \
             `kubectl gantry history` lists the revisions there are"
        ));
    }
    status.failed_revision = Some(spec.to_owned());
    status.last_good_revision = Some(target.to_owned());
    if let Some(entry) = status.history.iter_mut().find(|h| h.revision == spec) {
        entry.verdict = Verdict::RolledBack;
    }
    if let Some(v) = status.verification.as_mut().filter(|v| v.revision == spec) {
        if !matches!(
            v.phase,
            VerificationPhase::Passed | VerificationPhase::Failed
        ) {
            v.phase = VerificationPhase::Failed;
        }
        "RolledBack".clone_into(&mut v.reason);
        v.message = format!("rolled back to {target} by request");
    }
    Ok(format!(
        "rolled back from {} to {target} by request; {spec} is held off until the spec \
         changes or it is retried",
        facts.in_force
    ))
}

fn promote(status: &mut GoServerStatus, target: &str, now: &Time) -> Result<String, String> {
    let Some(v) = status
        .verification
        .as_mut()
        .filter(|v| v.revision == target)
    else {
        return Err(format!("revision {target} is not under verification"));
    };
    match v.phase {
        VerificationPhase::Passed if v.reason == "Promoted" => {
            return Ok(format!("revision {target} was promoted"));
        }
        VerificationPhase::Passed | VerificationPhase::Failed => {
            return Err(format!(
                "the verification of revision {target} has ended ({:?})",
                v.phase
            ));
        }
        VerificationPhase::Pending
        | VerificationPhase::Measuring
        | VerificationPhase::PostVerification => {}
    }
    v.phase = VerificationPhase::Passed;
    "Promoted".clone_into(&mut v.reason);
    "promoted by request: the rest of the verification was skipped".clone_into(&mut v.message);
    // Its samples so far are the next revision's baseline, as a verified
    // revision's are.
    status.baseline = super::compare::baseline::left_by(v, now);
    status.last_good_revision = Some(target.to_owned());
    if let Some(entry) = status.history.iter_mut().find(|h| h.revision == target) {
        entry.verdict = Verdict::Passed;
    }
    Ok(format!(
        "revision {target} promoted by request; its verification was skipped"
    ))
}

fn retry(status: &mut GoServerStatus, target: &str, facts: &Facts<'_>) -> Result<String, String> {
    if status.failed_revision.as_deref() != Some(target) {
        if facts.in_force == target {
            // Seen before: it is back in force.
            return Ok(format!("revision {target} is deployed again"));
        }
        return Err(format!("revision {target} is not the rolled-back revision"));
    }
    if target != facts.spec_revision {
        return Err(format!(
            "revision {target} is no longer what the spec asks for ({})",
            facts.spec_revision
        ));
    }
    status.failed_revision = None;
    // A new canary starts from its first step.
    if status.canary.as_ref().is_some_and(|c| c.revision == target) {
        status.canary = None;
    }
    // A new verification starts from Pending; the old one is dropped.
    if status
        .verification
        .as_ref()
        .is_some_and(|v| v.revision == target)
    {
        status.verification = None;
    }
    if let Some(at) = status.history.iter().position(|h| h.revision == target) {
        let mut entry = status.history.remove(at);
        entry.verdict = Verdict::Unverified;
        entry.deployed_at = facts.now.clone();
        entry.metrics.clear();
        status.history.insert(0, entry);
    }
    Ok(format!(
        "revision {target} deployed again by request, to be verified anew"
    ))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;
    use crate::build::tests::goserver;
    use crate::crd::{HistoryEntry, VerificationStatus};

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn entry(revision: &str, verdict: Verdict, deployed: i64) -> HistoryEntry {
        HistoryEntry {
            revision: revision.to_owned(),
            image: format!("hello:{revision}"),
            deployed_at: at(deployed),
            verdict,
            metrics: Vec::new(),
            compared_with: None,
        }
    }

    /// v2 under verification (`phase`), v1 verified before it.
    fn verifying(phase: VerificationPhase, annotations: &[(&str, &str)]) -> GoServer {
        let mut gs = goserver(json!({"image": "hello:2"}));
        gs.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        gs.status = Some(GoServerStatus {
            revision: Some("v2".to_owned()),
            last_good_revision: Some("v1".to_owned()),
            verification: Some(VerificationStatus {
                revision: "v2".to_owned(),
                phase,
                reason: "Measuring".to_owned(),
                ..VerificationStatus::default()
            }),
            history: vec![
                entry("v2", Verdict::Unverified, 20),
                entry("v1", Verdict::Passed, 10),
            ],
            ..GoServerStatus::default()
        });
        gs
    }

    fn handle(gs: &mut GoServer, in_force: &str) -> Vec<Result<String, String>> {
        let stored = |r: &str| ["v1", "v2"].contains(&r);
        let now = at(30);
        let facts = Facts {
            spec_revision: "v2",
            in_force,
            now: &now,
            stored: &stored,
        };
        let requests = requests(gs);
        apply(gs, requests, &facts)
            .into_iter()
            .map(|h| h.outcome)
            .collect()
    }

    #[test]
    fn a_rollback_holds_the_spec_revision_off_like_an_automatic_one() {
        let mut gs = verifying(VerificationPhase::Measuring, &[(ROLLBACK_TO, " v1 ")]);
        let outcomes = handle(&mut gs, "v2");
        assert!(outcomes[0].is_ok(), "{outcomes:?}");
        let status = gs.status.as_ref().unwrap();
        assert_eq!(status.failed_revision.as_deref(), Some("v2"));
        assert_eq!(status.last_good_revision.as_deref(), Some("v1"));
        assert_eq!(status.history[0].verdict, Verdict::RolledBack);
        let v = status.verification.as_ref().unwrap();
        assert_eq!(
            (v.phase, v.reason.as_str()),
            (VerificationPhase::Failed, "RolledBack")
        );
        assert_eq!(crate::rollout::in_force(&gs, "v2"), "v1");

        // The same request again (the annotation outlived the write)
        // changes nothing.
        let before = gs.status.clone();
        assert!(handle(&mut gs, "v1")[0].is_ok());
        assert_eq!(gs.status, before);
    }

    #[test]
    fn a_rollback_to_an_unknown_or_the_spec_revision_is_refused() {
        for target in ["v9", "v2"] {
            let mut gs = verifying(VerificationPhase::Measuring, &[(ROLLBACK_TO, target)]);
            let before = gs.status.clone();
            let outcome = handle(&mut gs, "v2").remove(0);
            assert!(outcome.unwrap_err().contains(target));
            assert_eq!(gs.status, before, "a refused request changes nothing");
        }
        let mut gs = verifying(VerificationPhase::Measuring, &[(ROLLBACK_TO, "  ")]);
        assert!(
            handle(&mut gs, "v2")[0]
                .as_ref()
                .unwrap_err()
                .contains("names no revision")
        );
    }

    #[test]
    fn a_promotion_passes_the_revision_under_verification_only() {
        let mut gs = verifying(VerificationPhase::Measuring, &[(PROMOTE, "v2")]);
        assert!(handle(&mut gs, "v2")[0].is_ok());
        let status = gs.status.as_ref().unwrap();
        assert_eq!(status.last_good_revision.as_deref(), Some("v2"));
        assert_eq!(status.history[0].verdict, Verdict::Passed);
        let v = status.verification.as_ref().unwrap();
        assert_eq!(
            (v.phase, v.reason.as_str()),
            (VerificationPhase::Passed, "Promoted")
        );
        // Seen again: done, nothing changes.
        let before = gs.status.clone();
        assert!(handle(&mut gs, "v2")[0].is_ok());
        assert_eq!(gs.status, before);

        let mut other = verifying(VerificationPhase::Measuring, &[(PROMOTE, "v1")]);
        assert!(handle(&mut other, "v2")[0].is_err());
        let mut ended = verifying(VerificationPhase::Failed, &[(PROMOTE, "v2")]);
        assert!(
            handle(&mut ended, "v2")[0]
                .as_ref()
                .unwrap_err()
                .contains("ended")
        );
    }

    #[test]
    fn a_retry_deploys_the_rolled_back_revision_again() {
        let mut gs = verifying(VerificationPhase::Measuring, &[(ROLLBACK_TO, "v1")]);
        handle(&mut gs, "v2");
        gs.metadata.annotations = Some([(RETRY.to_owned(), "v2".to_owned())].into());
        assert!(handle(&mut gs, "v1")[0].is_ok());
        let status = gs.status.as_ref().unwrap();
        assert_eq!(status.failed_revision, None);
        assert_eq!(status.verification, None, "verified anew from Pending");
        assert_eq!(status.history[0].revision, "v2");
        assert_eq!(status.history[0].verdict, Verdict::Unverified);
        assert_eq!(status.history[0].deployed_at, at(30));
        assert_eq!(crate::rollout::in_force(&gs, "v2"), "v2");
        // Seen again once v2 is back in force: done.
        assert!(handle(&mut gs, "v2")[0].is_ok());
        // A retry of a revision that was not rolled back is refused.
        let mut gs = verifying(VerificationPhase::Measuring, &[(RETRY, "v1")]);
        assert!(handle(&mut gs, "v2")[0].is_err());
    }
}
