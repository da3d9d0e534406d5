//! A canary step judged against the baseline measured beside it.

use pretty_assertions::assert_eq;
use serde_json::json;

use super::*;

/// One step of 20 %, 60 s long, its latency compared with the baseline
/// beside it: six samples a side.
fn compared_canary() -> GoServer {
    let mut gs = canary(true);
    let rollout = gs.spec.rollout.as_mut().unwrap();
    rollout.steps = serde_json::from_value(json!([{"weight": 20, "pause": "60s"}])).unwrap();
    let verification = rollout.verification.as_mut().unwrap();
    verification.min_samples = 5;
    verification.metrics = serde_json::from_value(json!([{
        "name": "latency",
        "query": "l{revision=\"${revision}\",track=\"${track}\"}",
        "compare": {"allowed": "10%"},
    }]))
    .unwrap();
    gs
}

#[test]
fn a_canary_slower_than_its_baseline_is_aborted_at_the_steps_end() {
    let mut gs = compared_canary();
    look(&mut gs, 100, READY, &Ok(Some(0.0)));
    // Samples at 110 .. 160; the baseline's query is the same, for the
    // stable revision's baseline track.
    let mut last = None;
    for (i, t) in (110..=160).step_by(10).enumerate() {
        let jitter = f64::from(u32::try_from(i).unwrap()) / 1000.0;
        let (_, d) = look_beside(
            &mut gs,
            t,
            &Ok(Some(0.026 + jitter)),
            &Ok(Some(0.020 + jitter)),
        );
        last = Some(d);
    }
    let d = last.unwrap();
    let c = canary_status(&gs);
    assert_eq!(c.phase, CanaryPhase::Aborted, "{:#?}", d.verification);
    let v = d.verification.as_ref().unwrap();
    assert_eq!(v.metrics[0].samples.len(), 6);
    assert_eq!(v.metrics[0].baseline_samples.len(), 6);
    let comparison = v.comparison.as_ref().unwrap();
    assert_eq!(comparison.baseline_revision.as_deref(), Some(OLD));
    assert!(
        comparison.message.contains("latency High"),
        "{}",
        comparison.message
    );
    // The step's verdict keeps the figures.
    assert_eq!(
        c.verdicts[0].metrics[0]
            .comparison
            .as_ref()
            .map(|m| m.class),
        Some(crate::crd::ComparisonClass::High)
    );
    assert_eq!(d.failed_revision.as_deref(), Some(NEW));
}

#[test]
fn a_canary_like_its_baseline_passes_and_the_baseline_is_asked_for() {
    let mut gs = compared_canary();
    let now = at(100);
    look(&mut gs, 100, READY, &Ok(Some(0.0)));
    let plan = plan(&gs, NEW, &now);
    assert_eq!(plan.canary.as_ref().map(|c| c.weight), Some(20));
    let mut passed = None;
    for (i, t) in (110..=160).step_by(10).enumerate() {
        let jitter = f64::from(u32::try_from(i).unwrap()) / 1000.0;
        let (_, d) = look_beside(
            &mut gs,
            t,
            &Ok(Some(0.020 + jitter)),
            &Ok(Some(0.0205 - jitter)),
        );
        if t == 110 {
            let due = d.verification.as_ref().unwrap();
            assert_eq!(due.metrics[0].baseline_samples, vec![0.0205]);
        }
        passed = Some(d);
    }
    let d = passed.unwrap();
    let c = canary_status(&gs);
    assert_eq!(c.phase, CanaryPhase::Promoting, "{:#?}", d.verification);
    assert_eq!(
        d.verification
            .as_ref()
            .unwrap()
            .comparison
            .as_ref()
            .map(|c| c.outcome),
        Some(crate::crd::ComparisonOutcome::Pass)
    );
}

#[test]
fn the_baseline_query_selects_the_stable_revisions_baseline_track() {
    let gs = compared_canary();
    let analysis = crate::crd::Analysis::of(
        gs.spec
            .rollout
            .as_ref()
            .unwrap()
            .verification
            .as_ref()
            .unwrap(),
    );
    let due = crate::rollout::spec::queries(&gs, NEW, Some(OLD), &analysis);
    assert_eq!(due[0].query, "l{revision=\"hello-new\",track=\"\"}");
    assert_eq!(
        due[0].baseline.as_deref(),
        Some("l{revision=\"hello-old\",track=\"baseline\"}")
    );
}
