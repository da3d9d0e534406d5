//! `kubectl gantry`: what a `GoServer`'s status says, as tables, and the
//! requests the operator honours (rollback, promote, retry), made through
//! the annotations of [`gantry_operator::rollout::request`].
//!
//! Everything here is pure, from a `GoServer` to rows and targets; the
//! binary fetches, patches and prints.

pub mod settled;
pub mod table;
mod targets;

use std::fmt::Write as _;

use gantry_operator::crd::{
    CanaryStatus, ComparisonStatus, GoServer, GoServerStatus, HistoryEntry, Verdict,
    VerificationStatus,
};
use serde::Serialize;

pub use table::Table;
use targets::phase;
pub use targets::{abort_target, promote_target, retry_target, rollback_target};

/// One metric of a history row: its last value, and how it compares with
/// the same metric of the previous verified revision.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricChange {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The previous verified revision's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<f64>,
    /// `(value - previous) / previous`, when both are there and previous is
    /// not zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<f64>,
    /// For a compared metric, the judge's class against the revision it
    /// was compared with (`comparedWith`); `change` is then the judge's
    /// shift of the medians, not a difference of last values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
}

/// One row of `kubectl gantry history`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryRow {
    pub revision: String,
    pub image: String,
    pub deployed_at: String,
    pub verdict: String,
    /// The revision in force now.
    pub in_force: bool,
    /// The revision compared against: the next older one that passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared_with: Option<String>,
    pub metrics: Vec<MetricChange>,
}

/// The history of `status`, newest first, each metric against the previous
/// verified revision.
pub fn history(status: &GoServerStatus) -> Vec<HistoryRow> {
    let entries = &status.history;
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let previous = entries[i + 1..]
                .iter()
                .find(|older| older.verdict == Verdict::Passed);
            HistoryRow {
                revision: entry.revision.clone(),
                image: entry.image.clone(),
                deployed_at: entry.deployed_at.0.to_string(),
                verdict: entry.verdict.as_str().to_owned(),
                in_force: status.revision.as_deref() == Some(entry.revision.as_str()),
                // The judge's baseline when it compared; else the next
                // older verified revision.
                compared_with: entry
                    .compared_with
                    .clone()
                    .or_else(|| previous.map(|p| p.revision.clone())),
                metrics: changes(entry, previous),
            }
        })
        .collect()
}

fn changes(entry: &HistoryEntry, previous: Option<&HistoryEntry>) -> Vec<MetricChange> {
    entry
        .metrics
        .iter()
        .map(|m| {
            let before = previous
                .and_then(|p| p.metrics.iter().find(|pm| pm.name == m.name))
                .and_then(|pm| pm.value);
            let change = match (m.relative_change, m.value, before) {
                (Some(judged), _, _) => Some(judged),
                (None, Some(now), Some(then)) if then != 0.0 => Some((now - then) / then),
                _ => None,
            };
            MetricChange {
                name: m.name.clone(),
                value: m.value,
                previous: before,
                change,
                class: m.class.map(|c| c.as_str().to_owned()),
            }
        })
        .collect()
}

/// The history as a table: one column per metric name, in the order met.
pub fn history_table(rows: &[HistoryRow]) -> Table {
    let mut names: Vec<&str> = Vec::new();
    for m in rows.iter().flat_map(|r| &r.metrics) {
        if !names.contains(&m.name.as_str()) {
            names.push(&m.name);
        }
    }
    let mut headers = vec!["REVISION", "IMAGE", "DEPLOYED", "VERDICT"]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    headers.extend(names.iter().map(|n| n.to_uppercase()));
    let mut table = Table::new(headers);
    for row in rows {
        let marker = if row.in_force { "*" } else { "" };
        let mut cells = vec![
            format!("{}{marker}", row.revision),
            row.image.clone(),
            row.deployed_at.clone(),
            row.verdict.clone(),
        ];
        for name in &names {
            let metric = row.metrics.iter().find(|m| m.name == *name);
            cells.push(metric.map_or_else(|| "-".to_owned(), metric_cell));
        }
        table.row(cells);
    }
    table
}

/// `0.012 (+68.0%)`, judged `0.012 (+68.0% High)`, `0.012 (was 0)`, `0.012`, or
/// `no data`.
fn metric_cell(m: &MetricChange) -> String {
    let Some(value) = m.value else {
        return "no data".to_owned();
    };
    match (m.change, m.previous) {
        (Some(change), _) => match &m.class {
            Some(class) => format!("{} ({:+.1}% {class})", number(value), change * 100.0),
            None => format!("{} ({:+.1}%)", number(value), change * 100.0),
        },
        (None, Some(previous)) => format!("{} (was {})", number(value), number(previous)),
        (None, None) => number(value),
    }
}

/// A value with at most four significant decimals, without trailing zeros.
pub fn number(value: f64) -> String {
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// A p-value: four decimals, and below that only how small it is.
fn p_value(p: f64) -> String {
    if p < 0.0001 {
        "<0.0001".to_owned()
    } else {
        number(p)
    }
}

/// The status as `kubectl gantry status` prints it.
pub fn status_text(gs: &GoServer) -> String {
    let status = gs.status.clone().unwrap_or_default();
    let dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    let image = status
        .history
        .iter()
        .find(|h| Some(&h.revision) == status.revision.as_ref())
        .map(|h| h.image.clone());
    let mut summary = Table::plain();
    let field = |name: &str, value: String| vec![format!("{name}:"), value];
    summary.row(field(
        "Name",
        format!(
            "{}/{}",
            gs.metadata.namespace.as_deref().unwrap_or("-"),
            gs.metadata.name.as_deref().unwrap_or("-")
        ),
    ));
    summary.row(field("Revision", dash(status.revision.as_deref())));
    summary.row(field(
        "Image",
        image.unwrap_or_else(|| gs.spec.image.clone()),
    ));
    summary.row(field(
        "Last good revision",
        dash(status.last_good_revision.as_deref()),
    ));
    summary.row(field(
        "Rolled back",
        dash(status.failed_revision.as_deref()),
    ));
    summary.row(field(
        "Replicas",
        format!(
            "{} ready, {} updated, {} desired",
            status.ready_replicas.unwrap_or(0),
            status.updated_replicas.unwrap_or(0),
            status.desired_replicas.unwrap_or(0)
        ),
    ));
    if let Some(url) = &status.url {
        summary.row(field("URL", url.clone()));
    }
    if let Some(c) = &status.canary {
        summary.row(field("Canary", canary_line(gs, c)));
    }
    let mut out = summary.render();

    out.push_str("\nConditions:\n");
    let mut conditions = Table::new(["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]);
    for c in &status.conditions {
        conditions.row([
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.last_transition_time.0.to_string(),
            c.message.clone(),
        ]);
    }
    out.push_str(&conditions.indented(2));

    if let Some(v) = &status.verification {
        let message = if v.message.is_empty() {
            String::new()
        } else {
            format!(": {}", v.message)
        };
        let _ = writeln!(
            out,
            "\nVerification of {}: {} ({}){message}",
            v.revision,
            phase(v.phase),
            v.reason
        );
        if !v.metrics.is_empty() {
            let mut metrics =
                Table::new(["METRIC", "PASSED", "FAILED", "INCONCLUSIVE", "LAST VALUE"]);
            for m in &v.metrics {
                metrics.row([
                    m.name.clone(),
                    m.passed.to_string(),
                    m.failed.to_string(),
                    m.inconclusive.to_string(),
                    m.last_value.map_or_else(|| "no data".to_owned(), number),
                ]);
            }
            out.push_str(&metrics.indented(2));
        }
        if let Some(c) = &v.comparison {
            out.push_str(&comparison(v, c));
        }
    }
    out
}

/// The comparison with the baseline: its outcome and score, then each
/// compared metric's medians, relative change and p.
fn comparison(v: &VerificationStatus, c: &ComparisonStatus) -> String {
    let outcome = c.outcome.as_str();
    let score = c
        .score
        .map_or_else(String::new, |s| format!(", score {}", number(s)));
    let mut out = format!(
        "\nCompared with {}: {outcome}{score}\n",
        c.baseline_revision.as_deref().unwrap_or("no baseline")
    );
    let mut table = Table::new(["METRIC", "CLASS", "REVISION", "BASELINE", "CHANGE", "P"]);
    let mut rows = 0;
    for m in &v.metrics {
        let Some(mc) = &m.comparison else { continue };
        let class = mc.class.as_str();
        let or_dash = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), number);
        let change = match (mc.relative_change, mc.shift) {
            (Some(r), _) => format!("{:+.1}%", r * 100.0),
            (None, Some(s)) => format!("{s:+}"),
            (None, None) => "-".to_owned(),
        };
        table.row([
            m.name.clone(),
            class.to_owned(),
            or_dash(mc.revision_median),
            or_dash(mc.baseline_median),
            change,
            mc.p.map_or_else(|| "-".to_owned(), p_value),
        ]);
        rows += 1;
    }
    if rows > 0 {
        out.push_str(&table.indented(2));
    }
    out
}

/// `shop-0f4e7a6c91: Progressing, step 1 of 2 at 10% (1 passed)`.
fn canary_line(gs: &GoServer, c: &CanaryStatus) -> String {
    let steps = gs.spec.rollout.as_ref().map_or(0, |r| r.steps.len());
    let phase = c.phase.as_str();
    let passed = c
        .verdicts
        .iter()
        .filter(|v| v.verdict == Verdict::Passed)
        .count();
    format!(
        "{}: {phase}, step {} of {steps} at {}% ({passed} passed)",
        c.revision,
        c.step.saturating_add(1),
        c.weight
    )
}

#[cfg(test)]
mod tests {
    use gantry_operator::crd::{MetricValue, VerificationPhase};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use pretty_assertions::assert_eq;

    use super::*;

    fn entry(revision: &str, verdict: Verdict, value: Option<f64>) -> HistoryEntry {
        HistoryEntry {
            revision: revision.to_owned(),
            image: format!("hello:{revision}"),
            deployed_at: Time(Timestamp::from_second(1_700_000_000).unwrap()),
            verdict,
            metrics: vec![MetricValue {
                name: "error-rate".to_owned(),
                value,
                relative_change: None,
                class: None,
            }],
            compared_with: None,
        }
    }

    fn status(current: &str, good: Option<&str>, history: Vec<HistoryEntry>) -> GoServerStatus {
        GoServerStatus {
            revision: Some(current.to_owned()),
            last_good_revision: good.map(str::to_owned),
            history,
            ..GoServerStatus::default()
        }
    }

    #[test]
    fn each_revision_is_compared_with_the_previous_verified_one() {
        let s = status(
            "v4",
            Some("v2"),
            vec![
                entry("v4", Verdict::Unverified, Some(0.0168)),
                entry("v3", Verdict::RolledBack, Some(0.5)),
                entry("v2", Verdict::Passed, Some(0.01)),
                entry("v1", Verdict::Passed, Some(0.0)),
            ],
        );
        let rows = history(&s);
        let change = |i: usize| rows[i].metrics[0].change;
        // v4 and v3 against v2 (v3 was rolled back, so it is skipped).
        assert_eq!(rows[0].compared_with.as_deref(), Some("v2"));
        assert!((change(0).unwrap() - 0.68).abs() < 1e-9);
        assert_eq!(rows[1].compared_with.as_deref(), Some("v2"));
        // v2 against v1, whose value is 0: no ratio, the old value shown.
        assert_eq!(change(2), None);
        assert_eq!(rows[2].metrics[0].previous, Some(0.0));
        assert_eq!(rows[3].compared_with, None);
        assert!(rows[0].in_force);

        let table = history_table(&rows).render();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["REVISION", "IMAGE", "DEPLOYED", "VERDICT", "ERROR-RATE"]
        );
        assert!(lines[1].starts_with("v4* "), "{table}");
        assert!(lines[1].ends_with("0.0168 (+68.0%)"), "{table}");
        assert!(lines[3].ends_with("0.01 (was 0)"), "{table}");
        assert!(lines[4].ends_with("   0"), "{table}");
    }

    #[test]
    fn a_judged_revision_shows_the_judges_figures() {
        let mut judged = entry("v3", Verdict::RolledBack, Some(0.5));
        judged.compared_with = Some("v1".to_owned());
        judged.metrics[0].relative_change = Some(0.312);
        judged.metrics[0].class = Some(gantry_operator::crd::ComparisonClass::High);
        let s = status(
            "v2",
            Some("v2"),
            vec![
                judged,
                entry("v2", Verdict::Passed, Some(0.01)),
                entry("v1", Verdict::Passed, Some(0.02)),
            ],
        );
        let rows = history(&s);
        // The baseline the judge used, not the next older verified one.
        assert_eq!(rows[0].compared_with.as_deref(), Some("v1"));
        assert_eq!(rows[0].metrics[0].class.as_deref(), Some("High"));
        let table = history_table(&rows).render();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].ends_with("0.5 (+31.2% High)"), "{table}");
    }

    #[test]
    fn rollback_goes_to_the_last_good_revision_or_the_newest_older_good_one() {
        let rolled = status(
            "v3",
            Some("v2"),
            vec![
                entry("v3", Verdict::Unverified, None),
                entry("v2", Verdict::Passed, None),
            ],
        );
        assert_eq!(rollback_target(&rolled).unwrap(), "v2");
        // The last good is in force: the next older one that did not fail.
        let on_good = status(
            "v3",
            Some("v3"),
            vec![
                entry("v3", Verdict::Passed, None),
                entry("v2", Verdict::RolledBack, None),
                entry("v1", Verdict::Passed, None),
            ],
        );
        assert_eq!(rollback_target(&on_good).unwrap(), "v1");
        let first = status("v1", Some("v1"), vec![entry("v1", Verdict::Passed, None)]);
        assert!(rollback_target(&first).is_err());
    }

    #[test]
    fn promote_and_retry_name_the_revision_they_act_on() {
        let mut s = status("v2", Some("v1"), Vec::new());
        assert!(promote_target(&s).is_err());
        s.verification = Some(VerificationStatus {
            revision: "v2".to_owned(),
            phase: VerificationPhase::Measuring,
            ..Default::default()
        });
        assert_eq!(promote_target(&s).unwrap(), "v2");
        assert!(retry_target(&s).is_err());
        s.failed_revision = Some("v2".to_owned());
        assert_eq!(retry_target(&s).unwrap(), "v2");
    }

    #[test]
    fn status_shows_the_canary() {
        let mut gs: GoServer = serde_json::from_value(serde_json::json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
            "metadata": {"name": "shop", "namespace": "web"},
            "spec": {"image": "shop:2", "rollout": {"strategy": "Canary", "steps": [
                {"weight": 10, "pause": "2m"}, {"weight": 50, "pause": "5m"},
            ]}},
        }))
        .unwrap();
        let mut s = status("v1", Some("v1"), Vec::new());
        s.canary = serde_json::from_value(serde_json::json!({
            "revision": "v2", "phase": "Progressing", "step": 1, "weight": 50,
            "verdicts": [{"step": 0, "weight": 10, "verdict": "Passed", "decidedAt": "2026-12-03T10:00:00Z"}],
        }))
        .unwrap();
        gs.status = Some(s);
        let text = status_text(&gs);
        let line = text.lines().find(|l| l.starts_with("Canary:")).unwrap();
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>().join(" "),
            "Canary: v2: Progressing, step 2 of 2 at 50% (1 passed)"
        );
    }

    #[test]
    fn status_shows_each_compared_metric_against_the_baseline() {
        let mut gs: GoServer = serde_json::from_value(serde_json::json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
            "metadata": {"name": "shop", "namespace": "web"},
            "spec": {"image": "shop:3"},
        }))
        .unwrap();
        let mut s = status("v1", Some("v1"), Vec::new());
        s.verification = serde_json::from_value(serde_json::json!({
            "revision": "v3", "phase": "Failed", "reason": "Failed", "message": "m",
            "metrics": [
                {"name": "latency", "passed": 10, "failed": 0, "inconclusive": 0,
                 "comparison": {"class": "High", "revisionMedian": 0.026, "baselineMedian": 0.02,
                                "relativeChange": 0.312, "p": 0.000_01}},
                {"name": "errors", "passed": 10, "failed": 0, "inconclusive": 0},
            ],
            "comparison": {"baselineRevision": "v2", "outcome": "Fail", "score": 0.0,
                           "message": "m", "comparedAt": "2026-12-03T10:00:00Z"},
        }))
        .unwrap();
        gs.status = Some(s);
        let text = status_text(&gs);
        let words = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
        let lines: Vec<String> = text.lines().map(words).collect();
        let at = lines
            .iter()
            .position(|l| l == "Compared with v2: Fail, score 0")
            .unwrap_or_else(|| panic!("{text}"));
        assert_eq!(lines[at + 1], "METRIC CLASS REVISION BASELINE CHANGE P");
        assert_eq!(lines[at + 2], "latency High 0.026 0.02 +31.2% <0.0001");
        // A metric compared with nothing gets no row.
        assert_eq!(lines.len(), at + 3, "{text}");
    }

    #[test]
    fn numbers_keep_four_decimals_at_most() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(0.012_345), "0.0123");
        assert_eq!(number(12.5), "12.5");
        assert_eq!(number(-0.000_01), "0");
    }
}
