//! The statistics against SciPy and R, through `reference.json` (see
//! `tools/stats-reference/reference.py`), and their edge cases.

// U, and the values SciPy and R computed the same way, compare exactly.
#![allow(clippy::float_cmp)]

use serde::Deserialize;

use super::*;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    name: String,
    x: Vec<f64>,
    y: Vec<f64>,
    mann_whitney: HashMap<String, Expected>,
    hodges_lehmann: HashMap<String, Option<ExpectedShift>>,
}

#[derive(Deserialize)]
struct Expected {
    u: f64,
    p: f64,
}

#[derive(Deserialize)]
struct ExpectedShift {
    estimate: f64,
    low: f64,
    high: f64,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("../reference.json")).expect("reference.json")
}

fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
    (actual - expected).abs() <= tolerance * expected.abs().max(1e-300) || actual == expected
}

#[test]
fn mann_whitney_matches_scipy() {
    let cases = reference().cases;
    assert!(cases.len() >= 12);
    for case in &cases {
        for (name, alternative) in [
            ("two-sided", Alternative::TwoSided),
            ("greater", Alternative::Greater),
            ("less", Alternative::Less),
        ] {
            let expected = &case.mann_whitney[name];
            let test = mann_whitney(&case.x, &case.y, alternative).unwrap();
            assert_eq!(test.u, expected.u, "{} {name}: U", case.name);
            assert!(
                close(test.p, expected.p, 1e-9),
                "{} {name}: p {} against SciPy's {}",
                case.name,
                test.p,
                expected.p
            );
        }
    }
}

#[test]
fn hodges_lehmann_matches_r() {
    for case in reference().cases {
        for (level, expected) in &case.hodges_lehmann {
            let confidence: f64 = level.parse().unwrap();
            let shift = hodges_lehmann(&case.x, &case.y, confidence).unwrap();
            let Some(expected) = expected else {
                // R gives no interval when every observation is tied.
                assert_eq!(
                    (shift.estimate, shift.low, shift.high),
                    (0.0, 0.0, 0.0),
                    "{}",
                    case.name
                );
                continue;
            };
            // The exact interval is order statistics: equal. R finds the
            // approximate one with uniroot to 1e-4, this code to f64.
            let tolerance = if shift.exact { 1e-12 } else { 1.5e-4 };
            for (what, actual, wanted) in [
                ("estimate", shift.estimate, expected.estimate),
                ("low", shift.low, expected.low),
                ("high", shift.high, expected.high),
            ] {
                assert!(
                    (actual - wanted).abs() <= tolerance * wanted.abs().max(1.0),
                    "{} at {level}: {what} {actual} against R's {wanted}",
                    case.name
                );
            }
        }
    }
}

#[test]
fn empty_or_nan_samples_are_not_tested() {
    assert_eq!(mann_whitney(&[], &[1.0], Alternative::TwoSided), None);
    assert_eq!(
        mann_whitney(&[f64::NAN], &[1.0], Alternative::TwoSided),
        None
    );
    assert_eq!(hodges_lehmann(&[1.0], &[], 0.98), None);
    assert_eq!(hodges_lehmann(&[1.0], &[2.0], 1.0), None);
}

#[test]
fn the_exact_distribution_is_symmetric_and_sums_to_one() {
    for (m, n) in [(1, 1), (3, 5), (8, 60), (49, 49)] {
        let d = distribution(m, n);
        assert_eq!(d.cdf.len(), m * n + 1);
        assert!((d.cdf[m * n] - 1.0).abs() < 1e-12, "{m}x{n}");
        for u in 0..m * n {
            let below = d.cdf[u];
            let above = d.sf(m * n - u);
            assert!((below - above).abs() < 1e-9, "{m}x{n} at {u}");
        }
    }
}

#[test]
fn an_interval_that_ends_at_a_pairwise_difference_ends_exactly_there() {
    // Error ratios of a sparse canary: mostly zero on both sides. The
    // interval's lower end is the difference 0 - 0; a bisection once gave
    // 6e-63, which a margin of zero took for a shift (the judge benchmark
    // found it).
    let revision = [0.0, 0.0, 0.0, 0.008, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let baseline = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.007, 0.0, 0.0];
    let shift = hodges_lehmann(&revision, &baseline, 0.98).unwrap();
    assert!(!shift.exact);
    assert_eq!(shift.estimate, 0.0);
    assert!(shift.low <= 0.0, "{shift:?}");
    assert!(shift.high >= 0.0, "{shift:?}");
}
