//! The canary state machine, reconcile by reconcile, with time as data:
//! each look plans the revisions, observes the Deployments as the test
//! says, and writes the decision back as the status.

use pretty_assertions::assert_eq;
use serde_json::json;

use super::super::prometheus::QueryError;
use super::super::tests::{all_told, at, revision, samples, untold};
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

/// What the test lets the Deployments and the Gateway be.
#[derive(Clone, Copy)]
struct World {
    /// The canary's pods are all available.
    canary_ready: bool,
    /// The stable Deployment runs its planned revision, all available.
    stable_ready: bool,
    /// The Gateway accepted the route as the look applied it.
    accepted: bool,
}

const READY: World = World {
    canary_ready: true,
    stable_ready: true,
    accepted: true,
};

/// One reconcile at `now`: plan, observe, decide (measuring `value` when
/// due), and store the decision as the status, every decision in it told.
/// The plan it ran with.
fn look(gs: &mut GoServer, now: i64, world: World, value: &Measurement) -> (Plan, Decision) {
    look_at(gs, NEW, now, world, value)
}

/// [`look`], the baseline beside the canary measuring `baseline`.
fn look_beside(
    gs: &mut GoServer,
    now: i64,
    value: &Measurement,
    baseline: &Measurement,
) -> (Plan, Decision) {
    look_full(gs, NEW, now, READY, value, Some(baseline))
}

/// [`look`], with the spec on `spec_revision`.
fn look_at(
    gs: &mut GoServer,
    spec_revision: &str,
    now: i64,
    world: World,
    value: &Measurement,
) -> (Plan, Decision) {
    look_full(gs, spec_revision, now, world, value, None)
}

fn look_full(
    gs: &mut GoServer,
    spec_revision: &str,
    now: i64,
    world: World,
    value: &Measurement,
    baseline: Option<&Measurement>,
) -> (Plan, Decision) {
    let now = at(now);
    let plan = plan(gs, spec_revision, &now);
    let stable = revision(&plan.stable);
    let canary_revision = plan.canary.as_ref().map(|c| revision(&c.revision));
    let id = format!("d{}", now.0.as_second());
    // The route was applied with the plan's weight before the look.
    let routing = Routing {
        canary_weight: plan.canary.as_ref().map(|c| c.weight),
        accepted: if world.accepted {
            Ok(())
        } else {
            Err("Gateway web/public has not accepted generation 2 of the route".to_owned())
        },
    };
    let observed = Observation {
        now: &now,
        spec_revision,
        in_force: &stable,
        complete: world.stable_ready,
        deadline_exceeded: false,
        canary: plan
            .canary
            .as_ref()
            .zip(canary_revision.as_ref())
            .map(|(c, revision)| CanaryFacts {
                revision,
                complete: world.canary_ready,
                deadline_exceeded: false,
                draining: c.draining,
            }),
        routing,
        decision_id: &id,
    };
    let mut decision = progress(gs, &observed, None);
    if let Some(due) = &decision.measure {
        let mut taken = samples(due, std::slice::from_ref(value));
        for (sample, query) in taken.iter_mut().zip(&due.queries) {
            if query.baseline.is_some() {
                sample.baseline = Some(baseline.cloned().unwrap_or(Ok(None)));
            }
        }
        decision = progress(gs, &observed, Some(&taken));
    }
    let told = all_told(&decision);
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

/// The plan at `now` for the spec on [`NEW`].
fn planned(gs: &GoServer, now: i64) -> Plan {
    plan(gs, NEW, &at(now))
}

#[test]
fn a_first_revision_or_rolling_update_has_no_canary() {
    let mut gs = canary(true);
    gs.status = None;
    assert_eq!(weights(&planned(&gs, 0)), (NEW.to_owned(), None));
    let mut gs = canary(true);
    gs.spec.rollout.as_mut().unwrap().strategy = RolloutStrategy::RollingUpdate;
    assert_eq!(weights(&planned(&gs, 0)), (NEW.to_owned(), None));
    // The spec back on the good revision: nothing to compare.
    assert_eq!(
        weights(&plan(&canary(true), OLD, &at(0))),
        (OLD.to_owned(), None)
    );
}

#[test]
fn a_good_canary_passes_every_step_and_is_promoted() {
    let ok = Ok(Some(0.0));
    let mut gs = canary(true);
    assert_eq!(weights(&planned(&gs, 0)), (OLD.to_owned(), Some(10)));

    // Not yet available: pending, nothing measured.
    let pending = World {
        canary_ready: false,
        ..READY
    };
    let (_, d) = look(&mut gs, 0, pending, &ok);
    assert!(d.measure.is_none());
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
    assert!(d.measure.is_none(), "still warming up");
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
    assert_eq!(c.weight_set_at, Some(at(130)));
    assert_eq!(c.verdicts.len(), 1);
    assert_eq!(c.verdicts[0].verdict, HistoryVerdict::Passed);
    assert_eq!(c.verdicts[0].metrics[0].passed, 3);
    assert_eq!(weights(&planned(&gs, 130)), (OLD.to_owned(), Some(50)));

    // Step 2 starts when the canary has its new size; its counts are its own.
    let (_, d) = look(&mut gs, 131, pending, &ok);
    let v = d.verification.unwrap();
    assert_eq!((v.phase, v.metrics.len()), (VerificationPhase::Pending, 0));
    look(&mut gs, 140, READY, &ok);
    for t in [150, 160] {
        look(&mut gs, t, READY, &ok);
    }
    let (_, d) = look(&mut gs, 170, READY, &ok);
    let decided = untold(&d).expect("the promotion is told");
    assert_eq!(decided.event, DecisionKind::Verified);
    assert_eq!(decided.id, "d170");
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
    // keeps its share; once that is rolled out, the canary's weight goes
    // to 0, and it drains before it goes.
    assert_eq!(weights(&planned(&gs, 170)), (NEW.to_owned(), Some(50)));
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
    let draining = planned(&gs, 180);
    assert_eq!(weights(&draining), (NEW.to_owned(), Some(0)));
    assert!(draining.canary.unwrap().draining);
    // The route carries weight 0 and the Gateway took it: 30 s of drain.
    let (_, d) = look(&mut gs, 181, READY, &ok);
    assert_eq!(canary_status(&gs).drain_until, Some(at(211)));
    assert_eq!(d.requeue, Some(Duration::from_secs(30)));
    assert_eq!(weights(&planned(&gs, 210)), (NEW.to_owned(), Some(0)));
    assert_eq!(weights(&planned(&gs, 211)), (NEW.to_owned(), None));
    // It stays on record, and nothing more happens.
    let (_, d) = look(&mut gs, 220, READY, &ok);
    assert_eq!(d.canary.unwrap().verdicts.len(), 2);
    assert_eq!(d.verification.unwrap().phase, VerificationPhase::Passed);
}

/// A step is judged only on traffic the Gateways route: it starts when
/// every parent accepted the route with its weight, and a Gateway that
/// never does aborts the canary at the timeout (2m by default).
#[test]
fn a_step_waits_for_the_gateway_and_gives_up_at_its_timeout() {
    let ok = Ok(Some(0.0));
    let mut gs = canary(true);
    let unaccepted = World {
        accepted: false,
        ..READY
    };
    look(&mut gs, 100, unaccepted, &ok);
    let (_, d) = look(&mut gs, 150, unaccepted, &ok);
    let v = d.verification.unwrap();
    assert_eq!(
        (v.phase, v.reason.as_str()),
        (VerificationPhase::Pending, "WaitingForGateway")
    );
    assert!(v.message.contains("Gateway web/public"), "{}", v.message);
    assert_eq!(d.requeue, Some(Duration::from_secs(70)));
    // Accepted: the step starts now, not when the weight was set.
    look(&mut gs, 160, READY, &ok);
    assert_eq!(canary_status(&gs).step_started_at, Some(at(160)));

    // The same with a Gateway that never takes it.
    let mut gs = canary(true);
    look(&mut gs, 100, unaccepted, &ok);
    look(&mut gs, 219, unaccepted, &ok);
    assert_eq!(canary_status(&gs).phase, CanaryPhase::Progressing);
    let (_, d) = look(&mut gs, 220, unaccepted, &ok);
    let told = untold(&d).unwrap();
    assert_eq!(told.event, DecisionKind::RolledBack);
    assert!(
        told.message.contains("not taken within 2m"),
        "{}",
        told.message
    );
    assert_eq!(canary_status(&gs).phase, CanaryPhase::Aborted);

    // A cluster whose Gateway writes no route status can say so.
    let mut gs = canary(true);
    gs.spec.rollout.as_mut().unwrap().gateway = Some(GatewayWait {
        ignore_route_status: true,
        ..GatewayWait::default()
    });
    look(&mut gs, 100, unaccepted, &ok);
    assert_eq!(canary_status(&gs).step_started_at, Some(at(100)));
}

#[test]
fn a_bad_canary_is_aborted_at_its_step_and_rolled_back_after_a_drain() {
    let mut gs = canary(true);
    look(&mut gs, 100, READY, &Ok(Some(0.0)));
    let (_, d) = look(&mut gs, 110, READY, &Ok(Some(0.3)));
    assert_eq!(d.requeue, Some(Duration::ZERO));
    let decided = untold(&d).expect("the rollback is told");
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
    // Every request to the stable revision at once; the canary keeps its
    // pods at weight 0 until the Gateway took that, and 30 s more.
    let drain = planned(&gs, 110);
    assert_eq!(weights(&drain), (OLD.to_owned(), Some(0)));
    assert!(drain.canary.unwrap().draining);
    let unaccepted = World {
        accepted: false,
        ..READY
    };
    look(&mut gs, 111, unaccepted, &Ok(Some(0.3)));
    assert_eq!(canary_status(&gs).drain_until, None);
    let (_, d) = look(&mut gs, 115, READY, &Ok(Some(0.3)));
    assert!(d.measure.is_none());
    assert_eq!(d.verification.unwrap().phase, VerificationPhase::Failed);
    assert_eq!(canary_status(&gs).drain_until, Some(at(145)));
    assert_eq!(weights(&planned(&gs, 145)), (OLD.to_owned(), None));
}

#[test]
fn without_auto_rollback_a_failed_canary_stays_at_weight_zero() {
    let mut gs = canary(false);
    look(&mut gs, 100, READY, &Ok(Some(0.0)));
    let (_, d) = look(&mut gs, 110, READY, &Ok(Some(0.3)));
    assert_eq!(untold(&d).unwrap().event, DecisionKind::Failed);
    let status = gs.status.clone().unwrap();
    assert_eq!(status.failed_revision, None);
    assert_eq!(status.history[0].verdict, HistoryVerdict::Failed);
    let draining = planned(&gs, 110);
    assert_eq!(weights(&draining), (OLD.to_owned(), Some(0)));
    assert!(draining.canary.unwrap().draining);
    let (_, d) = look(&mut gs, 120, READY, &Ok(Some(0.0)));
    assert!(d.measure.is_none(), "an aborted canary is not measured");
    // Drained: at weight 0 without pods.
    let after = planned(&gs, 150);
    assert_eq!(weights(&after), (OLD.to_owned(), Some(0)));
    assert!(!after.canary.unwrap().draining);
    // A new spec revision starts a new canary at the first step.
    assert_eq!(
        weights(&plan(&gs, "hello-newer", &at(150))),
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
    assert_eq!(weights(&planned(&gs, 100)), (NEW.to_owned(), Some(10)));
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
    assert_eq!(weights(&planned(&gs, 102)), (NEW.to_owned(), Some(0)));
    look(&mut gs, 103, READY, &Ok(Some(0.0)));
    assert_eq!(weights(&planned(&gs, 133)), (NEW.to_owned(), None));
}

#[test]
fn a_spec_back_on_the_stable_revision_ends_the_canary_after_a_drain() {
    let mut gs = canary(true);
    look(&mut gs, 100, READY, &Ok(Some(0.0)));
    assert_eq!(canary_status(&gs).phase, CanaryPhase::Progressing);
    let (plan, d) = look_at(&mut gs, OLD, 105, READY, &Ok(Some(0.0)));
    assert_eq!(weights(&plan), (OLD.to_owned(), Some(0)));
    let c = d.canary.unwrap();
    assert_eq!((c.phase, c.weight), (CanaryPhase::Aborted, 0));
    assert_eq!(c.drain_until, Some(at(135)));
    assert_eq!(d.verification.unwrap().revision, OLD);
    assert_eq!(d.failed_revision, None);
    assert_eq!(
        weights(&super::plan(&gs, OLD, &at(135))),
        (OLD.to_owned(), None)
    );
}

/// A canary recorded without a drain (by an earlier operator, long ago)
/// is not made again to drain it: with no canary Deployment seen, the
/// drain is over at once.
#[test]
fn a_canary_ended_long_ago_is_not_drained_again() {
    let mut gs = canary(true);
    gs.status.as_mut().unwrap().canary = Some(CanaryStatus {
        revision: OLD.to_owned(),
        phase: CanaryPhase::Promoted,
        step: 1,
        weight: 0,
        ..CanaryStatus::default()
    });
    let now = at(500);
    // The controller finds no canary Deployment and drops the plan's.
    let stable = revision(OLD);
    let observed = Observation {
        now: &now,
        spec_revision: OLD,
        in_force: &stable,
        complete: true,
        deadline_exceeded: false,
        canary: None,
        routing: Routing::default(),
        decision_id: "d500",
    };
    let d = progress(&gs, &observed, None);
    assert_eq!(d.canary.unwrap().drain_until, Some(at(500)));
}

/// A GoServer stored with `postVerification` and the Canary strategy
/// before the schema refused the pair: its canary is promoted after its
/// last step, with no post-verification.
#[test]
fn a_canary_ignores_a_post_verification_stored_before_the_rule() {
    let ok = Ok(Some(0.0));
    let mut gs = canary(true);
    gs.spec
        .rollout
        .as_mut()
        .unwrap()
        .verification
        .as_mut()
        .unwrap()
        .post_verification = Some("10m".to_owned());
    for t in [100, 110, 120, 130, 131, 140, 150, 160, 170] {
        look(&mut gs, t, READY, &ok);
    }
    let status = gs.status.clone().unwrap();
    assert_eq!(status.last_good_revision.as_deref(), Some(NEW));
    assert_eq!(canary_status(&gs).phase, CanaryPhase::Promoting);
    look(&mut gs, 180, READY, &ok);
    assert_eq!(canary_status(&gs).phase, CanaryPhase::Promoted);
    let v = gs.status.unwrap().verification.unwrap();
    assert_eq!(v.phase, VerificationPhase::Passed);
}

mod compare;
