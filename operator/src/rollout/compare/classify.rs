//! One metric of a revision against its baseline, classified as Kayenta
//! does (High, Low, Pass or `NoData`), and the metrics together as a score.
//!
//! A metric is High when the revision's values lie above the baseline's by
//! more than the allowed change, with the asked confidence: the lower end
//! of the Hodges-Lehmann interval of the shift is above the allowed margin
//! (a one-sided test of "shift > margin" at half of `1 - confidence`, the
//! dual of the Mann-Whitney test moved by the margin). Low is the mirror
//! image. Either counts only in the direction the metric calls bad. The
//! Mann-Whitney p-value of the bad direction is reported beside it.

use super::stats::{self, Alternative, Shift};

/// Which change of a metric is bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    Increase,
    Decrease,
    Either,
}

/// How far the revision may move from the baseline before it counts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Allowance {
    /// A share of the baseline's median: `0.1` allows 10 %. With a
    /// baseline median of zero, any shift shown with confidence counts.
    Relative(f64),
    /// In the metric's own unit (points of an error ratio, say).
    Absolute(f64),
}

/// What a metric's comparison asks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    pub bad: Bad,
    pub allowed: Allowance,
    /// The two-sided confidence of the shift's interval, for example 0.98.
    pub confidence: f64,
    /// Fewer valid samples on either side than this: `NoData`.
    pub min_samples: usize,
}

/// The class of one metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Higher than the baseline by more than allowed, and higher is bad.
    High,
    /// Lower than the baseline by more than allowed, and lower is bad.
    Low,
    /// No bad change shown.
    Pass,
    /// Too few samples on one side to say.
    NoData,
}

/// One metric's class and the figures behind it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judged {
    pub class: Class,
    pub revision_median: Option<f64>,
    pub baseline_median: Option<f64>,
    /// The shift of the revision over the baseline, with its interval.
    pub shift: Option<Shift>,
    /// The shift as a share of the baseline's median, when that is not
    /// zero.
    pub relative: Option<f64>,
    /// The Mann-Whitney p-value of a change in the bad direction.
    pub p: Option<f64>,
}

/// Classifies `revision` against `baseline`; values that are not finite
/// are left out.
pub fn classify(comparison: &Comparison, revision: &[f64], baseline: &[f64]) -> Judged {
    let revision = finite(revision);
    let baseline = finite(baseline);
    let revision_median = median(&revision);
    let baseline_median = median(&baseline);
    let min = comparison.min_samples.max(1);
    let mut judged = Judged {
        class: Class::NoData,
        revision_median,
        baseline_median,
        shift: None,
        relative: None,
        p: None,
    };
    if revision.len() < min || baseline.len() < min {
        return judged;
    }
    let Some(shift) = stats::hodges_lehmann(&revision, &baseline, comparison.confidence) else {
        return judged;
    };
    let alternative = match comparison.bad {
        Bad::Increase => Alternative::Greater,
        Bad::Decrease => Alternative::Less,
        Bad::Either => Alternative::TwoSided,
    };
    let base = baseline_median.unwrap_or_default().abs();
    let margin = match comparison.allowed {
        Allowance::Relative(share) => share.abs() * base,
        Allowance::Absolute(amount) => amount.abs(),
    };
    let up = matches!(comparison.bad, Bad::Increase | Bad::Either);
    let down = matches!(comparison.bad, Bad::Decrease | Bad::Either);
    judged.class = if up && shift.low > margin {
        Class::High
    } else if down && shift.high < -margin {
        Class::Low
    } else {
        Class::Pass
    };
    judged.shift = Some(shift);
    judged.relative = (base > 0.0).then(|| shift.estimate / base);
    judged.p = stats::mann_whitney(&revision, &baseline, alternative).map(|t| t.p);
    judged
}

fn finite(values: &[f64]) -> Vec<f64> {
    let mut kept: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    kept.sort_by(f64::total_cmp);
    kept
}

fn median(sorted: &[f64]) -> Option<f64> {
    (!sorted.is_empty()).then(|| stats::median(sorted))
}

/// One metric's part in the score.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored<'a> {
    pub name: &'a str,
    pub class: Class,
    /// Its share of the score, relative to the others'.
    pub weight: f64,
    /// A High or Low of a critical metric fails the revision whatever the
    /// score.
    pub critical: bool,
}

/// What the score says of the revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Between the marginal and the pass threshold: a person decides.
    Marginal,
    Fail,
    /// No metric had enough samples.
    NoData,
}

/// The score of a revision, 0 to 100, and what it says.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// The weighted share of the judged metrics that passed, in percent.
    pub score: Option<f64>,
    pub outcome: Outcome,
    /// The critical metric that failed the revision, if one did.
    pub critical: Option<String>,
}

/// The score of `metrics` against the `pass` and `marginal` thresholds
/// (percent). Metrics without data count neither way.
pub fn score(metrics: &[Scored<'_>], pass: f64, marginal: f64) -> Score {
    let failed = |m: &&Scored<'_>| matches!(m.class, Class::High | Class::Low);
    if let Some(critical) = metrics.iter().filter(|m| m.critical).find(failed) {
        return Score {
            score: None,
            outcome: Outcome::Fail,
            critical: Some(critical.name.to_owned()),
        };
    }
    let judged: Vec<&Scored<'_>> = metrics
        .iter()
        .filter(|m| m.class != Class::NoData)
        .collect();
    // Folded from +0: a sum of no f64 is -0, which prints as "-0".
    let total = judged.iter().fold(0.0, |sum, m| sum + m.weight.max(0.0));
    if judged.is_empty() || total <= 0.0 {
        return Score {
            score: None,
            outcome: Outcome::NoData,
            critical: None,
        };
    }
    let passed = judged
        .iter()
        .filter(|m| m.class == Class::Pass)
        .fold(0.0, |sum, m| sum + m.weight.max(0.0));
    let score = 100.0 * passed / total;
    let outcome = if score >= pass {
        Outcome::Pass
    } else if score >= marginal {
        Outcome::Marginal
    } else {
        Outcome::Fail
    };
    Score {
        score: Some(score),
        outcome,
        critical: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency() -> Comparison {
        Comparison {
            bad: Bad::Increase,
            allowed: Allowance::Relative(0.1),
            confidence: 0.98,
            min_samples: 5,
        }
    }

    /// `n` distinct values from `base` up to `base + step`, in a shuffled
    /// order.
    fn series(base: f64, step: f64, n: u32) -> Vec<f64> {
        (0..n)
            .map(|i| base + step * f64::from((i * 7) % n) / f64::from(n))
            .collect()
    }

    #[test]
    fn a_revision_far_above_its_baseline_is_high() {
        let baseline = series(100.0, 10.0, 20);
        let slower: Vec<f64> = baseline.iter().map(|v| v * 1.4).collect();
        let judged = classify(&latency(), &slower, &baseline);
        assert_eq!(judged.class, Class::High);
        let relative = judged.relative.unwrap();
        assert!((0.35..0.45).contains(&relative), "{relative}");
        assert!(judged.p.unwrap() < 0.01);
    }

    #[test]
    fn a_change_inside_the_allowance_passes() {
        let baseline = series(100.0, 10.0, 20);
        // 5 % slower, every sample: shown with confidence, but allowed.
        let slower: Vec<f64> = baseline.iter().map(|v| v * 1.05).collect();
        assert_eq!(classify(&latency(), &slower, &baseline).class, Class::Pass);
        // Faster is not bad for a latency.
        let faster: Vec<f64> = baseline.iter().map(|v| v * 0.5).collect();
        assert_eq!(classify(&latency(), &faster, &baseline).class, Class::Pass);
        let either = Comparison {
            bad: Bad::Either,
            ..latency()
        };
        assert_eq!(classify(&either, &faster, &baseline).class, Class::Low);
    }

    #[test]
    fn too_few_samples_or_none_finite_is_no_data() {
        let baseline = series(100.0, 10.0, 20);
        let judged = classify(&latency(), &[1.0, 2.0, f64::NAN, f64::INFINITY], &baseline);
        assert_eq!(judged.class, Class::NoData);
        assert_eq!(judged.revision_median, Some(1.5));
        assert_eq!(classify(&latency(), &baseline, &[]).class, Class::NoData);
    }

    #[test]
    fn an_absolute_allowance_judges_a_ratio_whose_baseline_is_zero() {
        let baseline = vec![0.0; 10];
        let errors = vec![0.02, 0.03, 0.02, 0.025, 0.03, 0.02, 0.02, 0.03, 0.025, 0.02];
        let ratio = Comparison {
            allowed: Allowance::Absolute(0.01),
            ..latency()
        };
        let judged = classify(&ratio, &errors, &baseline);
        assert_eq!(judged.class, Class::High);
        assert_eq!(judged.relative, None);
        let small: Vec<f64> = errors.iter().map(|e| e / 10.0).collect();
        assert_eq!(classify(&ratio, &small, &baseline).class, Class::Pass);
    }

    #[test]
    fn the_score_weighs_judged_metrics_and_a_critical_failure_decides() {
        let m = |name, class, weight, critical| Scored {
            name,
            class,
            weight,
            critical,
        };
        let metrics = [
            m("latency", Class::High, 1.0, false),
            m("errors", Class::Pass, 3.0, false),
            m("saturation", Class::NoData, 5.0, false),
        ];
        let s = score(&metrics, 90.0, 50.0);
        assert_eq!((s.score, s.outcome), (Some(75.0), Outcome::Marginal));
        assert_eq!(score(&metrics, 70.0, 50.0).outcome, Outcome::Pass);
        assert_eq!(score(&metrics, 95.0, 80.0).outcome, Outcome::Fail);
        let critical = [
            m("latency", Class::High, 1.0, true),
            m("errors", Class::Pass, 99.0, false),
        ];
        let s = score(&critical, 50.0, 10.0);
        assert_eq!(
            (s.outcome, s.critical.as_deref()),
            (Outcome::Fail, Some("latency"))
        );
        // No metric passed: a score of +0, not -0 ("score -0" in a message).
        let s = score(&[m("latency", Class::High, 1.0, false)], 50.0, 10.0);
        assert!(
            s.score.is_some_and(|s| s == 0.0 && s.is_sign_positive()),
            "{s:?}"
        );
        let none = [m("latency", Class::NoData, 1.0, true)];
        assert_eq!(score(&none, 50.0, 10.0).outcome, Outcome::NoData);
    }
}
