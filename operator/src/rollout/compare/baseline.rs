//! A verification against its baseline, as status: the samples a window
//! keeps, the comparison made once the window is over, and the baseline a
//! verified revision leaves for the next one.
//!
//! Under `RollingUpdate` the baseline is the last verified revision's own
//! window: its samples are kept in `status.baseline` when it passes (not
//! asked of Prometheus again, so retention or a wiped TSDB cannot take
//! them), and the next revision's samples over a window of the same length
//! are compared with them. The two windows are at different times, so a
//! change of traffic between them is part of what is compared; the
//! allowed change is what absorbs it (see docs/judge.md for what the
//! benchmark measured of that).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Allowance, Bad, Class, Comparison, Judged, Outcome, Scored, classify, score};
use crate::crd::{
    Analysis, BadChange, Baseline, BaselineMetric, ComparisonClass, ComparisonOutcome,
    ComparisonSpec, ComparisonStatus, MetricComparison, MetricComparisonStatus, MetricSpec,
    MetricStatus, VerificationStatus,
};
use crate::rollout::judge::significant;

/// Samples kept per metric and window; later ones are not kept (the
/// comparison is made on the first ones). 120 is an hour at 30 s.
pub const MAX_SAMPLES: usize = 120;

/// Whether `analysis` compares any metric with a baseline.
pub fn compares(analysis: &Analysis) -> bool {
    any_compared(&analysis.metrics)
}

/// Whether any of `metrics` is compared with a baseline.
pub fn any_compared(metrics: &[MetricSpec]) -> bool {
    metrics.iter().any(|m| m.compare.is_some())
}

/// Keeps `value`, a counted measurement of `metric`, among the samples of
/// `status` while the comparison is still to be made, and `baseline`, the
/// value of a canary's baseline measured with it.
pub fn keep(
    metric: &MetricSpec,
    status: &mut MetricStatus,
    value: Option<f64>,
    baseline: Option<f64>,
) {
    if metric.compare.is_none() || status.comparison.is_some() {
        return;
    }
    let push = |samples: &mut Vec<f64>, value: Option<f64>| {
        if let Some(value) = value.filter(|v| v.is_finite())
            && samples.len() < MAX_SAMPLES
        {
            samples.push(value);
        }
    };
    push(&mut status.samples, value);
    push(&mut status.baseline_samples, baseline);
}

/// The baseline measured beside a canary: the samples its compared metrics
/// took of the baseline's pods (running `stable`); none when none was
/// taken.
pub fn beside(v: &VerificationStatus, stable: &str, now: &Time) -> Option<Baseline> {
    collect(v, stable, now, |m| &m.baseline_samples)
}

/// A baseline of `revision`: the samples `of` each metric of `v` that has
/// some; none when none has.
fn collect(
    v: &VerificationStatus,
    revision: &str,
    now: &Time,
    of: impl Fn(&MetricStatus) -> &Vec<f64>,
) -> Option<Baseline> {
    let metrics: Vec<BaselineMetric> = v
        .metrics
        .iter()
        .filter(|m| !of(m).is_empty())
        .map(|m| BaselineMetric {
            name: m.name.clone(),
            samples: of(m).clone(),
        })
        .collect();
    (!metrics.is_empty()).then(|| Baseline {
        revision: revision.to_owned(),
        from: v.available_at.clone(),
        to: now.clone(),
        metrics,
    })
}

/// The allowed change as written: `10%` of the baseline's median, or an
/// amount in the metric's unit.
pub fn allowance(allowed: &str) -> Allowance {
    let allowed = allowed.trim();
    match allowed.strip_suffix('%') {
        Some(percent) => Allowance::Relative(percent.trim().parse::<f64>().unwrap_or(10.0) / 100.0),
        None => allowed
            .parse::<f64>()
            .map_or(Allowance::Relative(0.1), Allowance::Absolute),
    }
}

fn comparison(spec: &ComparisonSpec, metric: &MetricComparison, min_samples: i32) -> Comparison {
    Comparison {
        bad: match metric.bad {
            BadChange::Increase => Bad::Increase,
            BadChange::Decrease => Bad::Decrease,
            BadChange::Either => Bad::Either,
        },
        allowed: allowance(&metric.allowed),
        confidence: spec.confidence,
        min_samples: usize::try_from(min_samples.max(1)).unwrap_or(1),
    }
}

/// The baseline `v` is judged against: `baseline` when it is of
/// `last_good` (the revision the next one replaces), else none.
pub fn usable<'b>(baseline: Option<&'b Baseline>, last_good: Option<&str>) -> Option<&'b Baseline> {
    baseline.filter(|b| Some(b.revision.as_str()) == last_good)
}

/// Compares the samples of `v` with `baseline`, writing each compared
/// metric's result into `v.metrics` and the whole into `v.comparison`.
pub fn compare(
    analysis: &Analysis,
    v: &mut VerificationStatus,
    baseline: Option<&Baseline>,
    now: &Time,
) -> ComparisonOutcome {
    let spec = analysis.comparison.clone().unwrap_or_default();
    let Some(baseline) = baseline else {
        v.comparison = Some(ComparisonStatus {
            baseline_revision: None,
            outcome: ComparisonOutcome::NoBaseline,
            score: None,
            message: "no verified revision to compare with: judged by its bounds alone".to_owned(),
            compared_at: now.clone(),
        });
        return ComparisonOutcome::NoBaseline;
    };
    let mut parts = Vec::new();
    let mut scored = Vec::new();
    for metric in &analysis.metrics {
        let Some(asked) = &metric.compare else {
            continue;
        };
        let Some(status) = v.metrics.iter_mut().find(|m| m.name == metric.name) else {
            continue;
        };
        let base = baseline
            .metrics
            .iter()
            .find(|b| b.name == metric.name)
            .map_or(&[][..], |b| b.samples.as_slice());
        let judged = classify(
            &comparison(&spec, asked, analysis.min_samples),
            &status.samples,
            base,
        );
        parts.push(describe(
            &metric.name,
            asked,
            &judged,
            base.len(),
            status.samples.len(),
        ));
        status.comparison = Some(shown(&judged));
        scored.push((
            metric.name.clone(),
            judged.class,
            asked.weight,
            asked.critical,
        ));
    }
    let scored: Vec<Scored<'_>> = scored
        .iter()
        .map(|(name, class, weight, critical)| Scored {
            name,
            class: *class,
            weight: *weight,
            critical: *critical,
        })
        .collect();
    let result = score(&scored, spec.pass, spec.marginal);
    let outcome = match result.outcome {
        Outcome::Pass => ComparisonOutcome::Pass,
        Outcome::Marginal => ComparisonOutcome::Marginal,
        Outcome::Fail => ComparisonOutcome::Fail,
        // No metric had samples enough on both sides: nothing compared.
        Outcome::NoData => ComparisonOutcome::NoBaseline,
    };
    let verdict = match (&result.critical, result.score, outcome) {
        (Some(critical), _, _) => format!("critical metric {critical} changed"),
        (None, Some(s), ComparisonOutcome::Pass) => {
            format!("score {} (pass {})", significant(s), spec.pass)
        }
        (None, Some(s), ComparisonOutcome::Marginal) => format!(
            "score {} is marginal (pass {}, marginal {})",
            significant(s),
            spec.pass,
            spec.marginal
        ),
        (None, Some(s), _) => format!("score {} below marginal {}", significant(s), spec.marginal),
        (None, None, _) => "too few samples on a side to compare".to_owned(),
    };
    v.comparison = Some(ComparisonStatus {
        baseline_revision: Some(baseline.revision.clone()),
        outcome,
        score: result.score,
        message: format!(
            "against {}: {verdict}; {}",
            baseline.revision,
            parts.join("; ")
        ),
        compared_at: now.clone(),
    });
    outcome
}

fn shown(judged: &Judged) -> MetricComparisonStatus {
    MetricComparisonStatus {
        class: match judged.class {
            Class::High => ComparisonClass::High,
            Class::Low => ComparisonClass::Low,
            Class::Pass => ComparisonClass::Pass,
            Class::NoData => ComparisonClass::NoData,
        },
        revision_median: judged.revision_median,
        baseline_median: judged.baseline_median,
        relative_change: judged.relative,
        shift: judged.shift.map(|s| s.estimate),
        shift_low: judged.shift.map(|s| s.low),
        shift_high: judged.shift.map(|s| s.high),
        p: judged.p,
    }
}

/// `latency High: +31 % (median 0.0262 against 0.02, allowed 10%, p
/// 0.0001)`.
fn describe(
    name: &str,
    asked: &MetricComparison,
    judged: &Judged,
    baseline_samples: usize,
    revision_samples: usize,
) -> String {
    let class = match judged.class {
        Class::NoData => {
            return format!(
                "{name} NoData ({revision_samples} samples against {baseline_samples})"
            );
        }
        _ => shown(judged).class.as_str(),
    };
    let change = match (judged.relative, judged.shift) {
        (Some(r), _) => format!("{:+.1} %", r * 100.0),
        (None, Some(s)) => format!("{:+}", significant(s.estimate)),
        (None, None) => "?".to_owned(),
    };
    let median = |m: Option<f64>| m.map_or_else(|| "-".to_owned(), significant);
    let p = judged.p.map_or_else(|| "-".to_owned(), significant);
    format!(
        "{name} {class}: {change} (median {} against {}, allowed {}, p {p})",
        median(judged.revision_median),
        median(judged.baseline_median),
        asked.allowed
    )
}

/// The baseline a passing `v` leaves: its compared metrics' samples;
/// none when it kept none.
pub fn left_by(v: &VerificationStatus, now: &Time) -> Option<Baseline> {
    collect(v, &v.revision, now, |m| &m.samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allowance_is_a_share_or_an_amount() {
        assert_eq!(allowance("10%"), Allowance::Relative(0.1));
        assert_eq!(allowance("2.5%"), Allowance::Relative(0.025));
        assert_eq!(allowance("0.01"), Allowance::Absolute(0.01));
        assert_eq!(allowance("0"), Allowance::Absolute(0.0));
    }
}
