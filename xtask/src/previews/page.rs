//! One dashboard as a static HTML page, from what `dashboard_preview_data`
//! wrote: the dashboard JSON, the variables it was filled with, the time
//! range, and the answer Prometheus gave to each of its queries.
//!
//! Panels sit where their `gridPos` puts them on Grafana's grid (24
//! columns, rows of 30 px with 8 px between). A `timeseries` panel is an
//! SVG line chart with the dashboard's annotations and a legend named by
//! each target's `legendFormat`; a `stat` panel is the last value of each
//! series in large type over a sparkline; a `table` panel is an HTML table
//! built as Grafana builds it from instant queries in table format (one
//! frame per query, then the panel's `merge` and `organize`
//! transformations, then units by column name). Anything else is drawn as
//! a box saying that the preview does not render its type.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::chart::{Chart, Marker, PALETTE, Points, Series};
use super::format::{self, escape};

/// The page's width; Grafana's grid scales to it.
pub const WIDTH: u32 = 1600;
/// The label every preview carries.
pub const LABEL: &str =
    "Preview rendered from the dashboard JSON with data from a test Prometheus, not Grafana";

const PADDING: f64 = 16.0;
const HEADER: f64 = 112.0;
const ROW: f64 = 30.0;
const GAP: f64 = 8.0;
const TITLE: f64 = 30.0;
/// Legend rows: height, and pixels per character of their 12 px text.
const LEGEND_ROW: f64 = 18.0;
const LEGEND_CHAR_WIDTH: f64 = 7.0;

/// A rendered page and the window size that shows all of it.
pub struct Page {
    pub html: String,
    pub width: u32,
    pub height: u32,
}

/// The page of one data file.
pub fn render(data: &Value) -> Result<Page> {
    let dashboard = &data["dashboard"];
    let title = dashboard["title"]
        .as_str()
        .context("the dashboard has no title")?;
    let start = data["start"].as_f64().context("no start time")?;
    let end = data["end"].as_f64().context("no end time")?;
    let queries = data["queries"].as_array().context("no queries")?;
    let panels = dashboard["panels"].as_array().context("no panels")?;
    let markers = markers(dashboard, queries)?;

    let rows = panels
        .iter()
        .map(|p| grid(p).map(|g| g.y + g.h))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    let height = HEADER + f64::from(rows) * (ROW + GAP) + PADDING;
    let column = (f64::from(WIDTH) - 2.0 * PADDING + GAP) / 24.0;

    let mut body = header(dashboard, data, title, start, end);
    for panel in panels {
        let place = grid(panel)?;
        let boxed = Box {
            left: PADDING + f64::from(place.x) * column,
            top: HEADER + f64::from(place.y) * (ROW + GAP),
            width: f64::from(place.w) * column - GAP,
            height: f64::from(place.h) * (ROW + GAP) - GAP,
        };
        let id = panel["id"].as_i64().context("a panel without an id")?;
        let answers: Vec<&Value> = queries
            .iter()
            .filter(|q| q["panel"].as_i64() == Some(id))
            .collect();
        let name = panel["title"].as_str().unwrap_or_default();
        let content = match panel["type"].as_str().unwrap_or_default() {
            "timeseries" => time_series(panel, &answers, &boxed, start, end, &markers)
                .with_context(|| format!("{title}: {name}"))?,
            "stat" => stat(panel, &answers, &boxed, start, end),
            "table" => table(panel, &answers).with_context(|| format!("{title}: {name}"))?,
            other => format!(
                r#"<div class="empty">panel type {} is not rendered in previews</div>"#,
                escape(other)
            ),
        };
        let _ = write!(
            body,
            r#"<section class="panel" style="left:{:.1}px;top:{:.1}px;width:{:.1}px;height:{:.1}px"><h2>{}</h2><div class="content">{content}</div></section>"#,
            boxed.left,
            boxed.top,
            boxed.width,
            boxed.height,
            escape(name)
        );
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let height = height.ceil() as u32;
    Ok(Page {
        html: format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{} (preview)</title><style>{STYLE}</style></head><body style=\"height:{height}px\">{body}</body></html>\n",
            escape(title)
        ),
        width: WIDTH,
        height,
    })
}

const STYLE: &str = "
* { box-sizing: border-box; }
body { margin: 0; width: 1600px; position: relative; overflow: hidden;
  background: #111217; color: #ccccdc; font: 13px/1.4 'DejaVu Sans', 'Liberation Sans', sans-serif; }
header { position: absolute; left: 16px; right: 16px; top: 12px; }
header h1 { margin: 0; font-size: 22px; font-weight: 500; color: #e6e6f0; }
.label { position: absolute; right: 0; top: 0; padding: 6px 12px; border: 2px solid #F2CC0C;
  border-radius: 4px; color: #F2CC0C; font-weight: 600; background: rgba(242,204,12,0.08); }
.bar { margin-top: 16px; display: flex; gap: 10px; align-items: center; }
.variable { border: 1px solid #2c3235; border-radius: 2px; display: inline-flex; }
.variable span { padding: 4px 8px; }
.variable .name { background: #22252b; color: #9fa7b3; border-right: 1px solid #2c3235; }
.range { margin-left: auto; color: #9fa7b3; }
.panel { position: absolute; background: #181b1f; border: 1px solid #2c3235; border-radius: 2px;
  display: flex; flex-direction: column; overflow: hidden; }
.panel h2 { margin: 0; height: 30px; line-height: 30px; padding: 0 8px; font-size: 13px;
  font-weight: 500; color: #e6e6f0; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.content { flex: 1; padding: 0 8px 8px; overflow: hidden; position: relative; }
.legend { display: flex; flex-wrap: wrap; column-gap: 14px; font-size: 12px; line-height: 18px; }
.legend i { display: inline-block; width: 14px; height: 4px; border-radius: 2px; margin-right: 6px;
  vertical-align: middle; }
.empty { color: #8e8e8e; display: flex; height: 100%; align-items: center; justify-content: center; }
.stat { display: flex; height: 100%; }
.stat div { flex: 1; position: relative; display: flex; flex-direction: column; justify-content: center;
  align-items: center; }
.stat b { font-size: 56px; font-weight: 500; position: relative; }
.stat small { color: #9fa7b3; position: relative; }
.stat svg { position: absolute; left: 0; bottom: 0; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; }
caption { text-align: left; color: #9fa7b3; padding: 4px 0; }
th { text-align: left; color: #6e9fff; font-weight: 500; border-bottom: 1px solid #2c3235; padding: 5px 8px;
  white-space: nowrap; }
td { border-bottom: 1px solid #22252b; padding: 5px 8px; white-space: nowrap; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
th.number { text-align: right; }
";

/// The title, the variables as Grafana shows them above the panels, the
/// time range and the preview label.
fn header(dashboard: &Value, data: &Value, title: &str, start: f64, end: f64) -> String {
    let mut bar = String::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(name) = variable["name"].as_str() else {
            continue;
        };
        let label = variable["label"].as_str().unwrap_or(name);
        let value = data["variables"][name].as_str().unwrap_or("");
        let _ = write!(
            bar,
            r#"<div class="variable"><span class="name">{}</span><span>{}</span></div>"#,
            escape(label),
            escape(value)
        );
    }
    let minutes = ((end - start) / 60.0).round();
    format!(
        r#"<header><h1>{}</h1><div class="label">{LABEL}</div><div class="bar">{bar}<div class="range">{} to {} UTC ({minutes} minutes)</div></div></header>"#,
        escape(title),
        format::date_time(start),
        format::clock(end),
    )
}

/// A panel's place on the grid, in grid units.
struct Grid {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

fn grid(panel: &Value) -> Result<Grid> {
    let get = |key: &str| -> Result<u32> {
        panel["gridPos"][key]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .with_context(|| format!("panel {}: gridPos.{key}", panel["title"]))
    };
    Ok(Grid {
        x: get("x")?,
        y: get("y")?,
        w: get("w")?,
        h: get("h")?,
    })
}

/// A panel's box on the page, in pixels.
struct Box {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

impl Box {
    /// The room inside, under the title and the padding.
    fn inner(&self) -> (f64, f64) {
        (self.width - 18.0, self.height - TITLE - 10.0)
    }
}

/// The panel's unit for every field (`fieldConfig.defaults.unit`).
fn unit(panel: &Value) -> &str {
    panel["fieldConfig"]["defaults"]["unit"]
        .as_str()
        .unwrap_or("")
}

/// The target of `panel` that an answer belongs to, by `refId`.
fn target<'a>(panel: &'a Value, answer: &Value) -> Option<&'a Value> {
    panel["targets"]
        .as_array()?
        .iter()
        .find(|t| t["refId"] == answer["refId"])
}

fn time_series(
    panel: &Value,
    answers: &[&Value],
    place: &Box,
    start: f64,
    end: f64,
    markers: &[Marker],
) -> Result<String> {
    let mut series = Vec::new();
    for answer in answers {
        let legend = target(panel, answer).and_then(|t| t["legendFormat"].as_str());
        for (labels, points) in matrix(&answer["data"])? {
            series.push(Series {
                name: legend_name(legend, &labels),
                points,
            });
        }
    }
    if series.is_empty() {
        return Ok(r#"<div class="empty">No data</div>"#.to_owned());
    }
    let (width, height) = place.inner();
    let mut legend = String::new();
    let mut rows = 1.0;
    let mut used = 0.0;
    for (index, s) in series.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let item = 34.0 + s.name.chars().count() as f64 * LEGEND_CHAR_WIDTH;
        if used > 0.0 && used + item > width {
            rows += 1.0;
            used = 0.0;
        }
        used += item;
        let _ = write!(
            legend,
            r#"<span><i style="background:{}"></i>{}</span>"#,
            PALETTE[index % PALETTE.len()],
            escape(&s.name)
        );
    }
    let step = answers
        .iter()
        .filter_map(|a| a["step"].as_f64())
        .fold(1.0, f64::max);
    let chart = Chart {
        width,
        height: height - rows * LEGEND_ROW - 4.0,
        start,
        end,
        step,
        unit: unit(panel),
        series: &series,
        markers,
        axes: true,
        color: None,
    };
    Ok(format!(
        r#"{}<div class="legend">{legend}</div>"#,
        chart.svg()
    ))
}

/// Each series' last value in large type, over its sparkline, as a stat
/// panel shows it by default (`lastNotNull`, `graphMode: area`).
fn stat(panel: &Value, answers: &[&Value], place: &Box, start: f64, end: f64) -> String {
    let mut cells = String::new();
    let (width, height) = place.inner();
    let series: Vec<Series> = answers
        .iter()
        .flat_map(|answer| {
            let legend = target(panel, answer).and_then(|t| t["legendFormat"].as_str());
            matrix(&answer["data"])
                .unwrap_or_default()
                .into_iter()
                .map(move |(labels, points)| Series {
                    name: legend_name(legend, &labels),
                    points,
                })
        })
        .collect();
    if series.is_empty() {
        return r#"<div class="empty">No data</div>"#.to_owned();
    }
    #[allow(clippy::cast_precision_loss)]
    let cell_width = width / series.len() as f64;
    for series in series {
        let last = series.points.iter().rev().find_map(|(_, v)| *v);
        let text = last.map_or_else(|| "No data".to_owned(), |v| format::value(unit(panel), v));
        let color = last.map_or("#8e8e8e", |v| threshold_color(panel, v));
        let spark = Chart {
            width: cell_width,
            height: height * 0.45,
            start,
            end,
            step: f64::INFINITY,
            unit: "",
            series: std::slice::from_ref(&series),
            markers: &[],
            axes: false,
            color: Some(color),
        };
        let _ = write!(
            cells,
            r#"<div><span style="opacity:0.35">{}</span><b style="color:{color}">{}</b><small>{}</small></div>"#,
            spark.svg(),
            escape(&text),
            escape(&series.name)
        );
    }
    format!(r#"<div class="stat">{cells}</div>"#)
}

/// The colour of the highest threshold step `value` reaches; Grafana's
/// default steps (green, red from 80) when the panel sets none.
fn threshold_color(panel: &Value, value: f64) -> &str {
    let steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"].as_array();
    let Some(steps) = steps else {
        return if value >= 80.0 { "#F2495C" } else { "#73BF69" };
    };
    steps
        .iter()
        .filter(|s| s["value"].as_f64().is_none_or(|from| value >= from))
        .filter_map(|s| s["color"].as_str())
        .next_back()
        .map_or("#73BF69", named_color)
}

/// One table frame: columns by name and rows of cells.
struct Frame {
    columns: Vec<String>,
    rows: Vec<BTreeMap<String, Cell>>,
}

#[derive(Clone)]
enum Cell {
    Text(String),
    Number(f64),
    Time(f64),
}

/// Frames as Grafana makes them from instant queries in table format:
/// one per query, a row per series with a column per label, `Time`, and
/// `Value` (`Value #<refId>` when the panel has several queries); then the
/// panel's transformations.
fn table(panel: &Value, answers: &[&Value]) -> Result<String> {
    let several = answers.len() > 1;
    let mut frames = Vec::new();
    for answer in answers {
        let value_column = match answer["refId"].as_str() {
            Some(ref_id) if several => format!("Value #{ref_id}"),
            _ => "Value".to_owned(),
        };
        let mut rows: Vec<BTreeMap<String, Cell>> = Vec::new();
        let mut labels: Vec<String> = Vec::new();
        for (metric, (time, value)) in vector(&answer["data"])? {
            for name in metric.keys() {
                if !labels.contains(name) {
                    labels.push(name.clone());
                }
            }
            let mut row: BTreeMap<String, Cell> = metric
                .into_iter()
                .map(|(k, v)| (k, Cell::Text(v)))
                .collect();
            row.insert("Time".to_owned(), Cell::Time(time));
            row.insert(value_column.clone(), Cell::Number(value));
            rows.push(row);
        }
        labels.sort();
        let mut columns = vec!["Time".to_owned()];
        columns.extend(labels);
        columns.push(value_column);
        frames.push(Frame { columns, rows });
    }
    for transformation in panel["transformations"].as_array().into_iter().flatten() {
        let options = &transformation["options"];
        match transformation["id"].as_str().unwrap_or_default() {
            "merge" => frames = vec![merge(frames)],
            "organize" => frames.iter_mut().for_each(|f| organize(f, options)),
            other => bail!("transformation {other} is not rendered in previews"),
        }
    }
    let frames: Vec<Frame> = frames.into_iter().filter(|f| !f.rows.is_empty()).collect();
    if frames.is_empty() {
        return Ok(r#"<div class="empty">No data</div>"#.to_owned());
    }
    let mut html = String::new();
    for (index, frame) in frames.iter().enumerate() {
        html.push_str("<table>");
        if frames.len() > 1 {
            // Grafana shows one frame at a time, with a picker; the preview
            // stacks them.
            let _ = write!(
                html,
                "<caption>frame {} of {}</caption>",
                index + 1,
                frames.len()
            );
        }
        let numeric: Vec<bool> = frame
            .columns
            .iter()
            .map(|c| {
                frame
                    .rows
                    .iter()
                    .any(|r| matches!(r.get(c), Some(Cell::Number(_))))
            })
            .collect();
        html.push_str("<tr>");
        for (column, number) in frame.columns.iter().zip(&numeric) {
            let class = if *number { r#" class="number""# } else { "" };
            let _ = write!(html, "<th{class}>{}</th>", escape(column));
        }
        html.push_str("</tr>");
        for row in &frame.rows {
            html.push_str("<tr>");
            for column in &frame.columns {
                let unit = column_unit(panel, column);
                let cell = match row.get(column) {
                    Some(Cell::Text(text)) => format!("<td>{}</td>", escape(text)),
                    Some(Cell::Number(value)) => format!(
                        r#"<td class="number">{}</td>"#,
                        escape(&format::value(unit, *value))
                    ),
                    Some(Cell::Time(time)) => format!("<td>{}</td>", format::date_time(*time)),
                    None => "<td></td>".to_owned(),
                };
                html.push_str(&cell);
            }
            html.push_str("</tr>");
        }
        html.push_str("</table>");
    }
    Ok(html)
}

/// Grafana's `merge`: one frame; rows of different frames that agree on
/// every column they share become one row.
fn merge(frames: Vec<Frame>) -> Frame {
    let mut columns: Vec<String> = Vec::new();
    let mut rows: Vec<BTreeMap<String, Cell>> = Vec::new();
    let key = |row: &BTreeMap<String, Cell>| -> Vec<(String, String)> {
        row.iter()
            .filter_map(|(name, cell)| match cell {
                Cell::Text(text) => Some((name.clone(), text.clone())),
                Cell::Time(time) => Some((name.clone(), time.to_string())),
                Cell::Number(_) => None,
            })
            .collect()
    };
    for frame in frames {
        for column in frame.columns {
            if !columns.contains(&column) {
                columns.push(column);
            }
        }
        for row in frame.rows {
            let wanted = key(&row);
            match rows.iter_mut().find(|r| key(r) == wanted) {
                Some(existing) => existing.extend(row),
                None => rows.push(row),
            }
        }
    }
    // Label columns before values, as Grafana orders a merged frame.
    let (mut fields, values): (Vec<String>, Vec<String>) =
        columns.into_iter().partition(|c| !c.starts_with("Value"));
    fields.extend(values);
    Frame {
        columns: fields,
        rows,
    }
}

/// Grafana's `organize`: columns left out, renamed and reordered.
fn organize(frame: &mut Frame, options: &Value) {
    frame
        .columns
        .retain(|c| options["excludeByName"][c.as_str()] != true);
    if let Some(order) = options["indexByName"].as_object() {
        frame
            .columns
            .sort_by_key(|c| order.get(c).and_then(Value::as_u64).unwrap_or(u64::MAX));
    }
    let Some(renames) = options["renameByName"].as_object() else {
        return;
    };
    for (from, to) in renames {
        let Some(to) = to.as_str().filter(|t| !t.is_empty()) else {
            continue;
        };
        for column in &mut frame.columns {
            if column == from {
                to.clone_into(column);
            }
        }
        for row in &mut frame.rows {
            if let Some(cell) = row.remove(from) {
                row.insert(to.to_owned(), cell);
            }
        }
    }
}

/// The unit of a table column: an override matching its name, else the
/// panel's.
fn column_unit<'a>(panel: &'a Value, column: &str) -> &'a str {
    panel["fieldConfig"]["overrides"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["matcher"]["id"] == "byName" && o["matcher"]["options"] == column)
        .flat_map(|o| o["properties"].as_array().into_iter().flatten())
        .filter(|p| p["id"] == "unit")
        .find_map(|p| p["value"].as_str())
        .unwrap_or_else(|| unit(panel))
}

/// The dashboard's annotations with a query: a marker where each of their
/// series begins, and again after each gap in it (Grafana's regions).
fn markers(dashboard: &Value, queries: &[Value]) -> Result<Vec<Marker>> {
    let mut markers = Vec::new();
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(name) = annotation["name"].as_str() else {
            continue;
        };
        let Some(answer) = queries
            .iter()
            .find(|q| q["panel"].is_null() && q["name"] == name)
        else {
            continue;
        };
        let step = answer["step"].as_f64().unwrap_or(60.0);
        let color = named_color(annotation["iconColor"].as_str().unwrap_or("blue"));
        let title = annotation["titleFormat"].as_str();
        for (labels, points) in matrix(&answer["data"])? {
            let mut last: Option<f64> = None;
            for (time, value) in points {
                if value.is_none_or(|v| v == 0.0) {
                    continue;
                }
                if last.is_none_or(|l| time - l > step * 1.5) {
                    markers.push(Marker {
                        time,
                        title: legend_name(title, &labels),
                        color: color.to_owned(),
                    });
                }
                last = Some(time);
            }
        }
    }
    Ok(markers)
}

/// Grafana's named colours as its dark theme draws them; anything else is
/// taken as CSS.
fn named_color(name: &str) -> &str {
    match name {
        "green" => "#73BF69",
        "red" => "#F2495C",
        "blue" => "#5794F2",
        "yellow" => "#FADE2A",
        "orange" => "#FF9830",
        "purple" => "#B877D9",
        other => other,
    }
}

/// A legend format with `{{label}}` filled in; without one (or when it
/// comes out empty), the labels as `PromQL` writes them.
fn legend_name(format: Option<&str>, labels: &BTreeMap<String, String>) -> String {
    if let Some(format) = format.filter(|f| !f.is_empty()) {
        let mut name = format.to_owned();
        while let Some(open) = name.find("{{") {
            let Some(close) = name[open..].find("}}") else {
                break;
            };
            let label = name[open + 2..open + close].trim();
            let value = labels.get(label).cloned().unwrap_or_default();
            name.replace_range(open..open + close + 2, &value);
        }
        let name = name.trim().to_owned();
        if !name.is_empty() {
            return name;
        }
    }
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}}", pairs.join(", "))
}

type Labels = BTreeMap<String, String>;

/// The series of a matrix answer.
fn matrix(data: &Value) -> Result<Vec<(Labels, Points)>> {
    if data["resultType"] != "matrix" {
        bail!(
            "a range query answered {}, not a matrix",
            data["resultType"]
        );
    }
    let mut series = Vec::new();
    for result in data["result"].as_array().into_iter().flatten() {
        let points = result["values"]
            .as_array()
            .into_iter()
            .flatten()
            .map(sample)
            .collect::<Result<Vec<_>>>()?;
        series.push((labels(&result["metric"]), points));
    }
    Ok(series)
}

/// The samples of a vector answer, NaN and ±Inf kept (a table shows them).
fn vector(data: &Value) -> Result<Vec<(Labels, (f64, f64))>> {
    if data["resultType"] != "vector" {
        bail!(
            "an instant query answered {}, not a vector",
            data["resultType"]
        );
    }
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|result| {
            let (time, value) = sample(&result["value"])?;
            Ok((labels(&result["metric"]), (time, value.unwrap_or(f64::NAN))))
        })
        .collect()
}

fn labels(metric: &Value) -> Labels {
    metric
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// `[time, "value"]`; a value that is not a finite number is `None`.
fn sample(pair: &Value) -> Result<(f64, Option<f64>)> {
    let time = pair[0].as_f64().context("a sample without a time")?;
    let value: f64 = pair[1]
        .as_str()
        .context("a sample without a value")?
        .parse()
        .context("a sample value that is no number")?;
    Ok((time, value.is_finite().then_some(value)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn answer(panel: i64, ref_id: &str, data: &Value) -> Value {
        json!({"panel": panel, "refId": ref_id, "data": data})
    }

    #[test]
    fn legends_fill_labels_or_fall_back_to_them() {
        let labels: Labels = [("revision".to_owned(), "web-1".to_owned())].into();
        assert_eq!(legend_name(Some("{{revision}}"), &labels), "web-1");
        assert_eq!(
            legend_name(Some("deployed {{ revision }}"), &labels),
            "deployed web-1"
        );
        assert_eq!(
            legend_name(Some("{{category}}"), &labels),
            "{revision=\"web-1\"}"
        );
        assert_eq!(legend_name(None, &Labels::new()), "{}");
    }

    #[test]
    fn tables_merge_and_organize_like_grafana() {
        let panel = json!({
            "fieldConfig": {"defaults": {}, "overrides": [
                {"matcher": {"id": "byName", "options": "ratio"}, "properties": [{"id": "unit", "value": "percentunit"}]},
            ]},
            "transformations": [
                {"id": "merge", "options": {}},
                {"id": "organize", "options": {
                    "excludeByName": {"Time": true},
                    "renameByName": {"Value #A": "requests", "Value #B": "ratio"},
                }},
            ],
        });
        let vector = |values: &[(&str, &str)]| {
            json!({"resultType": "vector", "result": values.iter().map(|(revision, v)| {
                json!({"metric": {"revision": revision}, "value": [100.0, v]})
            }).collect::<Vec<_>>()})
        };
        let a = answer(5, "A", &vector(&[("web-1", "300"), ("web-2", "120")]));
        let b = answer(5, "B", &vector(&[("web-2", "0"), ("web-1", "0.3333")]));
        let html = table(&panel, &[&a, &b]).expect("a table");
        assert_eq!(
            html,
            concat!(
                r#"<table><tr><th>revision</th><th class="number">requests</th><th class="number">ratio</th></tr>"#,
                r#"<tr><td>web-1</td><td class="number">300</td><td class="number">33.3%</td></tr>"#,
                r#"<tr><td>web-2</td><td class="number">120</td><td class="number">0%</td></tr></table>"#
            )
        );
    }

    #[test]
    fn annotations_mark_where_their_series_begin() {
        let dashboard = json!({"annotations": {"list": [
            {"name": "Annotations & Alerts", "builtIn": 1},
            {"name": "Deploys", "iconColor": "blue", "titleFormat": "deployed {{revision}}"},
        ]}});
        let queries = [
            json!({"panel": null, "name": "Deploys", "step": 60.0, "data": {
                "resultType": "matrix",
                "result": [
                    {"metric": {"revision": "web-1"}, "values": [[60.0, "1"], [120.0, "1"]]},
                    {"metric": {"revision": "web-2"}, "values": [[300.0, "1"], [600.0, "1"]]},
                ],
            }}),
        ];
        let found: Vec<(f64, String, String)> = markers(&dashboard, &queries)
            .expect("markers")
            .into_iter()
            .map(|m| (m.time, m.title, m.color))
            .collect();
        assert_eq!(
            found,
            [
                (60.0, "deployed web-1".to_owned(), "#5794F2".to_owned()),
                (300.0, "deployed web-2".to_owned(), "#5794F2".to_owned()),
                (600.0, "deployed web-2".to_owned(), "#5794F2".to_owned()),
            ]
        );
    }

    #[test]
    fn a_page_has_the_label_and_every_panel_in_its_place() {
        let data = json!({
            "dashboard": {
                "title": "Ops <1>",
                "templating": {"list": [{"name": "datasource", "label": "Prometheus"}]},
                "annotations": {"list": []},
                "panels": [
                    {"id": 1, "type": "stat", "title": "Leader", "gridPos": {"x": 0, "y": 0, "w": 6, "h": 6},
                     "targets": [{"refId": "A", "legendFormat": "leading"}]},
                    {"id": 2, "type": "timeseries", "title": "Rate", "gridPos": {"x": 6, "y": 0, "w": 18, "h": 8},
                     "fieldConfig": {"defaults": {"unit": "ops"}},
                     "targets": [{"refId": "A", "legendFormat": "{{result}}"}]},
                ],
            },
            "variables": {"datasource": "test Prometheus"},
            "start": 0.0,
            "end": 300.0,
            "queries": [
                answer(1, "A", &json!({"resultType": "matrix", "result": [
                    {"metric": {}, "values": [[0.0, "1"], [300.0, "1"]]},
                ]})),
                answer(2, "A", &json!({"resultType": "matrix", "result": [
                    {"metric": {"result": "ok"}, "values": [[0.0, "0.5"], [150.0, "NaN"], [300.0, "2"]]},
                ]})),
            ],
        });
        let page = render(&data).expect("a page");
        assert_eq!((page.width, page.height), (WIDTH, 128 + 8 * 38));
        assert!(page.html.contains(LABEL));
        assert!(page.html.contains("<h1>Ops &lt;1&gt;</h1>"));
        assert!(page.html.contains("test Prometheus"));
        assert!(
            page.html
                .contains("1970-01-01 00:00:00 to 00:05:00 UTC (5 minutes)")
        );
        assert!(page.html.contains(">leading</small>"));
        assert!(page.html.contains("ok</span>"));
        assert!(page.html.contains("2 ops/s"));
        assert!(page.html.contains("left:16.0px;top:112.0px"));
    }
}
