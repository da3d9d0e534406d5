//! What `kubectl gantry wait` waits for: the spec's revision settled one
//! way or the other, read from a `GoServer` the operator has caught up
//! with.

use gantry_operator::crd::GoServer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// How the spec's revision settled, and the exit status `wait` gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Verified and every replica ready (exit 0).
    Verified { revision: String },
    /// Without verification: every replica ready (exit 0).
    Ready { revision: String },
    /// Failed its verification and rolled back to the last good revision
    /// (exit 1).
    RolledBack { revision: String, why: String },
    /// Failed and stays in force, or cannot be rolled out: a failed
    /// verification without automatic rollback, a Deployment past its
    /// progress deadline, a spec the operator refuses (exit 1).
    Failed { why: String },
    /// Held for a person: a marginal comparison, or no verdict by the
    /// deadline with `onDeadline: Hold` (exit 3).
    Held { why: String },
}

impl Settled {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Verified { .. } | Self::Ready { .. } => 0,
            Self::RolledBack { .. } | Self::Failed { .. } => 1,
            Self::Held { .. } => 3,
        }
    }

    pub fn describe(&self, name: &str) -> String {
        match self {
            Self::Verified { revision } => format!("{name}: {revision} verified and ready"),
            Self::Ready { revision } => {
                format!("{name}: {revision} ready (the GoServer has no verification)")
            }
            Self::RolledBack { revision, why } => {
                format!("{name}: {revision} was rolled back: {why}")
            }
            Self::Failed { why } => format!("{name}: failed: {why}"),
            Self::Held { why } => format!("{name}: held for a decision: {why}"),
        }
    }
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn reason_and_message(c: &Condition) -> String {
    if c.message.is_empty() {
        c.reason.clone()
    } else {
        format!("{} ({})", c.reason, c.message)
    }
}

/// How the spec's revision settled, or None while it is still on its way
/// (or the operator has not yet seen the spec's generation).
pub fn settled(gs: &GoServer) -> Option<Settled> {
    let status = gs.status.as_ref()?;
    if status.observed_generation.unwrap_or(0) < gs.metadata.generation.unwrap_or(0) {
        return None;
    }
    let revision = status.revision.clone()?;
    let degraded = condition(&status.conditions, "Degraded").filter(|c| c.status == "True");
    if let Some(failed) = &status.failed_revision {
        let why = degraded.map_or_else(|| "failed verification".to_owned(), reason_and_message);
        return Some(Settled::RolledBack {
            revision: failed.clone(),
            why,
        });
    }
    if let Some(d) = degraded {
        return Some(if d.reason == "VerificationOverdue" {
            Settled::Held {
                why: reason_and_message(d),
            }
        } else {
            Settled::Failed {
                why: reason_and_message(d),
            }
        });
    }
    let ready = condition(&status.conditions, "Ready").is_some_and(|c| c.status == "True");
    let has_verification = gs
        .spec
        .rollout
        .as_ref()
        .is_some_and(|r| r.verification.is_some());
    if !has_verification {
        return ready.then_some(Settled::Ready { revision });
    }
    let verdict = condition(&status.conditions, "Verified")?;
    let of_this_revision = status
        .verification
        .as_ref()
        .is_some_and(|v| v.revision == revision);
    match verdict.status.as_str() {
        "True" if ready && of_this_revision => Some(Settled::Verified { revision }),
        "False" if of_this_revision => Some(Settled::Failed {
            why: reason_and_message(verdict),
        }),
        "Unknown" if verdict.reason == "Marginal" => Some(Settled::Held {
            why: reason_and_message(verdict),
        }),
        _ => None,
    }
}

/// Where the spec's revision stands while it is not settled, for the
/// message of a `wait` that timed out.
pub fn pending(gs: &GoServer) -> String {
    let Some(status) = gs.status.as_ref() else {
        return "the operator has not reported on it yet".to_owned();
    };
    if status.observed_generation.unwrap_or(0) < gs.metadata.generation.unwrap_or(0) {
        return "the operator has not seen the newest spec yet".to_owned();
    }
    ["Verified", "Ready"]
        .iter()
        .filter_map(|t| condition(&status.conditions, t))
        .map(|c| format!("{} {}: {}", c.type_, c.status, reason_and_message(c)))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[allow(clippy::needless_pass_by_value, reason = "the tests pass json! values")]
    fn gs(verification: bool, generation: i64, status: serde_json::Value) -> GoServer {
        let mut spec = json!({"image": "web:2"});
        if verification {
            spec["rollout"] = json!({"verification": {
                "metrics": [{"name": "error-rate", "query": "q", "max": 0.01}],
            }});
        }
        serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
            "metadata": {"name": "web", "generation": generation},
            "spec": spec,
            "status": status,
        }))
        .unwrap()
    }

    fn cond(type_: &str, status: &str, reason: &str) -> serde_json::Value {
        json!({"type": type_, "status": status, "reason": reason, "message": "",
               "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    #[test]
    fn a_verified_and_ready_revision_settles_with_zero() {
        let s = json!({"observedGeneration": 2, "revision": "web-2",
            "verification": {"revision": "web-2", "phase": "Passed", "reason": "Passed"},
            "conditions": [cond("Ready", "True", "Ready"), cond("Verified", "True", "Passed")]});
        let got = settled(&gs(true, 2, s.clone())).unwrap();
        assert_eq!(
            got,
            Settled::Verified {
                revision: "web-2".into()
            }
        );
        assert_eq!(got.exit_code(), 0);
        // A spec newer than the operator has seen is not settled, whatever
        // the status says of the older one.
        assert_eq!(settled(&gs(true, 3, s)), None);
    }

    #[test]
    fn measuring_is_not_settled_and_says_where_it_is() {
        let s = json!({"observedGeneration": 2, "revision": "web-2",
            "verification": {"revision": "web-2", "phase": "Measuring", "reason": "Measuring"},
            "conditions": [cond("Ready", "True", "Ready"), cond("Verified", "Unknown", "Measuring")]});
        let g = gs(true, 2, s);
        assert_eq!(settled(&g), None);
        assert!(
            pending(&g).contains("Verified Unknown: Measuring"),
            "{}",
            pending(&g)
        );
    }

    #[test]
    fn rolled_back_failed_and_held_are_told_apart() {
        let rolled = json!({"observedGeneration": 2, "revision": "web-1", "failedRevision": "web-2",
            "conditions": [cond("Ready", "True", "Ready"), cond("Degraded", "True", "RolledBack"),
                           cond("Verified", "False", "RolledBack")]});
        let got = settled(&gs(true, 2, rolled)).unwrap();
        assert!(matches!(&got, Settled::RolledBack { revision, .. } if revision == "web-2"));
        assert_eq!(got.exit_code(), 1);

        let failed = json!({"observedGeneration": 2, "revision": "web-2",
            "verification": {"revision": "web-2", "phase": "Failed", "reason": "Failed"},
            "conditions": [cond("Ready", "True", "Ready"), cond("Degraded", "True", "VerificationFailed"),
                           cond("Verified", "False", "Failed")]});
        assert!(matches!(
            settled(&gs(true, 2, failed)),
            Some(Settled::Failed { .. })
        ));

        let marginal = json!({"observedGeneration": 2, "revision": "web-2",
            "verification": {"revision": "web-2", "phase": "Measuring", "reason": "Marginal"},
            "conditions": [cond("Ready", "True", "Ready"), cond("Verified", "Unknown", "Marginal")]});
        let got = settled(&gs(true, 2, marginal)).unwrap();
        assert!(matches!(got, Settled::Held { .. }));
        assert_eq!(got.exit_code(), 3);

        let stuck = json!({"observedGeneration": 2, "revision": "web-2",
            "conditions": [cond("Ready", "False", "ProgressDeadlineExceeded"),
                           cond("Degraded", "True", "ProgressDeadlineExceeded")]});
        assert!(matches!(
            settled(&gs(false, 2, stuck)),
            Some(Settled::Failed { .. })
        ));
    }

    #[test]
    fn without_verification_ready_is_enough() {
        let s = json!({"observedGeneration": 1, "revision": "web-1",
            "conditions": [cond("Ready", "True", "Ready")]});
        assert_eq!(
            settled(&gs(false, 1, s)),
            Some(Settled::Ready {
                revision: "web-1".into()
            })
        );
        let rolling = json!({"observedGeneration": 1, "revision": "web-1",
            "conditions": [cond("Ready", "False", "RolloutInProgress")]});
        assert_eq!(settled(&gs(false, 1, rolling)), None);
    }
}
