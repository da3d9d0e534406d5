//! Inline SVG line charts for the time-series panels (and the stat panels'
//! sparklines): a time axis in UTC, a value axis in the panel's unit, one
//! line per series, broken where the series has no sample, and the
//! dashboard's annotations as dashed vertical markers.

use std::fmt::Write as _;

use super::format;
use super::format::escape;

/// Grafana's classic palette, in the order it hands colours to series.
pub const PALETTE: [&str; 10] = [
    "#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9", "#705DA0",
    "#37872D", "#FADE2A",
];

const AXIS_TEXT: &str = "#a0a0b0";
const GRID: &str = "rgba(204,204,220,0.09)";
/// Pixels per character of the 11 px axis labels, for the margin they need.
const LABEL_CHAR_WIDTH: f64 = 6.4;

/// One line: its legend name and its samples as `(unix time, value)`, a
/// value of `None` where Prometheus answered NaN or ±Inf.
pub struct Series {
    pub name: String,
    pub points: Points,
}

/// Samples as `(unix time, value)`.
pub type Points = Vec<(f64, Option<f64>)>;

/// One annotation: when, what it says, in which colour.
pub struct Marker {
    pub time: f64,
    pub title: String,
    pub color: String,
}

/// A chart of `series` over `[start, end]` in a `width` by `height` box.
pub struct Chart<'a> {
    pub width: f64,
    pub height: f64,
    pub start: f64,
    pub end: f64,
    /// The query's step: samples further apart than this (and a half) are
    /// not joined by a line.
    pub step: f64,
    pub unit: &'a str,
    pub series: &'a [Series],
    pub markers: &'a [Marker],
    /// Axes, grid and markers; without them (a stat's sparkline) the
    /// lines fill the box.
    pub axes: bool,
    /// One colour for every line instead of the palette's.
    pub color: Option<&'a str>,
}

/// Where the lines go inside the chart's box, and the values at its top
/// and bottom edge.
struct Plot {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    start: f64,
    end: f64,
    low: f64,
    high: f64,
}

impl Plot {
    fn x(&self, time: f64) -> f64 {
        self.left + (time - self.start) / (self.end - self.start).max(1.0) * self.width
    }

    fn y(&self, value: f64) -> f64 {
        self.top + (self.high - value) / (self.high - self.low) * self.height
    }

    fn bottom(&self) -> f64 {
        self.top + self.height
    }
}

impl Chart<'_> {
    /// The chart as an `<svg>` element.
    pub fn svg(&self) -> String {
        let values = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter_map(|(_, v)| *v));
        let (low, high) = values.fold((0.0_f64, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let high = if high > low { high } else { low + 1.0 };
        let ticks = nice_ticks(low, high, 5);
        let labels: Vec<String> = ticks.iter().map(|t| format::value(self.unit, *t)).collect();
        let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        #[allow(clippy::cast_precision_loss)]
        let (left, top, right, bottom) = if self.axes {
            (longest as f64 * LABEL_CHAR_WIDTH + 10.0, 14.0, 10.0, 20.0)
        } else {
            (0.0, 2.0, 0.0, 0.0)
        };
        let plot = Plot {
            left,
            top,
            width: (self.width - left - right).max(1.0),
            height: (self.height - top - bottom).max(1.0),
            start: self.start,
            end: self.end,
            low: ticks[0],
            high: ticks[ticks.len() - 1],
        };
        let mut svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">"#,
            w = self.width,
            h = self.height
        );
        if self.axes {
            self.axes(&mut svg, &plot, &ticks, &labels);
            self.markers(&mut svg, &plot);
        }
        self.lines(&mut svg, &plot);
        svg.push_str("</svg>");
        svg
    }

    /// Grid lines with the value labels on the left and the times below.
    fn axes(&self, svg: &mut String, plot: &Plot, ticks: &[f64], labels: &[String]) {
        for (tick, label) in ticks.iter().zip(labels) {
            let ty = plot.y(*tick);
            let _ = write!(
                svg,
                r#"<line x1="{:.1}" x2="{:.1}" y1="{ty:.1}" y2="{ty:.1}" stroke="{GRID}"/><text x="{:.1}" y="{:.1}" fill="{AXIS_TEXT}" font-size="11" text-anchor="end">{}</text>"#,
                plot.left,
                plot.left + plot.width,
                plot.left - 6.0,
                ty + 4.0,
                escape(label)
            );
        }
        for tick in time_ticks(self.start, self.end, plot.width) {
            let tx = plot.x(tick);
            let _ = write!(
                svg,
                r#"<line x1="{tx:.1}" x2="{tx:.1}" y1="{:.1}" y2="{:.1}" stroke="{GRID}"/><text x="{tx:.1}" y="{:.1}" fill="{AXIS_TEXT}" font-size="11" text-anchor="middle">{}</text>"#,
                plot.top,
                plot.bottom(),
                self.height - 5.0,
                format::clock(tick)
            );
        }
    }

    /// Each annotation: a dashed line, a triangle on the time axis and its
    /// title at the top.
    fn markers(&self, svg: &mut String, plot: &Plot) {
        for marker in self.markers {
            if marker.time < self.start || marker.time > self.end {
                continue;
            }
            let mx = plot.x(marker.time);
            let base = plot.bottom();
            let _ = write!(
                svg,
                r#"<line x1="{mx:.1}" x2="{mx:.1}" y1="{:.1}" y2="{base:.1}" stroke="{c}" stroke-dasharray="4 3" stroke-width="1.2"/><path d="M{:.1} {:.1} L{mx:.1} {base:.1} L{:.1} {:.1} Z" fill="{c}"/><text x="{:.1}" y="{:.1}" fill="{c}" font-size="10">{}</text>"#,
                plot.top,
                mx - 5.0,
                base + 6.0,
                mx + 5.0,
                base + 6.0,
                mx + 4.0,
                plot.top - 3.0,
                escape(&marker.title),
                c = marker.color,
            );
        }
    }

    /// One polyline per run of samples; a dot for a lone sample.
    fn lines(&self, svg: &mut String, plot: &Plot) {
        for (index, series) in self.series.iter().enumerate() {
            let color = self.color.unwrap_or(PALETTE[index % PALETTE.len()]);
            for segment in segments(&series.points, self.step) {
                if let [(t, v)] = segment.as_slice() {
                    let _ = write!(
                        svg,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="2" fill="{color}"/>"#,
                        plot.x(*t),
                        plot.y(*v)
                    );
                    continue;
                }
                let path: Vec<String> = segment
                    .iter()
                    .map(|(t, v)| format!("{:.1},{:.1}", plot.x(*t), plot.y(*v)))
                    .collect();
                let _ = write!(
                    svg,
                    r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.6" stroke-linejoin="round"/>"#,
                    path.join(" ")
                );
            }
        }
    }
}

/// Runs of samples with a value, no two neighbours further apart than
/// one and a half steps.
fn segments(points: &[(f64, Option<f64>)], step: f64) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    for (t, v) in points {
        let Some(v) = v else {
            runs.extend((!current.is_empty()).then(|| std::mem::take(&mut current)));
            continue;
        };
        if current
            .last()
            .is_some_and(|(last, _)| t - last > step * 1.5)
        {
            runs.push(std::mem::take(&mut current));
        }
        current.push((*t, *v));
    }
    runs.extend((!current.is_empty()).then_some(current));
    runs
}

/// About `count` round values (1, 2 or 5 times a power of ten apart) from
/// at or below `low` to at or above `high`.
fn nice_ticks(low: f64, high: f64, count: u32) -> Vec<f64> {
    let rough = (high - low) / f64::from(count);
    let magnitude = 10_f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * magnitude);
    let first = (low / step).floor();
    let last = (high / step).ceil();
    let mut ticks = Vec::new();
    let mut n = first;
    while n <= last + 1e-9 {
        // Multiples of the step rather than sums of it: no error piles up.
        ticks.push(n * step);
        n += 1.0;
    }
    ticks
}

/// Round clock times for the time axis, about one per 110 pixels.
fn time_ticks(start: f64, end: f64, width: f64) -> Vec<f64> {
    const INTERVALS: [f64; 12] = [
        5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    ];
    let room = (width / 110.0).max(2.0);
    let interval = INTERVALS
        .iter()
        .copied()
        .find(|i| (end - start) / i <= room)
        .unwrap_or(21_600.0);
    let mut ticks = Vec::new();
    let mut tick = (start / interval).ceil() * interval;
    while tick <= end {
        ticks.push(tick);
        tick += interval;
    }
    ticks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_values() {
        let labels = |low, high| -> Vec<String> {
            nice_ticks(low, high, 5)
                .into_iter()
                .map(format::number)
                .collect()
        };
        assert_eq!(labels(0.0, 6.7), ["0", "2", "4", "6", "8"]);
        assert_eq!(labels(0.0, 0.34), ["0", "0.1", "0.2", "0.3", "0.4"]);
        assert_eq!(labels(0.0, 1.0), ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert_eq!(labels(-1.0, 3.0), ["-1", "0", "1", "2", "3"]);
        assert_eq!(
            time_ticks(1000.0, 1240.0, 440.0),
            [1020.0, 1080.0, 1140.0, 1200.0]
        );
    }

    #[test]
    fn lines_break_where_samples_are_missing() {
        let points = [
            (0.0, Some(1.0)),
            (5.0, Some(2.0)),
            (10.0, None),
            (15.0, Some(3.0)),
            (30.0, Some(4.0)),
            (35.0, Some(5.0)),
        ];
        assert_eq!(
            segments(&points, 5.0),
            [
                vec![(0.0, 1.0), (5.0, 2.0)],
                vec![(15.0, 3.0)],
                vec![(30.0, 4.0), (35.0, 5.0)],
            ]
        );
    }
}
