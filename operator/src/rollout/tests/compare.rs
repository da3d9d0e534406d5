//! A revision judged against the last verified one's samples.

use pretty_assertions::assert_eq;
use serde_json::json;

use super::*;
use crate::crd::{Baseline, BaselineMetric, ComparisonClass, ComparisonOutcome};

const LATENCY: &str = "sum(rate(d_sum{revision=\"${revision}\"}[${interval}])) / sum(rate(d_count{revision=\"${revision}\"}[${interval}]))";

/// Measured every 10 s for 90 s after a 10 s warm-up: ten samples a
/// metric. `latency` is compared only; `errors` has a bound and, with
/// `errors_compared`, is compared too.
fn compared(errors_compared: bool, comparison: &serde_json::Value) -> GoServer {
    let mut errors = json!({"name": "errors", "query": "e{revision=\"${revision}\"}", "max": 0.5});
    if errors_compared {
        errors["compare"] = json!({"allowed": "0.01"});
    }
    verified(json!({
        "window": "90s", "minSamples": 5, "comparison": comparison,
        "metrics": [
            {"name": "latency", "query": LATENCY, "compare": {"allowed": "10%"}},
            errors,
        ],
    }))
}

fn baseline(revision: &str, latency: &[f64], errors: &[f64]) -> Baseline {
    Baseline {
        revision: revision.to_owned(),
        from: Some(at(0)),
        to: at(100),
        metrics: vec![
            BaselineMetric {
                name: "latency".to_owned(),
                samples: latency.to_vec(),
            },
            BaselineMetric {
                name: "errors".to_owned(),
                samples: errors.to_vec(),
            },
        ],
    }
}

/// Ten values around `level`, none equal.
fn around(level: f64) -> Vec<f64> {
    (0..10)
        .map(|i| level * (1.0 + f64::from((i * 7) % 10) / 500.0))
        .collect()
}

/// `gs` with `hello-old` verified and `baseline` kept, then `hello-new`
/// measured at 110, 120, ... with `latency[i]` and `errors[i]`, until a
/// look decides (or the values run out); that look's decision.
fn measure(gs: GoServer, baseline: Option<Baseline>, latency: &[f64], errors: &[f64]) -> Decision {
    let mut gs = good_before(gs);
    gs.status.as_mut().unwrap().baseline = baseline;
    gs = with_status(gs.clone(), &step(&gs, 100, true, &[]));
    let mut last = None;
    for (i, (l, e)) in latency.iter().zip(errors).enumerate() {
        let t = 110 + 10 * i64::try_from(i).unwrap();
        let d = step(&gs, t, true, &[Ok(Some(*l)), Ok(Some(*e))]);
        let open = d
            .verification
            .as_ref()
            .is_some_and(|v| v.phase == VerificationPhase::Measuring && v.reason != MARGINAL);
        gs = with_status(gs, &d);
        last = Some(d);
        if !open {
            break;
        }
    }
    last.unwrap()
}

#[test]
fn a_revision_slower_than_its_baseline_is_rolled_back_at_the_window_end() {
    let gs = compared(false, &json!({}));
    let base = baseline("hello-old", &around(0.020), &[0.0; 10]);
    // 30 % slower: no bound would catch it, the comparison does.
    let d = measure(gs, Some(base), &around(0.026), &[0.0; 10]);
    let v = d.verification.as_ref().unwrap();
    assert_eq!(v.phase, VerificationPhase::Failed, "{v:#?}");
    // Judged once, at the window's end (ten samples), not before.
    assert_eq!(v.metrics[0].samples.len(), 10);
    assert_eq!(d.revision, "hello-old");
    let latency = v.metrics[0].comparison.clone().unwrap();
    assert_eq!(latency.class, ComparisonClass::High);
    let relative = latency.relative_change.unwrap();
    assert!((0.25..0.35).contains(&relative), "{relative}");
    let comparison = v.comparison.as_ref().unwrap();
    assert_eq!(comparison.outcome, ComparisonOutcome::Fail);
    assert_eq!(comparison.baseline_revision.as_deref(), Some("hello-old"));
    let told = untold(&d).unwrap();
    assert_eq!(told.event, DecisionKind::RolledBack);
    assert!(
        told.message.contains("against hello-old")
            && told.message.contains("latency High: +30.")
            && told.message.contains("median 0.02"),
        "{}",
        told.message
    );
    // The Event's figures are in the webhook's measurements too.
    assert_eq!(told.measurements[0].comparison, Some(latency));
    // The failed revision leaves no baseline: the old one stays.
    assert_eq!(
        d.baseline.as_ref().map(|b| b.revision.as_str()),
        Some("hello-old")
    );
}

#[test]
fn a_revision_like_its_baseline_passes_and_becomes_the_next_baseline() {
    let gs = compared(true, &json!({}));
    let base = baseline("hello-old", &around(0.020), &[0.0; 10]);
    let same: Vec<f64> = around(0.020).into_iter().rev().collect();
    let d = measure(gs, Some(base), &same, &[0.0; 10]);
    let v = d.verification.as_ref().unwrap();
    assert_eq!(v.phase, VerificationPhase::Passed, "{v:#?}");
    let comparison = v.comparison.as_ref().unwrap();
    assert_eq!(
        (comparison.outcome, comparison.score),
        (ComparisonOutcome::Pass, Some(100.0))
    );
    let next = d.baseline.as_ref().unwrap();
    assert_eq!(next.revision, "hello-new");
    assert_eq!(next.metrics[0].samples, same);
    assert_eq!(next.metrics[1].samples, vec![0.0; 10]);
}

#[test]
fn without_a_baseline_of_the_last_good_revision_the_bounds_judge_alone() {
    for base in [
        None,
        Some(baseline("hello-older", &around(0.010), &[0.0; 10])),
    ] {
        let gs = compared(false, &json!({}));
        let d = measure(gs, base, &around(0.026), &[0.0; 10]);
        let v = d.verification.as_ref().unwrap();
        assert_eq!(v.phase, VerificationPhase::Passed, "{v:#?}");
        let comparison = v.comparison.as_ref().unwrap();
        assert_eq!(comparison.outcome, ComparisonOutcome::NoBaseline);
        assert_eq!(d.baseline.as_ref().unwrap().revision, "hello-new");
    }
    // A bound still fails a revision before the window is over.
    let gs = compared(false, &json!({}));
    let d = measure(gs, None, &around(0.026), &[0.0, 0.9]);
    let v = d.verification.as_ref().unwrap();
    assert_eq!(v.phase, VerificationPhase::Failed);
    assert_eq!(v.comparison, None);
}

#[test]
fn a_marginal_score_is_held_for_a_person_until_the_deadline() {
    // Two compared metrics of equal weight, one High: a score of 50,
    // marginal between 25 and 95.
    let gs = compared(true, &json!({"pass": 95, "marginal": 25}));
    let base = baseline("hello-old", &around(0.020), &[0.0; 10]);
    let d = measure(gs.clone(), Some(base.clone()), &around(0.026), &[0.0; 10]);
    let v = d.verification.clone().unwrap();
    assert_eq!(
        (v.phase, v.reason.as_str()),
        (VerificationPhase::Measuring, MARGINAL),
        "{v:#?}"
    );
    assert!(
        v.message.contains("kubectl gantry promote"),
        "{}",
        v.message
    );
    assert_eq!(v.comparison.as_ref().unwrap().score, Some(50.0));
    assert!(untold(&d).is_none());
    // Looked at again (each metric has its samples: nothing is asked), it
    // stays held, on the comparison made once.
    let mut gs = with_status(good_before(gs), &d);
    gs.status.as_mut().unwrap().baseline = Some(base);
    let d = step(&gs, 300, true, &[]);
    let again = d.verification.as_ref().unwrap();
    assert_eq!(again.reason, MARGINAL);
    assert_eq!(again.comparison, v.comparison);
    // At the deadline (15 m after the window) it holds on, overdue.
    let gs = with_status(gs, &d);
    let d = step(&gs, 2000, true, &[]);
    let v = d.verification.as_ref().unwrap();
    assert_eq!(v.phase, VerificationPhase::Measuring);
    assert!(v.overdue_at.is_some());
}

#[test]
fn with_two_metrics_a_critical_one_fails_alone() {
    let mut gs = compared(true, &json!({"pass": 95, "marginal": 25}));
    let metrics = &mut gs
        .spec
        .rollout
        .as_mut()
        .unwrap()
        .verification
        .as_mut()
        .unwrap()
        .metrics;
    metrics[0].compare.as_mut().unwrap().critical = true;
    let base = baseline("hello-old", &around(0.020), &[0.0; 10]);
    let d = measure(gs, Some(base), &around(0.026), &[0.0; 10]);
    let v = d.verification.as_ref().unwrap();
    assert_eq!(v.phase, VerificationPhase::Failed, "{v:#?}");
    assert!(
        v.message.contains("critical metric latency changed"),
        "{}",
        v.message
    );
}
