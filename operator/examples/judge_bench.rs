//! `cargo xtask bench judge`: how often each judge is wrong.
//!
//! Generates releases whose truth is known: A/A (the revision drawn from
//! the same traffic as its baseline) and A/B (a regression of a known size
//! injected into the revision), and judges each with the fixed-bound judge
//! (`rollout::judge`, with bounds calibrated on separate A/A releases to
//! the tightest that keep it at 1 false rollback per 1,000) and with the
//! comparative judge (`rollout::compare`). Prints, and writes as JSON,
//! false rollbacks per 1,000 good releases, recall per effect size,
//! precision at 9 good releases to 1 bad, and the median time to a
//! verdict. docs/rollout.md describes the model; every draw comes from the
//! seed.
//!
//! `judge_bench [--quick] [--seed N] [--releases N] [--out FILE]`

use std::collections::BTreeMap;
use std::f64::consts::PI;

use anyhow::{Context, Result, bail};
use gantry_operator::crd::{Analysis, MetricSpec, MetricStatus};
use gantry_operator::rollout::compare::{self, Allowance, Bad, Class, Comparison};
use gantry_operator::rollout::judge::{self, Standing};
use serde_json::{Value, json};

/// Seconds between two samples, and samples in a window (10 minutes).
const INTERVAL_S: f64 = 30.0;
const SAMPLES: usize = 20;
/// Requests per second a GoServer serves, and a canary's share of them.
const RATE: f64 = 40.0;
const CANARY_SHARE: f64 = 0.1;
/// The allowed change of the comparative judge, fixed for the benchmark.
const ALLOWED: f64 = 0.10;
const CONFIDENCE: f64 = 0.98;
/// The comparative judge is also run at these confidences, to show what
/// the choice trades.
const OTHER_CONFIDENCES: [f64; 3] = [0.90, 0.95, 0.995];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Effect {
    None,
    /// p95 latency higher by this share.
    Latency(f64),
    /// The 5xx ratio higher by this many points (0.01 is one point).
    Errors(f64),
}

impl Effect {
    fn name(self) -> String {
        match self {
            Self::None => "none".to_owned(),
            Self::Latency(share) => format!("p95 latency +{:.0} %", share * 100.0),
            Self::Errors(points) => format!("5xx ratio +{} points", points * 100.0),
        }
    }

    /// At least twice the allowed change: the regressions the goals name.
    fn large(self) -> bool {
        match self {
            Self::None => false,
            Self::Latency(share) => share >= 2.0 * ALLOWED,
            Self::Errors(points) => points >= 0.01,
        }
    }
}

const EFFECTS: [Effect; 7] = [
    Effect::Latency(0.05),
    Effect::Latency(0.10),
    Effect::Latency(0.25),
    Effect::Latency(0.50),
    Effect::Errors(0.002),
    Effect::Errors(0.01),
    Effect::Errors(0.05),
];

/// How a release's traffic is drawn.
#[derive(Clone, Copy, Debug)]
struct Traffic {
    /// The baseline is the stable revision beside the canary (same time),
    /// or, under `RollingUpdate`, the last good revision's window, earlier.
    canary: bool,
    /// Request counts over-dispersed (a log-normal factor per interval)
    /// instead of Poisson alone.
    bursty: bool,
    /// A share of slow requests (a second mode) instead of one log-normal.
    bimodal: bool,
    /// The median latency (ms) and the 5xx ratio of this GoServer.
    median_ms: f64,
    error_ratio: f64,
}

/// One window of samples: p95 latency (ms), mean latency (ms) and 5xx
/// ratio per interval.
struct Window {
    p95: Vec<f64>,
    mean: Vec<f64>,
    errors: Vec<f64>,
}

/// Which latency of a window a judge compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Latency {
    P95,
    /// What docs/rollout.md and examples/verified.yaml compare: the mean
    /// (`_sum / _count` of the histogram), steadier than a p95 over a
    /// canary's few requests.
    Mean,
}

struct Rng(fastrand::Rng);

impl Rng {
    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.0.f64()
    }

    fn normal(&mut self) -> f64 {
        // Box-Muller; 1 - u keeps the logarithm finite.
        let u = 1.0 - self.0.f64();
        let v = self.0.f64();
        (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
    }

    fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    fn poisson(&mut self, mean: f64) -> usize {
        // The normal approximation is good at the means used here (> 50).
        let draw = mean + mean.sqrt() * self.normal();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let count = draw.round().max(0.0) as usize;
        count
    }
}

impl Traffic {
    fn draw(rng: &mut Rng) -> Self {
        Self {
            canary: rng.0.bool(),
            bursty: rng.0.bool(),
            bimodal: rng.0.bool(),
            median_ms: rng.uniform(5.0, 80.0),
            error_ratio: rng.uniform(0.002, 0.01),
        }
    }

    /// A window of `samples` intervals at `load` times the usual rate, with
    /// latencies times `slower` and `extra_errors` points added.
    fn window(&self, rng: &mut Rng, load: f64, slower: f64, extra_errors: f64) -> Window {
        let share = if self.canary { CANARY_SHARE } else { 1.0 };
        let mut p95 = Vec::with_capacity(SAMPLES);
        let mut mean = Vec::with_capacity(SAMPLES);
        let mut errors = Vec::with_capacity(SAMPLES);
        let mut latencies = Vec::new();
        for _ in 0..SAMPLES {
            let burst = if self.bursty {
                rng.log_normal(1.0, 0.6)
            } else {
                1.0
            };
            let count = rng.poisson(RATE * share * load * burst * INTERVAL_S);
            latencies.clear();
            let mut failed = 0_u32;
            for _ in 0..count {
                let slow = self.bimodal && rng.0.f64() < 0.1;
                let median = if slow {
                    self.median_ms * 6.0
                } else {
                    self.median_ms
                };
                latencies.push(rng.log_normal(median, 0.5) * slower);
                if rng.0.f64() < self.error_ratio + extra_errors {
                    failed += 1;
                }
            }
            if latencies.is_empty() {
                p95.push(f64::NAN);
                mean.push(f64::NAN);
                errors.push(f64::NAN);
                continue;
            }
            #[allow(clippy::cast_precision_loss)]
            mean.push(latencies.iter().sum::<f64>() / latencies.len() as f64);
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let rank = ((latencies.len() as f64) * 0.95).ceil() as usize - 1;
            let (_, value, _) = latencies.select_nth_unstable_by(rank, f64::total_cmp);
            p95.push(*value);
            #[allow(clippy::cast_precision_loss)]
            errors.push(f64::from(failed) / latencies.len() as f64);
        }
        Window { p95, mean, errors }
    }
}

/// A release: its baseline's window and its revision's.
struct Release {
    baseline: Window,
    revision: Window,
    /// Whether the baseline ran beside the revision as a canary's does.
    canary: bool,
}

fn release(rng: &mut Rng, effect: Effect) -> Release {
    let traffic = Traffic::draw(rng);
    let (load, drift) = if traffic.canary {
        (1.0, 1.0)
    } else {
        // The last good revision ran at another time of day: up to 30 %
        // more or less traffic, latency a little higher under more load,
        // and a slow drift of up to 2 % either way.
        let load = rng.uniform(0.7, 1.3);
        (load, (1.0 + 0.05 * (load - 1.0)) * rng.uniform(0.98, 1.02))
    };
    let baseline = traffic.window(rng, 1.0, 1.0, 0.0);
    let (slower, extra) = match effect {
        Effect::None => (1.0, 0.0),
        Effect::Latency(share) => (1.0 + share, 0.0),
        Effect::Errors(points) => (1.0, points),
    };
    let revision = traffic.window(rng, load, drift * slower, extra);
    Release {
        baseline,
        revision,
        canary: traffic.canary,
    }
}

/// The fixed-bound judge's verdict: a rollback, and after how many
/// samples.
fn fixed(analysis: &Analysis, revision: &Window) -> (bool, usize) {
    let mut counts: Vec<MetricStatus> = analysis
        .metrics
        .iter()
        .map(|m| MetricStatus {
            name: m.name.clone(),
            ..MetricStatus::default()
        })
        .collect();
    for i in 0..SAMPLES {
        for (metric, (spec, count)) in [&revision.p95, &revision.errors]
            .iter()
            .zip(analysis.metrics.iter().zip(counts.iter_mut()))
        {
            let value = Some(metric[i]).filter(|v| !v.is_nan());
            judge::count(count, judge::outcome(spec, value), value);
        }
        match judge::standing(analysis, &counts, i + 1 == SAMPLES) {
            Standing::Failed { .. } => return (true, i + 1),
            Standing::Measuring => {}
            Standing::Passed | Standing::NoData { .. } => return (false, i + 1),
        }
    }
    (false, SAMPLES)
}

/// The comparative judge's verdict at `confidence` on `latency` and the
/// 5xx ratio, once the window is over.
fn comparative(release: &Release, confidence: f64, latency: Latency) -> (bool, usize) {
    let comparison = Comparison {
        bad: Bad::Increase,
        allowed: Allowance::Relative(ALLOWED),
        confidence,
        min_samples: SAMPLES / 2,
    };
    let (revision, baseline) = match latency {
        Latency::P95 => (&release.revision.p95, &release.baseline.p95),
        Latency::Mean => (&release.revision.mean, &release.baseline.mean),
    };
    let latency = compare::classify(&comparison, revision, baseline);
    let errors = compare::classify(
        &comparison,
        &release.revision.errors,
        &release.baseline.errors,
    );
    let failed = [latency.class, errors.class]
        .iter()
        .any(|c| matches!(c, Class::High | Class::Low));
    (failed, SAMPLES)
}

fn analysis(p95_max: f64, errors_max: f64) -> Result<Analysis> {
    let metric = |name: &str, max: f64| -> Result<MetricSpec> {
        serde_json::from_value(json!({"name": name, "query": "generated", "max": max}))
            .context("a metric")
    };
    let metrics = [
        metric("p95-latency", p95_max)?,
        metric("error-ratio", errors_max)?,
    ];
    serde_json::from_value(json!({
        "warmup": "0s", "interval": "30s", "window": "10m", "minSamples": SAMPLES / 2,
        "failureLimit": 0, "deadline": "30m", "onDeadline": "Hold",
        "metrics": metrics,
    }))
    .context("an analysis")
}

/// The fixed-bound judge's bounds, the tightest that keep it at `rate`
/// false rollbacks on `releases` A/A releases of their own: per metric,
/// the quantile `1 - rate/2` of a release's worst sample measured against
/// its baseline's median (p95 as a ratio, the 5xx ratio as points above).
/// Each release then gets bounds set from its own baseline: the best case
/// of a team that sets a bound per service from its history, not one
/// bound for every service.
fn calibrate(mut draw: impl FnMut() -> Release, releases: usize, rate: f64) -> (f64, f64) {
    let mut worst_p95 = Vec::with_capacity(releases);
    let mut worst_errors = Vec::with_capacity(releases);
    for _ in 0..releases {
        let r = draw();
        let base_p95 = median(&r.baseline.p95);
        let base_errors = median(&r.baseline.errors).max(1e-4);
        worst_p95.push(max(&r.revision.p95) / base_p95);
        worst_errors.push(max(&r.revision.errors) - base_errors);
    }
    (
        quantile(&mut worst_p95, 1.0 - rate / 2.0),
        quantile(&mut worst_errors, 1.0 - rate / 2.0),
    )
}

/// The judges run on recorded samples, in the order of their table.
const RECORDED_JUDGES: [&str; 2] = ["fixed, mean", "comparative, mean"];

/// Samples recorded from a real gantry-server under a steady load, one a
/// second (`cargo xtask bench judge --record`; docs/judge.md says how).
const RECORDED: &str = include_str!("judge_recorded.json");

/// The recorded samples, one entry per second.
struct Recorded {
    requests: Vec<f64>,
    p95: Vec<f64>,
    mean: Vec<f64>,
    errors: Vec<f64>,
}

fn recorded() -> Result<Recorded> {
    let document: Value = serde_json::from_str(RECORDED).context("judge_recorded.json")?;
    let samples = document["samples"]
        .as_array()
        .context("judge_recorded.json has no samples")?;
    let column = |key: &str| -> Vec<f64> {
        samples
            .iter()
            .map(|s| s[key].as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    let recorded = Recorded {
        requests: column("requests"),
        p95: column("p95Ms"),
        mean: column("meanMs"),
        errors: column("errorRatio"),
    };
    if recorded.requests.len() < 2 * SAMPLES {
        bail!("judge_recorded.json holds fewer than two windows of samples");
    }
    Ok(recorded)
}

/// A release drawn from the recording: the baseline's window and the
/// revision's are two windows of it that do not overlap, in either order;
/// the revision gets `effect` (its latencies times the share; for each
/// recorded request, one more 5xx with the effect's probability).
fn recorded_release(rng: &mut Rng, rec: &Recorded, effect: Effect) -> Release {
    let n = rec.requests.len();
    let first = rng.0.usize(0..=n - 2 * SAMPLES);
    let second = rng.0.usize(first + SAMPLES..=n - SAMPLES);
    let (a, b) = if rng.0.bool() {
        (first, second)
    } else {
        (second, first)
    };
    let window = |at: usize, rng: &mut Rng, slower: f64, extra: f64| {
        let mut errors = Vec::with_capacity(SAMPLES);
        for i in at..at + SAMPLES {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let requests = rec.requests[i].max(0.0) as u32;
            let added = (0..requests).filter(|_| rng.0.f64() < extra).count();
            #[allow(clippy::cast_precision_loss)]
            let ratio = rec.errors[i] + added as f64 / f64::from(requests.max(1));
            errors.push(ratio);
        }
        Window {
            p95: rec.p95[at..at + SAMPLES]
                .iter()
                .map(|v| v * slower)
                .collect(),
            mean: rec.mean[at..at + SAMPLES]
                .iter()
                .map(|v| v * slower)
                .collect(),
            errors,
        }
    };
    let (slower, extra) = match effect {
        Effect::None => (1.0, 0.0),
        Effect::Latency(share) => (1.0 + share, 0.0),
        Effect::Errors(points) => (1.0, points),
    };
    Release {
        baseline: window(a, rng, 1.0, 0.0),
        revision: window(b, rng, slower, extra),
        canary: false,
    }
}

/// The judges on recorded samples, both on the mean latency and the 5xx
/// ratio: fixed bounds (calibrated on recorded A/A releases of their own)
/// and the comparative judge. Their tallies per effect, in that order.
fn judge_recorded(rng: &mut Rng, releases: usize) -> Result<Vec<BTreeMap<String, Tally>>> {
    let rec = recorded()?;
    let calibration = (releases * 2).max(1_000);
    let (p95_ratio, error_points) = calibrate(
        || recorded_release(rng, &rec, Effect::None),
        calibration,
        0.001,
    );
    let mut tallies: Vec<BTreeMap<String, Tally>> = (0..2).map(|_| BTreeMap::new()).collect();
    for effect in std::iter::once(Effect::None).chain(EFFECTS) {
        for _ in 0..releases {
            let r = recorded_release(rng, &rec, effect);
            let bounds = analysis(
                p95_ratio * median(&r.baseline.p95),
                median(&r.baseline.errors).max(1e-4) + error_points,
            )?;
            let verdicts = [
                fixed(&bounds, &r.revision),
                comparative(&r, CONFIDENCE, Latency::Mean),
            ];
            for (tally, verdict) in tallies.iter_mut().zip(verdicts) {
                tally.entry(effect.name()).or_default().add(verdict);
            }
        }
    }
    Ok(tallies)
}

fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    quantile(&mut v, 0.5)
}

fn max(values: &[f64]) -> f64 {
    values
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold(f64::NEG_INFINITY, f64::max)
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((values.len() - 1) as f64 * q).round() as usize;
    values[index]
}

#[derive(Default)]
struct Tally {
    judged: usize,
    rollbacks: usize,
    samples_to_rollback: Vec<f64>,
}

impl Tally {
    fn add(&mut self, (rollback, samples): (bool, usize)) {
        self.judged += 1;
        if rollback {
            self.rollbacks += 1;
            #[allow(clippy::cast_precision_loss)]
            self.samples_to_rollback.push(samples as f64);
        }
    }

    #[allow(clippy::cast_precision_loss)]
    fn share(&self) -> f64 {
        self.rollbacks as f64 / self.judged.max(1) as f64
    }
}

struct Args {
    quick: bool,
    seed: u64,
    releases: usize,
    out: Option<String>,
}

fn args() -> Result<Args> {
    let mut args = Args {
        quick: false,
        seed: 20_261_207,
        releases: 0,
        out: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(arg) = given.next() {
        let mut value = || given.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--seed" => args.seed = value()?.parse().context("--seed N")?,
            "--releases" => args.releases = value()?.parse().context("--releases N")?,
            "--out" => args.out = Some(value()?),
            other => bail!("unknown argument {other}"),
        }
    }
    if args.releases == 0 {
        args.releases = if args.quick { 100 } else { 2_000 };
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = args()?;
    let mut rng = Rng(fastrand::Rng::with_seed(args.seed));
    // Calibrated on releases of their own, as a team would on history.
    let calibration = (args.releases * 2).max(1_000);
    let (p95_ratio, error_points) =
        calibrate(|| release(&mut rng, Effect::None), calibration, 0.001);
    // The judges, in the order of the table: fixed bounds, the
    // comparative judge at its default confidence, then at the others.
    let confidences: Vec<f64> = std::iter::once(CONFIDENCE)
        .chain(OTHER_CONFIDENCES)
        .collect();
    let names = judge_names(&confidences);
    let mut tallies: Vec<BTreeMap<String, Tally>> = names.iter().map(|_| BTreeMap::new()).collect();
    for effect in std::iter::once(Effect::None).chain(EFFECTS) {
        for _ in 0..args.releases {
            let r = release(&mut rng, effect);
            let bounds = analysis(
                p95_ratio * median(&r.baseline.p95),
                median(&r.baseline.errors).max(1e-4) + error_points,
            )?;
            let verdicts = std::iter::once(fixed(&bounds, &r.revision))
                .chain(
                    confidences
                        .iter()
                        .map(|c| comparative(&r, *c, Latency::P95)),
                )
                .chain(std::iter::once(comparative(&r, CONFIDENCE, Latency::Mean)));
            for (tally, verdict) in tallies.iter_mut().zip(verdicts) {
                tally.entry(effect.name()).or_default().add(verdict);
                let mode = if r.canary { "canary" } else { "rollingUpdate" };
                tally
                    .entry(format!("{} {mode}", effect.name()))
                    .or_default()
                    .add(verdict);
            }
        }
    }
    let report = |tally: &BTreeMap<String, Tally>| -> Value {
        let good = &tally[&Effect::None.name()];
        let large: Vec<&Tally> = EFFECTS
            .iter()
            .filter(|e| e.large())
            .map(|e| &tally[&e.name()])
            .collect();
        #[allow(clippy::cast_precision_loss)]
        let recall_large = large.iter().map(|t| t.share()).sum::<f64>() / large.len() as f64;
        // The same, and the false rollbacks, for each kind of baseline.
        let by_mode = |mode: &str| {
            let large: Vec<&Tally> = EFFECTS
                .iter()
                .filter(|e| e.large())
                .map(|e| &tally[&format!("{} {mode}", e.name())])
                .collect();
            #[allow(clippy::cast_precision_loss)]
            let recall = large.iter().map(|t| t.share()).sum::<f64>() / large.len() as f64;
            let good = &tally[&format!("{} {mode}", Effect::None.name())];
            json!({"recallLarge": recall, "falseRollbacksPer1000": good.share() * 1000.0, "goodReleases": good.judged})
        };
        let false_rate = good.share();
        // Per 10 releases, 9 good and 1 bad (of the large regressions).
        let precision = recall_large / (recall_large + 9.0 * false_rate);
        let mut to_verdict: Vec<f64> = EFFECTS
            .iter()
            .flat_map(|e| tally[&e.name()].samples_to_rollback.iter().copied())
            .collect();
        json!({
            "falseRollbacksPer1000": false_rate * 1000.0,
            "recall": EFFECTS.iter().map(|e| (e.name(), json!(tally[&e.name()].share()))).collect::<serde_json::Map<_, _>>(),
            "recallLarge": recall_large,
            "byBaseline": {"canary": by_mode("canary"), "rollingUpdate": by_mode("rollingUpdate")},
            "precisionAt9To1": precision,
            "medianSecondsToRollback": quantile(&mut to_verdict, 0.5) * INTERVAL_S,
        })
    };
    let judges: serde_json::Map<String, Value> = names
        .iter()
        .zip(&tallies)
        .map(|(name, tally)| (name.clone(), report(tally)))
        .collect();
    // On recorded samples: fewer releases (the recording holds a few
    // hundred windows' worth of positions).
    let recorded_releases = (args.releases / 2).max(50);
    let (recorded_report, recorded_tallies) = recorded_section(&mut rng, recorded_releases)?;
    let document = json!({
        "seed": args.seed,
        "releasesPerClass": args.releases,
        "calibrationReleases": calibration,
        "window": {"intervalSeconds": INTERVAL_S, "samples": SAMPLES},
        "allowedChange": ALLOWED,
        "confidence": CONFIDENCE,
        "fixedBounds": {"p95OverBaselineMedian": p95_ratio, "errorPointsOverBaselineMedian": error_points},
        "judges": judges,
        "recorded": recorded_report,
    });
    print_table(&names, &judges, &tallies);
    print_recorded(&recorded_report, &recorded_tallies);
    let text = serde_json::to_string_pretty(&document)?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, text + "\n").with_context(|| format!("writing {path}"))?;
        }
        None => println!("{text}"),
    }
    Ok(())
}

/// The judges on `releases` recorded releases of each kind: the report and
/// the tallies.
fn recorded_section(
    rng: &mut Rng,
    releases: usize,
) -> Result<(Value, Vec<BTreeMap<String, Tally>>)> {
    let tallies = judge_recorded(rng, releases)?;
    let judges: serde_json::Map<String, Value> = RECORDED_JUDGES
        .iter()
        .zip(&tallies)
        .map(|(name, tally)| ((*name).to_owned(), summary(tally)))
        .collect();
    let report = json!({
        "releasesPerClass": releases,
        "intervalSeconds": 1,
        "judges": judges,
    });
    Ok((report, tallies))
}

/// False rollbacks, recall and precision of one judge's `tally`.
fn summary(tally: &BTreeMap<String, Tally>) -> Value {
    let good = tally[&Effect::None.name()].share();
    let large: Vec<f64> = EFFECTS
        .iter()
        .filter(|e| e.large())
        .map(|e| tally[&e.name()].share())
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let recall_large = large.iter().sum::<f64>() / large.len() as f64;
    json!({
        "falseRollbacksPer1000": good * 1000.0,
        "recall": EFFECTS.iter().map(|e| (e.name(), json!(tally[&e.name()].share()))).collect::<serde_json::Map<_, _>>(),
        "recallLarge": recall_large,
        "precisionAt9To1": recall_large / (recall_large + 9.0 * good),
    })
}

/// The judges, in the order of the table: fixed bounds, the comparative
/// judge on p95 latency at its default confidence, then at the others,
/// then on the mean latency.
fn judge_names(confidences: &[f64]) -> Vec<String> {
    std::iter::once("fixed".to_owned())
        .chain(confidences.iter().map(|c| {
            if (c - CONFIDENCE).abs() < f64::EPSILON {
                "comparative".to_owned()
            } else {
                format!("comparative at {}", c * 100.0)
            }
        }))
        .chain(std::iter::once("comparative, mean".to_owned()))
        .collect()
}

/// The figures of the judges on recorded samples.
fn print_recorded(report: &Value, tallies: &[BTreeMap<String, Tally>]) {
    println!(
        "\non samples recorded from a real gantry-server ({} releases a kind):",
        report["releasesPerClass"]
    );
    let judges = report["judges"].as_object().cloned().unwrap_or_default();
    print_table(&RECORDED_JUDGES.map(str::to_owned), &judges, tallies);
}

/// The figures of every judge side by side, one column each.
fn print_table(
    names: &[String],
    judges: &serde_json::Map<String, Value>,
    tallies: &[BTreeMap<String, Tally>],
) {
    print!("{:<26}", "");
    for name in names {
        print!(" {name:>18}");
    }
    println!();
    for key in [
        "falseRollbacksPer1000",
        "recallLarge",
        "precisionAt9To1",
        "medianSecondsToRollback",
    ] {
        if names.iter().all(|n| judges[n].get(key).is_none()) {
            continue;
        }
        print!("{key:<26}");
        for name in names {
            print!(" {:>18.4}", judges[name][key].as_f64().unwrap_or(f64::NAN));
        }
        println!();
    }
    for effect in EFFECTS {
        let effect = effect.name();
        print!("recall {effect:<19}");
        for tally in tallies {
            print!(" {:>18.4}", tally[&effect].share());
        }
        println!();
    }
}
