//! The judge: pure functions from measurements to a verdict.
//!
//! One measurement of one metric is `Passed`, `Failed` or `Inconclusive`
//! ([`outcome`]); the counts per metric become a verdict for the revision
//! ([`verdict`]). The rules that tell Gantry from the tools it replaces:
//! no data is not failure (unless a metric says so), too few valid samples
//! never pass, and a provider error counts as nothing at all.

use crate::crd::{Analysis, MetricSpec, MetricStatus, NoDataPolicy};

/// What one measurement of one metric was.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    Passed,
    Failed,
    Inconclusive,
}

/// The outcome of `value` for `metric`: `None` (an empty result or `NaN`)
/// follows the metric's `noData`.
pub fn outcome(metric: &MetricSpec, value: Option<f64>) -> Outcome {
    let Some(value) = value.filter(|v| !v.is_nan()) else {
        return match metric.no_data {
            NoDataPolicy::Inconclusive => Outcome::Inconclusive,
            NoDataPolicy::Fail => Outcome::Failed,
            NoDataPolicy::Pass => Outcome::Passed,
        };
    };
    let below = metric.min.is_some_and(|min| value < min);
    let above = metric.max.is_some_and(|max| value > max);
    if below || above {
        Outcome::Failed
    } else {
        Outcome::Passed
    }
}

/// Adds one outcome to a metric's counts.
pub fn count(status: &mut MetricStatus, outcome: Outcome, value: Option<f64>) {
    match outcome {
        Outcome::Passed => status.passed = status.passed.saturating_add(1),
        Outcome::Failed => status.failed = status.failed.saturating_add(1),
        Outcome::Inconclusive => status.inconclusive = status.inconclusive.saturating_add(1),
    }
    status.last_value = value.filter(|v| v.is_finite());
}

/// Where a revision stands after its latest measurement.
#[derive(Clone, Debug, PartialEq)]
pub enum Standing {
    /// A metric failed more often than `failureLimit` allows.
    Failed { metric: String, message: String },
    /// The window is over and every metric has enough valid samples.
    Passed,
    /// The window is over, but some metric has too few valid samples.
    NoData { metric: String },
    /// Still inside the window.
    Measuring,
}

/// The verdict on `metrics` (the counts, in `analysis.metrics` order) for
/// a revision whose window is over (`window_over`) or not. A failure needs
/// no window: one measurement past the limit fails at once.
pub fn standing(spec: &Analysis, metrics: &[MetricStatus], window_over: bool) -> Standing {
    let limit = spec.failure_limit.max(0);
    for (metric, counts) in spec.metrics.iter().zip(metrics) {
        if counts.failed > limit {
            return Standing::Failed {
                metric: metric.name.clone(),
                message: failure_message(metric, counts, limit),
            };
        }
    }
    if !window_over {
        return Standing::Measuring;
    }
    let min_samples = spec.min_samples.max(1);
    for (metric, counts) in spec.metrics.iter().zip(metrics) {
        // A valid sample is one that had data (or whose lack of data the
        // metric counts as a pass or a fail): inconclusive ones are not.
        if counts.passed.saturating_add(counts.failed) < min_samples {
            return Standing::NoData {
                metric: metric.name.clone(),
            };
        }
    }
    // Fewer counts than metrics would mean a metric never measured.
    if metrics.len() < spec.metrics.len() {
        return Standing::NoData {
            metric: spec.metrics[metrics.len()].name.clone(),
        };
    }
    Standing::Passed
}

/// A measured value for people: four significant digits, no trailing
/// zeros (`0.228183749549044` is `0.2282`, `1234567.0` stays `1234567`).
/// Bounds are shown as written in the spec.
pub(crate) fn significant(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    // Digits after the point that keep four significant ones; none for
    // values of four or more digits before the point.
    #[allow(clippy::cast_possible_truncation)] // |log10| of a finite f64 is below 400
    let decimals = (3 - v.abs().log10().floor() as i32).clamp(0, 17);
    let text = format!("{v:.*}", decimals.unsigned_abs() as usize);
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// `metric error-rate: 0.031 above max 0.005 (2 failed, limit 1)`.
fn failure_message(metric: &MetricSpec, counts: &MetricStatus, limit: i32) -> String {
    let value = counts
        .last_value
        .map_or_else(|| "no data".to_owned(), significant);
    let bound = match (metric.min, metric.max, counts.last_value) {
        (_, Some(max), Some(v)) if v > max => format!("above max {max}"),
        (Some(min), _, Some(v)) if v < min => format!("below min {min}"),
        (_, _, None) => "and noData is Fail".to_owned(),
        (min, max, _) => format!(
            "outside [{}, {}]",
            min.map_or_else(|| "-inf".to_owned(), |m| m.to_string()),
            max.map_or_else(|| "+inf".to_owned(), |m| m.to_string())
        ),
    };
    format!(
        "metric {}: {value} {bound} ({} failed, limit {limit})",
        metric.name, counts.failed
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[allow(clippy::needless_pass_by_value)] // callers pass `json!` literals
    fn metric(spec: serde_json::Value) -> MetricSpec {
        let mut full = json!({"name": "error-rate", "query": "q"});
        full.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        serde_json::from_value(full).unwrap()
    }

    fn spec(min_samples: i32, failure_limit: i32) -> Analysis {
        Analysis::of(
            &serde_json::from_value(json!({
                "minSamples": min_samples,
                "failureLimit": failure_limit,
                "metrics": [
                    {"name": "error-rate", "query": "q1", "max": 0.005},
                    {"name": "latency", "query": "q2", "max": 0.3},
                ],
            }))
            .unwrap(),
        )
    }

    fn counts(name: &str, passed: i32, failed: i32, inconclusive: i32) -> MetricStatus {
        MetricStatus {
            name: name.to_owned(),
            passed,
            failed,
            inconclusive,
            last_value: Some(0.5),
            ..MetricStatus::default()
        }
    }

    #[test]
    fn bounds_decide_a_value() {
        let max = metric(json!({"max": 0.005}));
        assert_eq!(outcome(&max, Some(0.0)), Outcome::Passed);
        assert_eq!(outcome(&max, Some(0.005)), Outcome::Passed);
        assert_eq!(outcome(&max, Some(0.0051)), Outcome::Failed);
        let both = metric(json!({"min": 10.0, "max": 20.0}));
        assert_eq!(outcome(&both, Some(9.9)), Outcome::Failed);
        assert_eq!(outcome(&both, Some(15.0)), Outcome::Passed);
        assert_eq!(outcome(&both, Some(f64::INFINITY)), Outcome::Failed);
    }

    #[test]
    fn no_data_follows_the_policy() {
        for (policy, expected) in [
            ("Inconclusive", Outcome::Inconclusive),
            ("Fail", Outcome::Failed),
            ("Pass", Outcome::Passed),
        ] {
            let m = metric(json!({"max": 1.0, "noData": policy}));
            assert_eq!(outcome(&m, None), expected, "{policy}: empty");
            assert_eq!(outcome(&m, Some(f64::NAN)), expected, "{policy}: NaN");
        }
        // The default is Inconclusive: no traffic is not failure.
        assert_eq!(
            outcome(&metric(json!({"max": 1.0})), None),
            Outcome::Inconclusive
        );
    }

    #[test]
    fn verdicts() {
        let s = spec(3, 1);
        let table = [
            // (error-rate, latency, window over) -> verdict
            ((3, 0, 0), (3, 0, 0), true, "Passed"),
            ((3, 1, 0), (4, 0, 0), true, "Passed"),
            ((3, 2, 0), (3, 0, 0), false, "Failed"),
            ((0, 2, 0), (0, 0, 0), false, "Failed"),
            ((2, 0, 5), (3, 0, 0), true, "NoData"),
            ((0, 0, 9), (0, 0, 9), true, "NoData"),
            ((1, 1, 0), (3, 0, 0), true, "NoData"),
            ((3, 0, 0), (3, 0, 0), false, "Measuring"),
            ((0, 1, 0), (0, 0, 0), false, "Measuring"),
        ];
        for (e, l, over, expected) in table {
            let metrics = [
                counts("error-rate", e.0, e.1, e.2),
                counts("latency", l.0, l.1, l.2),
            ];
            let got = match standing(&s, &metrics, over) {
                Standing::Failed { .. } => "Failed",
                Standing::Passed => "Passed",
                Standing::NoData { .. } => "NoData",
                Standing::Measuring => "Measuring",
            };
            assert_eq!(
                got, expected,
                "error-rate {e:?}, latency {l:?}, over {over}"
            );
        }
    }

    #[test]
    fn failure_limit_edges() {
        let metrics = |failed| {
            [
                counts("error-rate", 5, failed, 0),
                counts("latency", 5, 0, 0),
            ]
        };
        assert_eq!(standing(&spec(3, 0), &metrics(0), true), Standing::Passed);
        assert!(matches!(
            standing(&spec(3, 0), &metrics(1), false),
            Standing::Failed { .. }
        ));
        assert_eq!(standing(&spec(3, 2), &metrics(2), true), Standing::Passed);
        assert!(matches!(
            standing(&spec(3, 2), &metrics(3), true),
            Standing::Failed { .. }
        ));
    }

    #[test]
    fn too_few_samples_never_pass_even_without_failures() {
        // Every measurement errored (nothing counted): Argo Rollouts calls
        // such a run successful; here it is NoData.
        let metrics = [counts("error-rate", 0, 0, 0), counts("latency", 0, 0, 0)];
        assert_eq!(
            standing(&spec(1, 1), &metrics, true),
            Standing::NoData {
                metric: "error-rate".to_owned()
            }
        );
        // A metric never measured at all counts as no data, too.
        assert!(matches!(
            standing(&spec(1, 1), &metrics[..1], true),
            Standing::NoData { .. }
        ));
    }

    #[test]
    fn the_failure_message_names_metric_value_and_bound() {
        let s = spec(3, 1);
        let mut error_rate = counts("error-rate", 1, 2, 0);
        error_rate.last_value = Some(0.25);
        let Standing::Failed { metric, message } =
            standing(&s, &[error_rate, counts("latency", 1, 0, 0)], false)
        else {
            panic!("expected a failure");
        };
        assert_eq!(metric, "error-rate");
        assert_eq!(
            message,
            "metric error-rate: 0.25 above max 0.005 (2 failed, limit 1)"
        );
    }

    #[test]
    fn values_are_shown_with_four_significant_digits() {
        for (value, shown) in [
            (0.228_183_749_549_044, "0.2282"),
            (0.25, "0.25"),
            (0.000_012_345_6, "0.00001235"),
            (1_234_567.0, "1234567"),
            (-3.5, "-3.5"),
            (0.0, "0"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(significant(value), shown, "{value}");
        }
    }
}
