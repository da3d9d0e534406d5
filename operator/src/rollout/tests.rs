//! The verification state machine, step by step, with time as data.

use k8s_openapi::jiff::Timestamp;
use pretty_assertions::assert_eq;
use serde_json::json;

use super::*;
use crate::build::RevisionData;
use crate::build::tests::goserver;
use crate::crd::GoServerStatus;

pub(super) fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(seconds).unwrap())
}

pub(super) fn revision(name: &str) -> Revision {
    Revision {
        name: name.to_owned(),
        data: RevisionData {
            template: serde_json::from_value(
                json!({"spec": {"containers": [{"name": "server", "image": "hello:2"}]}}),
            )
            .unwrap(),
            config: BTreeMap::new(),
        },
    }
}

#[allow(clippy::needless_pass_by_value)] // callers pass `json!` literals
fn verified(extra: serde_json::Value) -> GoServer {
    let mut verification = json!({
        "warmup": "10s", "interval": "10s", "window": "30s", "minSamples": 2, "failureLimit": 0,
        "metrics": [{"name": "error-rate", "query": "q{revision=\"${revision}\"}", "max": 0.01}],
    });
    verification
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    goserver(json!({"image": "hello:2", "rollout": {"verification": verification}}))
}

fn with_status(mut gs: GoServer, decision: &Decision) -> GoServer {
    gs.status = Some(GoServerStatus {
        revision: Some(decision.revision.clone()),
        last_good_revision: decision.last_good_revision.clone(),
        failed_revision: decision.failed_revision.clone(),
        verification: decision.verification.clone(),
        history: decision.history.clone(),
        ..GoServerStatus::default()
    });
    gs
}

/// Runs one reconcile's worth of verification at `now`: announce, then
/// measure with `values` if a measurement is due.
fn step(gs: &GoServer, now: i64, complete: bool, values: &[Measurement]) -> Decision {
    let rev = revision(&in_force(gs, "hello-new"));
    let now = at(now);
    let observed = Observation {
        now: &now,
        spec_revision: "hello-new",
        in_force: &rev,
        complete,
        deadline_exceeded: false,
        canary: None,
    };
    let first = progress(gs, &observed, None);
    if first.measure {
        progress(gs, &observed, Some(values))
    } else {
        first
    }
}

fn phase(d: &Decision) -> (VerificationPhase, String) {
    let v = d.verification.as_ref().unwrap();
    (v.phase, v.reason.clone())
}

fn good_before(gs: GoServer) -> GoServer {
    let mut gs = gs;
    gs.status = Some(GoServerStatus {
        last_good_revision: Some("hello-old".to_owned()),
        ..GoServerStatus::default()
    });
    gs
}

#[test]
fn a_good_revision_passes_after_its_window() {
    let mut gs = good_before(verified(json!({})));
    let d = step(&gs, 100, false, &[]);
    assert_eq!(
        phase(&d),
        (VerificationPhase::Pending, "Pending".to_owned())
    );
    assert_eq!(d.history[0].revision, "hello-new");
    gs = with_status(gs, &d);
    // Available at 110: the first measurement is due at 120 (warm-up 10 s).
    let d = step(&gs, 110, true, &[]);
    assert_eq!(phase(&d).0, VerificationPhase::Measuring);
    assert!(!d.measure);
    assert_eq!(d.requeue, Some(Duration::from_secs(10)));
    gs = with_status(gs, &d);
    // Scaling in the middle (complete false) changes nothing.
    for t in [120, 130, 140] {
        let d = step(&gs, t, t != 130, &[Ok(Some(0.0))]);
        assert_eq!(phase(&d).0, VerificationPhase::Measuring, "at {t}");
        gs = with_status(gs, &d);
    }
    // The window ends at 150.
    let d = step(&gs, 150, true, &[Ok(Some(0.001))]);
    assert_eq!(phase(&d), (VerificationPhase::Passed, "Passed".to_owned()));
    assert_eq!(d.last_good_revision.as_deref(), Some("hello-new"));
    assert_eq!(d.history[0].verdict, HistoryVerdict::Passed);
    assert_eq!(d.history[0].metrics[0].value, Some(0.001));
    let decided = d.decided.clone().unwrap();
    assert_eq!(decided.event, DecisionKind::Verified);
    assert_eq!(decided.previous_good_revision.as_deref(), Some("hello-old"));
    // Recorded but not told (the operator stopped in between): the next
    // reconcile tells the same decision.
    let recorded = with_status(gs.clone(), &d);
    let again = step(&recorded, 151, true, &[]);
    assert_eq!(again.decided, Some(decided));
    // Once passed and told, nothing more is measured or told.
    let gs = with_status(gs, &d.told());
    let d = step(&gs, 500, true, &[]);
    assert!(!d.measure && d.decided.is_none());
}

#[test]
fn a_bad_revision_is_rolled_back_once_and_held() {
    let mut gs = good_before(verified(json!({})));
    gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    let d = step(&gs, 110, true, &[Ok(Some(0.5))]);
    assert_eq!(phase(&d), (VerificationPhase::Failed, "Failed".to_owned()));
    assert_eq!(d.revision, "hello-old");
    assert_eq!(d.failed_revision.as_deref(), Some("hello-new"));
    assert_eq!(d.history[0].verdict, HistoryVerdict::RolledBack);
    let decided = d.decided.clone().unwrap();
    assert_eq!(decided.event, DecisionKind::RolledBack);
    assert!(
        decided.message.contains("0.5 above max 0.01"),
        "{}",
        decided.message
    );
    // Recorded but not told: told again, once more held on the good one.
    let again = step(&with_status(gs.clone(), &d), 111, true, &[]);
    assert_eq!(again.decided, Some(decided));
    assert_eq!(again.revision, "hello-old");
    gs = with_status(gs, &d.told());
    // The next reconciles run the good revision and decide nothing again.
    assert_eq!(in_force(&gs, "hello-new"), "hello-old");
    for t in [111, 200, 900] {
        let d = step(&gs, t, true, &[Ok(Some(0.0))]);
        assert_eq!(d.decided, None, "at {t}");
        assert_eq!(d.revision, "hello-old");
        assert_eq!(phase(&d).0, VerificationPhase::Failed);
        gs = with_status(gs, &d);
    }
    // A spec that yields another revision is deployed and verified.
    assert_eq!(in_force(&gs, "hello-newer"), "hello-newer");
}

#[test]
fn a_failing_first_revision_stays_failed() {
    let gs = verified(json!({}));
    let gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    let d = step(&gs, 110, true, &[Ok(Some(0.5))]);
    assert_eq!(phase(&d).0, VerificationPhase::Failed);
    assert_eq!(d.revision, "hello-new");
    assert_eq!(d.failed_revision, None);
    assert_eq!(d.decided.unwrap().event, DecisionKind::Failed);
}

#[test]
fn without_auto_rollback_nothing_is_rolled_back() {
    let gs = good_before(verified(json!({"autoRollback": false})));
    let gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    let d = step(&gs, 110, true, &[Ok(Some(0.5))]);
    assert_eq!(d.revision, "hello-new");
    assert_eq!(d.failed_revision, None);
    assert_eq!(d.history[0].verdict, HistoryVerdict::Failed);
    assert_eq!(d.decided.unwrap().event, DecisionKind::Failed);
}

#[test]
fn no_data_never_passes_and_never_fails_by_default() {
    let mut gs = good_before(verified(json!({})));
    gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    for t in [110, 120, 130, 140, 150, 160] {
        let d = step(&gs, t, true, &[Ok(None)]);
        assert_eq!(phase(&d).0, VerificationPhase::Measuring, "at {t}");
        assert!(d.decided.is_none());
        gs = with_status(gs, &d);
    }
    assert_eq!(phase(&step(&gs, 170, true, &[Ok(None)])).1, "NoData");
    // Data arrives late: two valid samples pass it.
    let d = step(&gs, 170, true, &[Ok(Some(0.0))]);
    gs = with_status(gs, &d);
    let d = step(&gs, 180, true, &[Ok(Some(0.0))]);
    assert_eq!(phase(&d).0, VerificationPhase::Passed);
}

#[test]
fn no_data_fails_when_the_metric_says_so() {
    let gs = good_before(verified(json!({
        "metrics": [{"name": "error-rate", "query": "q", "max": 0.01, "noData": "Fail"}],
    })));
    let gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    let d = step(&gs, 110, true, &[Ok(None)]);
    assert_eq!(d.decided.unwrap().event, DecisionKind::RolledBack);
}

#[test]
fn prometheus_down_counts_nothing() {
    let mut gs = good_before(verified(json!({})));
    gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    for t in [110, 120, 130, 140, 150] {
        let d = step(&gs, t, true, &[Err(QueryError::NoUrl)]);
        assert_eq!(
            phase(&d),
            (
                VerificationPhase::Measuring,
                "PrometheusUnavailable".to_owned()
            )
        );
        assert!(d.decided.is_none());
        gs = with_status(gs, &d);
    }
    let counts = &gs
        .status
        .as_ref()
        .unwrap()
        .verification
        .as_ref()
        .unwrap()
        .metrics[0];
    assert_eq!(
        (counts.passed, counts.failed, counts.inconclusive),
        (0, 0, 0)
    );
    // Back: measuring resumes and the revision can pass.
    let d = step(&gs, 160, true, &[Ok(Some(0.0))]);
    gs = with_status(gs, &d);
    let d = step(&gs, 170, true, &[Ok(Some(0.0))]);
    assert_eq!(phase(&d).0, VerificationPhase::Passed);
}

#[test]
fn a_new_revision_restarts_verification() {
    let mut gs = good_before(verified(json!({})));
    gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    let d = step(&gs, 110, true, &[Ok(Some(0.0))]);
    gs = with_status(gs, &d);
    let rev = revision("hello-newer");
    let now = at(115);
    let d = progress(
        &gs,
        &Observation {
            now: &now,
            spec_revision: "hello-newer",
            in_force: &rev,
            complete: false,
            deadline_exceeded: false,
            canary: None,
        },
        None,
    );
    let v = d.verification.unwrap();
    assert_eq!(
        (v.revision.as_str(), v.phase),
        ("hello-newer", VerificationPhase::Pending)
    );
    assert!(v.metrics.is_empty());
    assert_eq!(d.history[0].revision, "hello-newer");
    assert_eq!(d.history[1].revision, "hello-new");
}

#[test]
fn post_verification_keeps_measuring_and_can_still_roll_back() {
    let mut gs = good_before(verified(json!({"postVerification": "20s"})));
    gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    for t in [110, 120, 130, 140] {
        gs = with_status(gs.clone(), &step(&gs, t, true, &[Ok(Some(0.0))]));
    }
    let d = step(&gs, 150, true, &[Ok(Some(0.0))]);
    assert_eq!(phase(&d).0, VerificationPhase::PostVerification);
    assert_eq!(d.last_good_revision.as_deref(), Some("hello-old"));
    gs = with_status(gs, &d);
    let d = step(&gs, 160, true, &[Ok(Some(0.9))]);
    assert_eq!(d.decided.unwrap().event, DecisionKind::RolledBack);

    // Without a failure it passes when post-verification ends.
    let mut gs = good_before(verified(json!({"postVerification": "20s"})));
    gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    for t in [110, 120, 130, 140, 150, 160] {
        gs = with_status(gs.clone(), &step(&gs, t, true, &[Ok(Some(0.0))]));
    }
    let d = step(&gs, 170, true, &[Ok(Some(0.0))]);
    assert_eq!(phase(&d).0, VerificationPhase::Passed);
    assert_eq!(d.last_good_revision.as_deref(), Some("hello-new"));
}

#[test]
fn a_revision_that_never_becomes_available_is_rolled_back() {
    let gs = good_before(verified(json!({})));
    let rev = revision("hello-new");
    let now = at(700);
    let d = progress(
        &gs,
        &Observation {
            now: &now,
            spec_revision: "hello-new",
            in_force: &rev,
            complete: false,
            deadline_exceeded: true,
            canary: None,
        },
        None,
    );
    assert_eq!(d.decided.unwrap().event, DecisionKind::RolledBack);
    assert_eq!(d.revision, "hello-old");
}

#[test]
fn without_verification_available_revisions_are_good() {
    let gs = goserver(json!({"image": "hello:2"}));
    let rev = revision("hello-new");
    let now = at(1);
    let mut observed = Observation {
        now: &now,
        spec_revision: "hello-new",
        in_force: &rev,
        complete: false,
        deadline_exceeded: false,
        canary: None,
    };
    let d = progress(&gs, &observed, None);
    assert_eq!((d.last_good_revision, d.verification), (None, None));
    observed.complete = true;
    let d = progress(&gs, &observed, None);
    assert_eq!(d.last_good_revision.as_deref(), Some("hello-new"));
    assert_eq!(d.history[0].verdict, HistoryVerdict::Unverified);
}

#[test]
fn history_is_bounded() {
    let mut gs = goserver(json!({"image": "hello:2"}));
    for i in 0..15 {
        let rev = revision(&format!("hello-{i}"));
        let now = at(i);
        let d = progress(
            &gs,
            &Observation {
                now: &now,
                spec_revision: &rev.name.clone(),
                in_force: &rev,
                complete: true,
                deadline_exceeded: false,
                canary: None,
            },
            None,
        );
        gs = with_status(gs, &d);
    }
    let history = &gs.status.unwrap().history;
    assert_eq!(history.len(), HISTORY_LIMIT);
    assert_eq!(history[0].revision, "hello-14");
    assert_eq!(history[9].revision, "hello-5");
}

#[test]
fn queries_are_filled_in() {
    let gs = verified(json!({}));
    let spec = spec(&gs).unwrap();
    assert_eq!(
        queries(&gs, "hello-0123456789", spec),
        vec!["q{revision=\"hello-0123456789\"}".to_owned()]
    );
}

#[test]
fn a_spec_back_on_the_good_revision_needs_no_new_verification() {
    let mut gs = good_before(verified(json!({})));
    gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    gs = with_status(gs.clone(), &step(&gs, 110, true, &[Ok(Some(0.5))]));
    assert_eq!(
        gs.status.as_ref().unwrap().failed_revision.as_deref(),
        Some("hello-new")
    );
    // The user puts the spec back on the good revision.
    let rev = revision("hello-old");
    let now = at(200);
    let d = progress(
        &gs,
        &Observation {
            now: &now,
            spec_revision: "hello-old",
            in_force: &rev,
            complete: true,
            deadline_exceeded: false,
            canary: None,
        },
        None,
    );
    assert_eq!(d.revision, "hello-old");
    assert_eq!(d.failed_revision, None);
    assert!(d.decided.is_none() && !d.measure);
    assert_eq!(d.history[0].revision, "hello-old");
    assert_eq!(d.history[0].verdict, HistoryVerdict::Passed);
    assert_eq!(d.history[1].verdict, HistoryVerdict::RolledBack);
}
