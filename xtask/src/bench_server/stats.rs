//! The statistics of `bench server`: medians over runs, and the ratio of
//! two servers' figures with a 95 % confidence interval from a bootstrap
//! over paired runs.

/// The median of `values` (the upper middle one for an even count).
pub(super) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// A ratio of one server's figure to another's: the median of the ratios of
/// the runs taken together, and a 95 % confidence interval of that median.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Ratio {
    pub(super) median: f64,
    pub(super) low: f64,
    pub(super) high: f64,
}

/// Resamples of the bootstrap.
const RESAMPLES: usize = 10_000;

/// The ratio of `ours[i] / theirs[i]` over paired runs `i` (the two servers
/// measured in the same run, one after the other): the median of the
/// per-run ratios and a 95 % percentile-bootstrap interval of that median
/// (10 000 resamples of the pairs, with replacement, from a fixed seed so
/// that the same figures give the same interval). None without a pair.
pub(super) fn paired_ratio(ours: &[f64], theirs: &[f64]) -> Option<Ratio> {
    let ratios: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .filter(|(_, t)| **t > 0.0)
        .map(|(o, t)| o / t)
        .collect();
    if ratios.is_empty() {
        return None;
    }
    let mut rng = SplitMix(0x2026_1207);
    let mut medians = Vec::with_capacity(RESAMPLES);
    let mut sample = vec![0.0; ratios.len()];
    for _ in 0..RESAMPLES {
        for slot in &mut sample {
            *slot = ratios[rng.below(ratios.len())];
        }
        medians.push(median(&sample));
    }
    medians.sort_by(f64::total_cmp);
    let at = |q: f64| {
        // The q-quantile of the sorted resampled medians.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index below RESAMPLES"
        )]
        let i = ((RESAMPLES as f64 - 1.0) * q).round() as usize;
        medians[i.min(RESAMPLES - 1)]
    };
    Some(Ratio {
        median: median(&ratios),
        low: at(0.025),
        high: at(0.975),
    })
}

/// `SplitMix64`: a small, well-mixed generator; enough for resampling.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is below 2^-40 for small `n`).
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the remainder is below n, a usize"
    )]
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_take_the_middle() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < 1e-12);
        assert!((median(&[4.0, 1.0, 3.0, 2.0]) - 3.0).abs() < 1e-12);
        assert!(median(&[]).abs() < 1e-12);
    }

    #[test]
    fn a_single_pair_has_no_spread() {
        let r = paired_ratio(&[30.0], &[10.0]).unwrap();
        assert!((r.median - 3.0).abs() < 1e-12);
        assert!((r.low - 3.0).abs() < 1e-12 && (r.high - 3.0).abs() < 1e-12);
        assert_eq!(paired_ratio(&[1.0], &[0.0]), None);
        assert_eq!(paired_ratio(&[], &[]), None);
    }

    #[test]
    fn the_interval_holds_the_median_and_narrows_with_agreeing_runs() {
        // Ten runs whose ratios spread from 1.9 to 2.4.
        let theirs = [10.0; 10];
        let spread = [19.0, 24.0, 21.0, 20.0, 23.0, 22.0, 20.5, 21.5, 22.5, 19.5];
        let wide = paired_ratio(&spread, &theirs).unwrap();
        assert!(wide.low <= wide.median && wide.median <= wide.high);
        assert!(wide.low >= 1.9 && wide.high <= 2.4, "{wide:?}");
        assert!(wide.high - wide.low > 0.05, "{wide:?}");
        // Runs that agree to a hundredth give an interval as narrow.
        let tight = [
            21.0, 21.1, 20.9, 21.0, 21.05, 20.95, 21.0, 21.02, 20.98, 21.0,
        ];
        let narrow = paired_ratio(&tight, &theirs).unwrap();
        assert!(narrow.high - narrow.low <= 0.02, "{narrow:?}");
        // The same figures give the same interval.
        assert_eq!(paired_ratio(&spread, &theirs), Some(wide));
    }

    #[test]
    fn ratios_are_paired_by_run() {
        // Each run is twice as fast; run-to-run drift that hits both
        // servers alike does not widen the interval.
        let theirs = [10.0, 20.0, 15.0, 12.0, 18.0];
        let ours: Vec<f64> = theirs.iter().map(|t| t * 2.0).collect();
        let r = paired_ratio(&ours, &theirs).unwrap();
        assert!((r.low - 2.0).abs() < 1e-12 && (r.high - 2.0).abs() < 1e-12);
    }
}
