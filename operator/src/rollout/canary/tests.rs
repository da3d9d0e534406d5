//! The canary state machine, reconcile by reconcile, with time as data:
//! each look plans the revisions, observes the Deployments as the test
//! says, and writes the decision back as the status.

use pretty_assertions::assert_eq;
use serde_json::json;

use super::super::prometheus::QueryError;
use super::super::tests::{at, revision};
use super::super::{Decision, DecisionKind, Measurement, Observation, progress};
use super::*;
use crate::build::tests::goserver;
use crate::crd::GoServerStatus;

const NEW: &str = "hello-new";
const OLD: &str = "hello-old";

/// Two steps, 10 % then 50 %, each 30 s: a 10 s warm-up, then samples at
/// 10 s intervals, two needed.
fn canary(auto_rollback: bool) -> GoServer {
    let mut gs = goserver(json!({
        "image": "hello:2",
        "route": {"parentRefs": [{"name": "public"}]},
        "rollout": {
            "strategy": "Canary",
            "steps": [{"weight": 10, "pause": "30s"}, {"weight": 50, "pause": "30s"}],
            "verification": {
                "warmup": "10s", "interval": "10s", "window": "30s", "minSamples": 2,
                "failureLimit": 0, "autoRollback": auto_rollback,
                "metrics": [{"name": "error-rate", "query": "q", "max": 0.01}],
            },
        },
    }));
    gs.status = Some(GoServerStatus {
        revision: Some(OLD.to_owned()),
        last_good_revision: Some(OLD.to_owned()),
        ..GoServerStatus::default()
    });
    gs
}

/// What the test lets the Deployments be.
#[derive(Clone, Copy)]
struct World {
    /// The canary's pods are all available.
    canary_ready: bool,
    /// The stable Deployment runs its planned revision, all available.
    stable_ready: bool,
}

const READY: World = World {
    canary_ready: true,
    stable_ready: true,
};

/// One reconcile at `now`: plan, observe, decide (measuring `value` when
/// due), and store the decision as the status. The plan it ran with.
fn look(gs: &mut GoServer, now: i64, world: World, value: &Measurement) -> (Plan, Decision) {
    look_at(gs, NEW, now, world, value)
}

/// [`look`], with the spec on `spec_revision`.
fn look_at(
    gs: &mut GoServer,
    spec_revision: &str,
    now: i64,
    world: World,
    value: &Measurement,
) -> (Plan, Decision) {
    let plan = plan(gs, spec_revision);
    let stable = revision(&plan.stable);
    let canary_revision = revision(spec_revision);
    let now = at(now);
    let observed = Observation {
        now: &now,
        spec_revision,
        in_force: &stable,
        complete: world.stable_ready,
        deadline_exceeded: false,
        canary: plan.canary.as_ref().map(|_| Observed {
            revision: &canary_revision,
            complete: world.canary_ready,
            deadline_exceeded: false,
        }),
    };
    let mut decision = progress(gs, &observed, None);
    if decision.measure {
        decision = progress(gs, &observed, Some(std::slice::from_ref(value)));
    }
    let told = decision.told();
    let status = gs.status.get_or_insert_with(GoServerStatus::default);
    status.revision = Some(told.revision.clone());
    status.last_good_revision = told.last_good_revision;
    status.failed_revision = told.failed_revision;
    status.verification = told.verification;
    status.history = told.history;
    status.canary = told.canary;
    (plan, decision)
}

fn canary_status(gs: &GoServer) -> CanaryStatus {
    gs.status.as_ref().unwrap().canary.clone().unwrap()
}

fn weights(plan: &Plan) -> (String, Option<i32>) {
    (plan.stable.clone(), plan.canary.as_ref().map(|c| c.weight))
}

#[test]
fn a_first_revision_or_rolling_update_has_no_canary() {
    let mut gs = canary(true);
    gs.status = None;
    assert_eq!(weights(&plan(&gs, NEW)), (NEW.to_owned(), None));
    let mut gs = canary(true);
    gs.spec.rollout.as_mut().unwrap().strategy = RolloutStrategy::RollingUpdate;
    assert_eq!(weights(&plan(&gs, NEW)), (NEW.to_owned(), None));
    // The spec back on the good revision: nothing to compare.
    assert_eq!(weights(&plan(&canary(true), OLD)), (OLD.to_owned(), None));
}

#[test]
fn a_good_canary_passes_every_step_and_is_promoted() {
    let ok = Ok(Some(0.0));
    let mut gs = canary(true);
    assert_eq!(weights(&plan(&gs, NEW)), (OLD.to_owned(), Some(10)));

    // Not yet available: pending, nothing measured.
    let pending = World {
        canary_ready: false,
        ..READY
    };
    let (_, d) = look(&mut gs, 0, pending, &ok);
    assert!(!d.measure);
    assert_eq!(
        d.verification.as_ref().unwrap().phase,
        VerificationPhase::Pending
    );
    assert_eq!(d.history[0].revision, NEW);
    assert_eq!(d.revision, OLD, "the stable revision stays in force");

    // Step 1 from t=100: samples at 110, 120, 130; passed at 130.
    look(&mut gs, 100, READY, &ok);
    assert_eq!(canary_status(&gs).step_started_at, Some(at(100)));
    let (_, d) = look(&mut gs, 105, READY, &ok);
    assert!(!d.measure, "still warming up");
    assert_eq!(d.requeue, Some(Duration::from_secs(5)));
    look(&mut gs, 110, READY, &ok);
    look(&mut gs, 120, READY, &ok);
    assert_eq!(canary_status(&gs).step, 0, "too early for a verdict");
    let (_, d) = look(&mut gs, 130, READY, &ok);
    assert_eq!(d.requeue, Some(Duration::ZERO));
    let c = canary_status(&gs);
    assert_eq!(
        (c.phase, c.step, c.weight),
        (CanaryPhase::Progressing, 1, 50)
    );
    assert_eq!(c.verdicts.len(), 1);
    assert_eq!(c.verdicts[0].verdict, HistoryVerdict::Passed);
    assert_eq!(c.verdicts[0].metrics[0].passed, 3);
    assert_eq!(weights(&plan(&gs, NEW)), (OLD.to_owned(), Some(50)));

    // Step 2 starts when the canary has its new size; its counts are its own.
    let (_, d) = look(&mut gs, 131, pending, &ok);
    let v = d.verification.unwrap();
    assert_eq!((v.phase, v.metrics.len()), (VerificationPhase::Pending, 0));
    look(&mut gs, 140, READY, &ok);
    for t in [150, 160] {
        look(&mut gs, t, READY, &ok);
    }
    let (_, d) = look(&mut gs, 170, READY, &ok);
    let decided = d.decided.expect("the promotion is told");
    assert_eq!(decided.event, DecisionKind::Verified);
    assert!(
        decided.message.contains("passed all 2 steps"),
        "{}",
        decided.message
    );
    let status = gs.status.clone().unwrap();
    assert_eq!(status.last_good_revision.as_deref(), Some(NEW));
    assert_eq!(status.history[0].verdict, HistoryVerdict::Passed);
    assert_eq!(canary_status(&gs).phase, CanaryPhase::Promoting);

    // Promoting: the stable Deployment takes the revision while the canary
    // keeps its share; once that is rolled out, the canary goes.
    assert_eq!(weights(&plan(&gs, NEW)), (NEW.to_owned(), Some(50)));
    let rolling = World {
        stable_ready: false,
        ..READY
    };
    look(&mut gs, 171, rolling, &ok);
    assert_eq!(canary_status(&gs).phase, CanaryPhase::Promoting);
    let (_, d) = look(&mut gs, 180, READY, &ok);
    assert_eq!(d.requeue, Some(Duration::ZERO));
    let c = canary_status(&gs);
    assert_eq!((c.phase, c.weight), (CanaryPhase::Promoted, 0));
    assert_eq!(weights(&plan(&gs, NEW)), (NEW.to_owned(), None));
    // It stays on record, and nothing more happens.
    let (_, d) = look(&mut gs, 190, READY, &ok);
    assert_eq!(d.canary.unwrap().verdicts.len(), 2);
    assert_eq!(d.verification.unwrap().phase, VerificationPhase::Passed);
}

#[test]
fn a_bad_canary_is_aborted_at_its_step_and_rolled_back() {
    let mut gs = canary(true);
    look(&mut gs, 100, READY, &Ok(Some(0.0)));
    let (_, d) = look(&mut gs, 110, READY, &Ok(Some(0.3)));
    assert_eq!(d.requeue, Some(Duration::ZERO));
    let decided = d.decided.expect("the rollback is told");
    assert_eq!(decided.event, DecisionKind::RolledBack);
    assert!(
        decided.message.contains("step 1 of 2 (10% of the traffic)"),
        "{}",
        decided.message
    );
    let c = canary_status(&gs);
    assert_eq!((c.phase, c.weight, c.step), (CanaryPhase::Aborted, 0, 0));
    assert_eq!(c.verdicts[0].verdict, HistoryVerdict::Failed);
    let status = gs.status.clone().unwrap();
    assert_eq!(status.failed_revision.as_deref(), Some(NEW));
    assert_eq!(status.last_good_revision.as_deref(), Some(OLD));
    assert_eq!(status.history[0].verdict, HistoryVerdict::RolledBack);
    // No canary any more: every request to the stable revision.
    assert_eq!(weights(&plan(&gs, NEW)), (OLD.to_owned(), None));
    let (_, d) = look(&mut gs, 120, READY, &Ok(Some(0.3)));
    assert!(!d.measure);
    assert_eq!(d.verification.unwrap().phase, VerificationPhase::Failed);
}

#[test]
fn without_auto_rollback_a_failed_canary_stays_at_weight_zero() {
    let mut gs = canary(false);
    look(&mut gs, 100, READY, &Ok(Some(0.0)));
    let (_, d) = look(&mut gs, 110, READY, &Ok(Some(0.3)));
    assert_eq!(d.decided.unwrap().event, DecisionKind::Failed);
    let status = gs.status.clone().unwrap();
    assert_eq!(status.failed_revision, None);
    assert_eq!(status.history[0].verdict, HistoryVerdict::Failed);
    assert_eq!(weights(&plan(&gs, NEW)), (OLD.to_owned(), Some(0)));
    let (_, d) = look(&mut gs, 120, READY, &Ok(Some(0.0)));
    assert!(!d.measure, "an aborted canary is not measured");
    // A new spec revision starts a new canary at the first step.
    assert_eq!(
        weights(&plan(&gs, "hello-newer")),
        (OLD.to_owned(), Some(10))
    );
}

#[test]
fn prometheus_down_holds_the_step() {
    let mut gs = canary(true);
    let down = Err(QueryError::Unreachable {
        url: "http://127.0.0.1:9".to_owned(),
        message: "connection refused".to_owned(),
    });
    look(&mut gs, 100, READY, &Ok(Some(0.0)));
    for t in [110, 120, 130, 140, 200] {
        let (_, d) = look(&mut gs, t, READY, &down);
        let v = d.verification.unwrap();
        assert_eq!(v.reason, "PrometheusUnavailable", "at {t}");
        assert!(v.message.contains("step 1 of 2"), "{}", v.message);
    }
    let c = canary_status(&gs);
    assert_eq!(
        (c.phase, c.step, c.weight),
        (CanaryPhase::Progressing, 0, 10)
    );
    // Back: the step is judged on the samples it has.
    look(&mut gs, 210, READY, &Ok(Some(0.0)));
    let (_, _) = look(&mut gs, 220, READY, &Ok(Some(0.0)));
    assert_eq!(canary_status(&gs).step, 1);
}

#[test]
fn a_promotion_by_request_keeps_the_canary_until_stable_runs_it() {
    let mut gs = canary(true);
    look(&mut gs, 100, READY, &Ok(Some(0.0)));
    // What `gantry.dev/promote` leaves in the status.
    let status = gs.status.as_mut().unwrap();
    status.last_good_revision = Some(NEW.to_owned());
    let v = status.verification.as_mut().unwrap();
    v.phase = VerificationPhase::Passed;
    "Promoted".clone_into(&mut v.reason);
    assert_eq!(weights(&plan(&gs, NEW)), (NEW.to_owned(), Some(10)));
    look(
        &mut gs,
        101,
        World {
            stable_ready: false,
            ..READY
        },
        &Ok(Some(0.0)),
    );
    assert_eq!(canary_status(&gs).phase, CanaryPhase::Promoting);
    look(&mut gs, 102, READY, &Ok(Some(0.0)));
    assert_eq!(canary_status(&gs).phase, CanaryPhase::Promoted);
    assert_eq!(weights(&plan(&gs, NEW)), (NEW.to_owned(), None));
}

#[test]
fn a_spec_back_on_the_stable_revision_ends_the_canary() {
    let mut gs = canary(true);
    look(&mut gs, 100, READY, &Ok(Some(0.0)));
    assert_eq!(canary_status(&gs).phase, CanaryPhase::Progressing);
    let (plan, d) = look_at(&mut gs, OLD, 105, READY, &Ok(Some(0.0)));
    assert_eq!(weights(&plan), (OLD.to_owned(), None));
    let c = d.canary.unwrap();
    assert_eq!((c.phase, c.weight), (CanaryPhase::Aborted, 0));
    assert_eq!(d.verification.unwrap().revision, OLD);
    assert_eq!(d.failed_revision, None);
}
