//! The verification state machine, step by step, with time as data.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use pretty_assertions::assert_eq;
use serde_json::json;

use super::prometheus::QueryError;
use super::spec::queries;
use super::*;
use crate::build::tests::goserver;
use crate::build::{Revision, RevisionData};
use crate::crd::{Analysis, GoServerStatus, Notification};

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
        baseline: decision.baseline.clone(),
        history: decision.history.clone(),
        outbox: decision.outbox.clone(),
        ..GoServerStatus::default()
    });
    gs
}

/// The samples of a due measurement: `values` in the order of its queries.
pub(super) fn samples(due: &Due, values: &[Measurement]) -> Vec<Sample> {
    due.queries
        .iter()
        .zip(values)
        .map(|(query, value)| Sample {
            metric: query.metric.clone(),
            value: value.clone(),
            traffic: None,
            baseline: None,
        })
        .collect()
}

/// A look at `hello-new`, the spec's revision, in force and complete.
fn looking<'a>(now: &'a Time, in_force: &'a Revision) -> Observation<'a> {
    Observation {
        now,
        spec_revision: "hello-new",
        in_force,
        complete: true,
        deadline_exceeded: false,
        canary: None,
        routing: canary::Routing::default(),
        decision_id: "d",
    }
}

/// The newest decision not told yet: made in this look, or carried.
pub(super) fn untold(d: &Decision) -> Option<Notification> {
    d.outbox.iter().rev().find(|n| !n.recorded).cloned()
}

/// `d` once every decision in it is told.
pub(super) fn all_told(d: &Decision) -> Decision {
    let mut told = d.clone();
    told.outbox.clear();
    told
}

/// Runs one reconcile's worth of verification at `now`: announce, then
/// measure with `values` if a measurement is due.
fn step(gs: &GoServer, now: i64, complete: bool, values: &[Measurement]) -> Decision {
    let rev = revision(&in_force(gs, "hello-new"));
    let now = at(now);
    let id = format!("d{}", now.0.as_second());
    let observed = Observation {
        now: &now,
        spec_revision: "hello-new",
        in_force: &rev,
        complete,
        deadline_exceeded: false,
        canary: None,
        routing: canary::Routing::default(),
        decision_id: &id,
    };
    let first = progress(gs, &observed, None);
    match &first.measure {
        Some(due) => progress(gs, &observed, Some(&samples(due, values))),
        None => first,
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
    assert!(d.measure.is_none());
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
    let decided = untold(&d).unwrap();
    assert_eq!(decided.event, DecisionKind::Verified);
    assert_eq!(decided.previous_good_revision.as_deref(), Some("hello-old"));
    // Recorded but not told (the operator stopped in between): the next
    // reconcile tells the same decision.
    let recorded = with_status(gs.clone(), &d);
    let again = step(&recorded, 151, true, &[]);
    assert_eq!(untold(&again), Some(decided));
    // Once passed and told, nothing more is measured or told.
    let gs = with_status(gs, &all_told(&d));
    let d = step(&gs, 500, true, &[]);
    assert!(d.measure.is_none() && untold(&d).is_none());
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
    let decided = untold(&d).unwrap();
    assert_eq!(decided.event, DecisionKind::RolledBack);
    assert!(
        decided.message.contains("0.5 above max 0.01"),
        "{}",
        decided.message
    );
    // Recorded but not told: told again, once more held on the good one.
    let again = step(&with_status(gs.clone(), &d), 111, true, &[]);
    assert_eq!(untold(&again), Some(decided));
    assert_eq!(again.revision, "hello-old");
    gs = with_status(gs, &all_told(&d));
    // The next reconciles run the good revision and decide nothing again.
    assert_eq!(in_force(&gs, "hello-new"), "hello-old");
    for t in [111, 200, 900] {
        let d = step(&gs, t, true, &[Ok(Some(0.0))]);
        assert_eq!(untold(&d), None, "at {t}");
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
    assert_eq!(untold(&d).unwrap().event, DecisionKind::Failed);
}

#[test]
fn without_auto_rollback_nothing_is_rolled_back() {
    let gs = good_before(verified(json!({"autoRollback": false})));
    let gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    let d = step(&gs, 110, true, &[Ok(Some(0.5))]);
    assert_eq!(d.revision, "hello-new");
    assert_eq!(d.failed_revision, None);
    assert_eq!(d.history[0].verdict, HistoryVerdict::Failed);
    assert_eq!(untold(&d).unwrap().event, DecisionKind::Failed);
}

#[test]
fn no_data_never_passes_and_never_fails_by_default() {
    let mut gs = good_before(verified(json!({})));
    gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    for t in [110, 120, 130, 140, 150, 160] {
        let d = step(&gs, t, true, &[Ok(None)]);
        assert_eq!(phase(&d).0, VerificationPhase::Measuring, "at {t}");
        assert!(untold(&d).is_none());
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
    assert_eq!(untold(&d).unwrap().event, DecisionKind::RolledBack);
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
        assert!(untold(&d).is_none());
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
            routing: canary::Routing::default(),
            decision_id: "d",
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
    assert_eq!(untold(&d).unwrap().event, DecisionKind::RolledBack);

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
            routing: canary::Routing::default(),
            decision_id: "d",
        },
        None,
    );
    assert_eq!(untold(&d).unwrap().event, DecisionKind::RolledBack);
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
        routing: canary::Routing::default(),
        decision_id: "d",
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
                routing: canary::Routing::default(),
                decision_id: "d",
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
    let analysis = Analysis::of(spec(&gs).unwrap());
    assert_eq!(
        queries(&gs, "hello-0123456789", None, &analysis),
        vec![DueQuery {
            metric: "error-rate".to_owned(),
            query: "q{revision=\"hello-0123456789\"}".to_owned(),
            traffic: None,
            baseline: None,
        }]
    );
}

#[test]
fn a_spec_back_on_the_good_revision_needs_no_new_verification() {
    let mut gs = good_before(verified(json!({})));
    gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    gs = with_status(
        gs.clone(),
        &all_told(&step(&gs, 110, true, &[Ok(Some(0.5))])),
    );
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
            routing: canary::Routing::default(),
            decision_id: "d",
        },
        None,
    );
    assert_eq!(d.revision, "hello-old");
    assert_eq!(d.failed_revision, None);
    assert!(untold(&d).is_none() && d.measure.is_none());
    assert_eq!(d.history[0].revision, "hello-old");
    assert_eq!(d.history[0].verdict, HistoryVerdict::Passed);
    assert_eq!(d.history[1].verdict, HistoryVerdict::RolledBack);
}

/// A revision retried after a rollback and failing again is another
/// decision: it gets an id of its own, so it is told again (the same id
/// twice made the second rollback silent: no Event, no webhook).
#[test]
fn a_retried_revision_that_fails_again_is_a_decision_of_its_own() {
    let mut gs = good_before(verified(json!({})));
    gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    let d = step(&gs, 110, true, &[Ok(Some(0.5))]);
    let first = untold(&d).unwrap();
    assert_eq!(first.event, DecisionKind::RolledBack);
    gs = with_status(gs, &all_told(&d));
    // `gantry.dev/retry`: what the request leaves in the status.
    let now = at(200);
    let facts = request::Facts {
        spec_revision: "hello-new",
        in_force: "hello-old",
        now: &now,
        stored: &|_| true,
    };
    let retry = request::Request {
        kind: request::Kind::Retry,
        revision: "hello-new".to_owned(),
        raw: "hello-new".to_owned(),
    };
    let handled = request::apply(&mut gs, vec![retry], &facts);
    assert!(handled[0].outcome.is_ok(), "{handled:?}");
    gs = with_status(gs.clone(), &step(&gs, 200, true, &[]));
    let d = step(&gs, 210, true, &[Ok(Some(0.5))]);
    let second = untold(&d).unwrap();
    assert_eq!(
        (second.event, second.revision.as_str()),
        (first.event, first.revision.as_str())
    );
    assert_ne!(second.id, first.id);
    assert_eq!(second.id, "d210");
}

/// A decision an earlier operator recorded in the verification's
/// announcement and did not tell is told after the upgrade, under the id
/// its webhook would have had, and the announcement is not written again.
#[test]
fn an_announcement_of_an_earlier_operator_moves_to_the_outbox() {
    let mut gs = good_before(verified(
        json!({"webhook": {"url": "http://127.0.0.1:9/h"}}),
    ));
    gs.metadata.uid = Some("uid-1".to_owned());
    gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    let d = step(&gs, 110, true, &[Ok(Some(0.5))]);
    let mut old = with_status(gs.clone(), &all_told(&d));
    let v = old.status.as_mut().unwrap().verification.as_mut().unwrap();
    v.announcement = Some(crate::crd::Announcement {
        event: DecisionKind::RolledBack,
        previous_good_revision: Some("hello-old".to_owned()),
        message: "rolled back".to_owned(),
    });
    let d = step(&old, 111, true, &[]);
    let told = untold(&d).unwrap();
    assert_eq!(told.id, "uid-1:hello-new:RolledBack");
    assert_eq!(told.pending.len(), 1);
    assert_eq!(told.pending[0].receiver, "webhook");
    assert!(d.verification.unwrap().announcement.is_none());
}

/// An edit of the analysis mid-run applies to the next verification: the
/// samples taken are never judged again with other bounds (a lower
/// `failureLimit` failed a revision at once).
#[test]
fn an_edit_of_the_analysis_applies_to_the_next_verification() {
    let mut gs = good_before(verified(json!({"failureLimit": 1})));
    gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    gs = with_status(gs.clone(), &step(&gs, 110, true, &[Ok(Some(0.5))]));
    let v = gs.status.as_ref().unwrap().verification.clone().unwrap();
    assert_eq!(
        (v.phase, v.metrics[0].failed),
        (VerificationPhase::Measuring, 1)
    );
    let recorded = v.analysis.clone().unwrap();
    assert_eq!(recorded.failure_limit, 1);
    // The person tightens the limit and the bound mid-window.
    let verification = gs
        .spec
        .rollout
        .as_mut()
        .unwrap()
        .verification
        .as_mut()
        .unwrap();
    verification.failure_limit = 0;
    verification.metrics[0].max = Some(0.0001);
    let d = step(&gs, 120, true, &[Ok(Some(0.001))]);
    let v = d.verification.clone().unwrap();
    assert_eq!(v.phase, VerificationPhase::Measuring, "{v:?}");
    assert_eq!(v.analysis, Some(recorded));
    assert_eq!((v.metrics[0].passed, v.metrics[0].failed), (1, 1));
    assert!(untold(&d).is_none());
}

/// A query Prometheus refuses is no outage: `Verified=False`, reason
/// `InvalidQuery`, `Degraded`, quoting Prometheus; once the query is
/// edited, the verification measures with the edited one.
#[test]
fn a_query_prometheus_refuses_is_told_apart_from_an_outage() {
    let refused = || {
        Err(QueryError::Invalid {
            kind: "bad_data".to_owned(),
            message: "1:6: parse error: unexpected \"}\"".to_owned(),
        })
    };
    let mut gs = good_before(verified(json!({})));
    gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    let d = step(&gs, 110, true, &[refused()]);
    let v = d.verification.clone().unwrap();
    assert_eq!(v.reason, INVALID_QUERY);
    assert!(v.message.contains("parse error"), "{}", v.message);
    gs = with_status(gs, &d);
    let status = crate::status::compute(
        &gs,
        &crate::status::Inputs {
            deployment: None,
            rollout: Some(&d),
            error: None,
            hpa: None,
            service_monitors: crate::cache::optional::Presence::Pending,
            routes: crate::cache::optional::Presence::Pending,
            route: None,
            route_https: false,
        },
        &at(110),
    );
    let verified = crate::status::condition(&status, crate::status::VERIFIED).unwrap();
    assert_eq!(
        (verified.status.as_str(), verified.reason.as_str()),
        ("False", INVALID_QUERY)
    );
    let degraded = crate::status::condition(&status, crate::status::DEGRADED).unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", INVALID_QUERY)
    );
    assert!(
        degraded.message.contains("parse error"),
        "{}",
        degraded.message
    );

    // Edited: measured with the new query at once, from no samples.
    gs.spec
        .rollout
        .as_mut()
        .unwrap()
        .verification
        .as_mut()
        .unwrap()
        .metrics[0]
        .query = "sum(q)".to_owned();
    let (now, new) = (at(115), revision("hello-new"));
    let first = progress(&gs, &looking(&now, &new), None);
    assert_eq!(first.measure.unwrap().queries[0].query, "sum(q)");
}

fn overdue_spec(action: &str) -> GoServer {
    // Available at 100, warm-up 10 s, window 30 s: it ends at 140, and the
    // deadline is 60 s later, at 200.
    good_before(verified(json!({"deadline": "60s", "onDeadline": action})))
}

/// A verification without a verdict is held, rolled back or passed at its
/// deadline, as the spec says; held, it says so (`overdueAt`).
#[test]
fn without_a_verdict_the_deadline_takes_its_action() {
    let down = || {
        Err(QueryError::Unreachable {
            url: "http://127.0.0.1:9".to_owned(),
            message: "connection refused".to_owned(),
        })
    };
    for (action, expected) in [
        ("Hold", VerificationPhase::Measuring),
        ("Rollback", VerificationPhase::Failed),
        ("Pass", VerificationPhase::Passed),
    ] {
        let mut gs = overdue_spec(action);
        gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
        for t in (110..=190).step_by(10) {
            let d = step(&gs, t, true, &[down()]);
            assert_eq!(phase(&d).0, VerificationPhase::Measuring, "{action} at {t}");
            assert!(d.verification.as_ref().unwrap().overdue_at.is_none());
            gs = with_status(gs, &d);
        }
        let d = step(&gs, 200, true, &[down()]);
        let v = d.verification.clone().unwrap();
        assert_eq!(v.phase, expected, "{action}");
        match action {
            "Hold" => {
                assert_eq!(v.overdue_at, Some(at(200)));
                assert!(untold(&d).is_none());
                gs = with_status(gs, &d);
                // Measuring on; the moment it went overdue stays.
                let d = step(&gs, 210, true, &[down()]);
                assert_eq!(d.verification.unwrap().overdue_at, Some(at(200)));
            }
            "Rollback" => {
                let told = untold(&d).unwrap();
                assert_eq!(told.event, DecisionKind::RolledBack);
                assert!(
                    told.message.contains("no verdict 60s after the window"),
                    "{}",
                    told.message
                );
                assert_eq!(d.revision, "hello-old");
            }
            _ => {
                assert_eq!(v.reason, "PassedAtDeadline");
                assert_eq!(untold(&d).unwrap().event, DecisionKind::Verified);
                assert_eq!(d.last_good_revision.as_deref(), Some("hello-new"));
            }
        }
    }
}

/// A sample with too little traffic behind it counts as inconclusive: one
/// error in two requests is no 50 % error ratio.
#[test]
fn a_sample_without_enough_traffic_is_inconclusive() {
    let gs = good_before(verified(json!({
        "metrics": [{"name": "error-rate", "query": "q", "max": 0.01,
                     "traffic": {"query": "sum(increase(r[1m]))", "min": 20}}],
    })));
    let gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    let (now, new) = (at(110), revision("hello-new"));
    let observed = looking(&now, &new);
    let due = progress(&gs, &observed, None).measure.unwrap();
    assert_eq!(
        due.queries[0].traffic.as_deref(),
        Some("sum(increase(r[1m]))")
    );
    let sample = |value: f64, requests: Option<f64>| Sample {
        metric: "error-rate".to_owned(),
        value: Ok(Some(value)),
        traffic: Some(Ok(requests)),
        baseline: None,
    };
    for requests in [Some(2.0), None] {
        let d = progress(&gs, &observed, Some(&[sample(0.5, requests)]));
        let m = &d.verification.unwrap().metrics[0];
        assert_eq!(
            (m.passed, m.failed, m.inconclusive),
            (0, 0, 1),
            "{requests:?}"
        );
    }
    let d = progress(&gs, &observed, Some(&[sample(0.5, Some(20.0))]));
    assert_eq!(phase(&d).0, VerificationPhase::Failed);
}

/// Past the window, a metric with enough samples is neither asked nor
/// counted while another still lacks data, so it cannot pile up failures
/// (it did: a revision held for one metric failed on the other's noise).
#[test]
fn past_the_window_only_metrics_short_of_samples_are_measured() {
    let mut gs = good_before(verified(json!({
        "metrics": [
            {"name": "error-rate", "query": "q1", "max": 0.01},
            {"name": "latency", "query": "q2", "max": 0.5},
        ],
    })));
    gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    for t in [110, 120, 130, 140] {
        gs = with_status(gs.clone(), &step(&gs, t, true, &[Ok(Some(0.0)), Ok(None)]));
    }
    // The window is over at 150: only latency is asked.
    let (now, new) = (at(150), revision("hello-new"));
    let observed = looking(&now, &new);
    let due = progress(&gs, &observed, None).measure.unwrap();
    let asked: Vec<&str> = due.queries.iter().map(|q| q.metric.as_str()).collect();
    assert_eq!(asked, ["latency"]);
    // A late failure of error-rate would not count anyway.
    let d = progress(
        &gs,
        &observed,
        Some(&[
            Sample {
                metric: "error-rate".to_owned(),
                value: Ok(Some(0.9)),
                traffic: None,
                baseline: None,
            },
            Sample {
                metric: "latency".to_owned(),
                value: Ok(None),
                traffic: None,
                baseline: None,
            },
        ]),
    );
    let v = d.verification.unwrap();
    assert_eq!(
        (v.phase, v.reason.as_str()),
        (VerificationPhase::Measuring, "NoData")
    );
    assert_eq!(v.metrics[0].failed, 0);
}

/// A verification an earlier operator began (its status has no analysis
/// record) carries on after the upgrade: it is judged by the spec as it
/// stands, recorded from then on, with the samples it had.
#[test]
fn a_verification_begun_by_an_earlier_operator_carries_on() {
    let mut gs = good_before(verified(json!({})));
    gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    gs = with_status(gs.clone(), &step(&gs, 110, true, &[Ok(Some(0.0))]));
    let v = gs.status.as_mut().unwrap().verification.as_mut().unwrap();
    v.analysis = None;
    let d = step(&gs, 120, true, &[Ok(Some(0.0))]);
    let v = d.verification.unwrap();
    assert_eq!(v.metrics[0].passed, 2);
    assert_eq!(
        v.analysis,
        Some(Analysis::of(spec(&gs).unwrap())),
        "recorded from now on"
    );
}

mod compare;
