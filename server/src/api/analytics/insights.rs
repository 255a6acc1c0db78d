//! The `/insights` page: charts across incidents, rendered on the server as one HTML page with hand-built SVG (no
//! JavaScript, no chart library), so it prints, archives and works wherever the server does.
//!
//! Incident durations are heavy-tailed: a mean swings with one long outage and hides the shape. So the page shows
//! distributions and counts, never a lone mean: the empirical distribution of time to mitigate with its
//! percentiles, incidents per week stacked by severity, and how many handoffs incidents had. Every chart names its
//! timestamp pair and its N, and warns when N is too small for its percentiles to mean much.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, Datelike, Duration, Utc};
use incident_doc::analytics::Facts;
use incident_doc::export::{escape_html as escape, format_duration};

/// Below this many incidents a chart warns that its shape and percentiles are mostly chance.
pub const SMALL_N: usize = 20;

/// At most this many weeks are drawn (the latest); more would make bars thinner than a pixel.
const MAX_WEEKS: usize = 156;

/// Chart size in SVG user units; the page scales it to the window.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 300.0;
/// Plot area margins: left for the y labels, bottom for the x labels.
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 48.0;

/// Colours for severities in sorted order (SEV1 first), then grey for anything beyond.
const PALETTE: [&str; 5] = ["#b2182b", "#ef8a62", "#f4c542", "#67a9cf", "#2166ac"];
const OTHER: &str = "#999999";

/// The whole page for `rows` (already filtered); `scope` says in words which incidents they are.
pub fn page(rows: &[Facts], scope: &str) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason throughout this module.
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Incident insights</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <h1>Incident insights</h1>\n<p class=\"scope\">{} · {} incident{}</p>\n",
        escape(scope),
        rows.len(),
        plural(rows.len())
    );
    time_to_mitigate(&mut out, rows);
    per_week(&mut out, rows);
    handoffs(&mut out, rows);
    out.push_str(
        "<p class=\"note\">Raw rows for your own tools: <code>GET /api/analytics/incidents?format=csv</code> or \
         <code>format=jsonl</code>, with the same filters; every column is documented in docs/analytics.md.</p>\n\
         </main>\n</body>\n</html>\n",
    );
    out
}

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:0;padding:1rem;color:#111}\
main{max-width:50rem;margin:auto}h1{font-size:1.6rem}h2{font-size:1.2rem;margin-bottom:0}\
figure{margin:1.5rem 0}svg{width:100%;height:auto;font:11px system-ui,sans-serif}\
.pair,.scope,.note{color:#555}.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:.3rem .6rem}\
.stats{font-variant-numeric:tabular-nums}";

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A chart's heading, its timestamp pair, N, and the small-sample warning when it applies.
fn header(out: &mut String, title: &str, pair: &str, n: usize, excluded: &str) {
    let _ = write!(
        out,
        "<figure>\n<h2>{}</h2>\n<p class=\"pair\">{} · N = {n}{}</p>\n",
        escape(title),
        escape(pair),
        escape(excluded)
    );
    if n == 0 {
        out.push_str("<p class=\"warn\">No incident to show: N = 0.</p>\n");
    } else if n < SMALL_N {
        let _ = writeln!(
            out,
            "<p class=\"warn\">Small sample: N = {n} is below {SMALL_N}. What this chart shows could \
             change a lot with the next few incidents; read the individual incidents, not the summary.</p>"
        );
    }
}

/// Opens an SVG element of the standard size, labelled for screen readers.
fn svg_open(out: &mut String, label: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"{}\">\n<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>\n",
        escape(label)
    );
}

/// Axis lines of the plot area.
fn axes(out: &mut String) {
    let (x0, y0, x1, y1) = (LEFT, HEIGHT - BOTTOM, WIDTH - RIGHT, TOP);
    let _ = write!(
        out,
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#333\"/>\n\
         <line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"#333\"/>\n"
    );
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, content: &str) {
    let _ = writeln!(
        out,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\">{}</text>",
        escape(content)
    );
}

/// The nearest-rank percentile `p` (0–100) of sorted values: the smallest value with at least p% of the values at
/// or below it. No interpolation: every percentile shown is a duration some incident really had.
pub fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// Durations (seconds) drawn on a log axis from a minute up, with ticks at durations people think in.
struct LogAxis {
    low: f64,
    high: f64,
}

impl LogAxis {
    const TICKS: [(i64, &'static str); 9] = [
        (60, "1 min"),
        (300, "5 min"),
        (900, "15 min"),
        (3600, "1 h"),
        (4 * 3600, "4 h"),
        (86_400, "1 d"),
        (7 * 86_400, "1 w"),
        (30 * 86_400, "30 d"),
        (365 * 86_400, "1 y"),
    ];

    fn new(max: i64) -> LogAxis {
        let high = Self::TICKS
            .iter()
            .map(|(s, _)| *s)
            .find(|s| *s >= max)
            .unwrap_or(max.max(60));
        LogAxis {
            low: 60f64.log10(),
            high: (high.max(300) as f64).log10(),
        }
    }

    /// The x coordinate of a duration; anything under a minute sits on the axis start.
    fn x(&self, seconds: i64) -> f64 {
        let v = (seconds.max(60) as f64).log10();
        LEFT + (v - self.low) / (self.high - self.low) * (WIDTH - LEFT - RIGHT)
    }
}

/// Chart 1: the empirical cumulative distribution of time to mitigate, with p50, p90 and (from 100 incidents) p99.
fn time_to_mitigate(out: &mut String, rows: &[Facts]) {
    let mut values: Vec<i64> = rows
        .iter()
        .filter_map(|r| r.time_to_mitigate_seconds)
        .filter(|s| *s >= 0)
        .collect();
    values.sort_unstable();
    let missing = rows.len() - values.len();
    let excluded = if missing > 0 {
        format!(
            " ({missing} incident{} without both timestamps, or with mitigation before impact, left out)",
            plural(missing)
        )
    } else {
        String::new()
    };
    header(
        out,
        "Time to mitigate",
        "mitigated − impact started",
        values.len(),
        &excluded,
    );
    // A percentile is shown once there are enough incidents to have one above it: p90 from 10, p99 from 100.
    let marks: Vec<(&str, i64)> = [("p50", 50.0, 1), ("p90", 90.0, 10), ("p99", 99.0, 100)]
        .into_iter()
        .filter(|(_, _, needs)| values.len() >= *needs)
        .filter_map(|(name, p, _)| Some((name, percentile(&values, p)?)))
        .collect();
    if let (Some(first), Some(last)) = (values.first(), values.last()) {
        let stats: Vec<String> = marks
            .iter()
            .map(|(name, v)| format!("{name} {}", format_duration(Duration::seconds(*v))))
            .chain([
                format!("min {}", format_duration(Duration::seconds(*first))),
                format!("max {}", format_duration(Duration::seconds(*last))),
            ])
            .collect();
        let _ = writeln!(out, "<p class=\"stats\">{}</p>", escape(&stats.join(" · ")));
    }
    svg_open(
        out,
        "Empirical cumulative distribution of time to mitigate, log scale",
    );
    axes(out);
    let axis = LogAxis::new(values.last().copied().unwrap_or(3600));
    let plot_h = HEIGHT - TOP - BOTTOM;
    let y = |fraction: f64| HEIGHT - BOTTOM - fraction * plot_h;
    for (seconds, label) in LogAxis::TICKS {
        let x = axis.x(seconds);
        if x > WIDTH - RIGHT + 0.5 {
            break;
        }
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{TOP}\" stroke=\"#eee\"/>",
            HEIGHT - BOTTOM
        );
        text(out, x, HEIGHT - BOTTOM + 16.0, "middle", label);
    }
    for fraction in [0.0, 0.25, 0.5, 0.75, 1.0] {
        text(
            out,
            LEFT - 6.0,
            y(fraction) + 4.0,
            "end",
            &format!("{}%", (fraction * 100.0) as u32),
        );
    }
    text(
        out,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 8.0,
        "middle",
        "time to mitigate (log scale); y: share of incidents mitigated within that time",
    );
    if !values.is_empty() {
        // A step function: at each incident's duration the share rises by 1/N.
        let n = values.len() as f64;
        let mut path = format!("M{:.1},{:.1}", LEFT, y(0.0));
        for (i, v) in values.iter().enumerate() {
            let x = axis.x(*v);
            let _ = write!(path, " H{x:.1} V{:.1}", y((i + 1) as f64 / n));
        }
        let _ = write!(path, " H{:.1}", WIDTH - RIGHT);
        let _ = writeln!(
            out,
            "<path d=\"{path}\" fill=\"none\" stroke=\"#2166ac\" stroke-width=\"2\"/>"
        );
        // Points help while they can be told apart; beyond that the step line says it all.
        for (i, v) in values.iter().enumerate().filter(|_| values.len() <= 100) {
            let _ = writeln!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#2166ac\"/>",
                axis.x(*v),
                y((i + 1) as f64 / n)
            );
        }
        for (row, (name, v)) in marks.iter().enumerate() {
            let x = axis.x(*v);
            let _ = writeln!(
                out,
                "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{TOP}\" stroke=\"#b2182b\" \
                 stroke-dasharray=\"4 3\"/>",
                HEIGHT - BOTTOM
            );
            // One label row each, so close percentiles stay readable.
            text(out, x + 3.0, TOP + 10.0 + 12.0 * row as f64, "start", name);
        }
    }
    out.push_str("</svg>\n</figure>\n");
}

/// The Monday (00:00 UTC) starting the ISO week of `at`.
fn week_of(at: DateTime<Utc>) -> chrono::NaiveDate {
    let day = at.date_naive();
    day - chrono::Days::new(u64::from(day.weekday().num_days_from_monday()))
}

/// Chart 2: incidents declared per week, stacked by severity, with empty weeks drawn as gaps.
fn per_week(out: &mut String, rows: &[Facts]) {
    let dated: Vec<(chrono::NaiveDate, String)> = rows
        .iter()
        .filter_map(|r| {
            Some((
                week_of(r.declared_at?),
                r.severity.clone().unwrap_or_else(|| "none".into()),
            ))
        })
        .collect();
    let excluded = match rows.len() - dated.len() {
        0 => String::new(),
        k => format!(" ({k} without a declaration time left out)"),
    };
    header(
        out,
        "Incidents per week, by severity",
        "declared, by ISO week (Monday, UTC)",
        dated.len(),
        &excluded,
    );
    let mut counts: BTreeMap<chrono::NaiveDate, BTreeMap<&str, usize>> = BTreeMap::new();
    for (week, severity) in &dated {
        *counts
            .entry(*week)
            .or_default()
            .entry(severity.as_str())
            .or_default() += 1;
    }
    let severities: Vec<&str> = {
        let mut all: Vec<&str> = dated.iter().map(|(_, s)| s.as_str()).collect();
        all.sort_unstable();
        all.dedup();
        all
    };
    let weeks = weeks_shown(out, &counts);
    severity_legend(out, &severities);
    svg_open(out, "Stacked bars of incidents per week by severity");
    axes(out);
    let max = weeks
        .iter()
        .map(|w| counts.get(w).map_or(0, |c| c.values().sum::<usize>()))
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / weeks.len().max(1) as f64;
    let bar = (slot * 0.8).clamp(1.0, 48.0);
    for tick in axis_ticks(max) {
        let y = HEIGHT - BOTTOM - tick as f64 / max as f64 * plot_h;
        text(out, LEFT - 6.0, y + 4.0, "end", &tick.to_string());
    }
    let label_every = (weeks.len() / 8).max(1);
    for (i, week) in weeks.iter().enumerate() {
        let x = LEFT + i as f64 * slot + (slot - bar) / 2.0;
        let mut base = HEIGHT - BOTTOM;
        if let Some(by_severity) = counts.get(week) {
            for (j, severity) in severities.iter().enumerate() {
                let Some(&n) = by_severity.get(severity) else {
                    continue;
                };
                let h = n as f64 / max as f64 * plot_h;
                base -= h;
                let _ = writeln!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"{base:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{}\">\
                     <title>{} {}: {n}</title></rect>",
                    PALETTE.get(j).copied().unwrap_or(OTHER),
                    week.format("%Y-%m-%d"),
                    escape(severity)
                );
            }
        }
        if i % label_every == 0 {
            text(
                out,
                x + bar / 2.0,
                HEIGHT - BOTTOM + 16.0,
                "middle",
                &week.format("%Y-%m-%d").to_string(),
            );
        }
    }
    text(
        out,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 8.0,
        "middle",
        "week starting (UTC); y: incidents declared",
    );
    out.push_str("</svg>\n</figure>\n");
}

/// Every week from the first with a declaration to the last, empty ones included so that gaps show, at most the
/// latest [`MAX_WEEKS`] (saying so in `out` when weeks are cut).
fn weeks_shown<T>(
    out: &mut String,
    counts: &BTreeMap<chrono::NaiveDate, T>,
) -> Vec<chrono::NaiveDate> {
    match (counts.keys().next(), counts.keys().last()) {
        (Some(first), Some(last)) => {
            let mut all = Vec::new();
            let mut week = *first;
            while week <= *last {
                all.push(week);
                week = week + chrono::Days::new(7);
            }
            let skip = all.len().saturating_sub(MAX_WEEKS);
            if skip > 0 {
                let _ = writeln!(
                    out,
                    "<p class=\"pair\">Showing the latest {MAX_WEEKS} weeks of {}.</p>",
                    all.len()
                );
            }
            all.split_off(skip)
        }
        _ => Vec::new(),
    }
}

/// The colour key of the stacked bars, in the order the bars stack.
fn severity_legend(out: &mut String, severities: &[&str]) {
    if !severities.is_empty() {
        out.push_str("<p class=\"stats\">");
        for (i, severity) in severities.iter().enumerate() {
            let _ = write!(
                out,
                "<span style=\"color:{}\">■</span> {} ",
                PALETTE.get(i).copied().unwrap_or(OTHER),
                escape(severity)
            );
        }
        out.push_str("</p>\n");
    }
}

/// Up to five round values from 0 to `max` for a count axis.
fn axis_ticks(max: usize) -> Vec<usize> {
    let step = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
        .into_iter()
        .find(|s| max / s <= 4)
        .unwrap_or(max.div_ceil(4).max(1));
    (0..=max).step_by(step).collect()
}

/// Chart 3: how many incidents had 0, 1, 2, 3, 4 and 5 or more handoffs of command.
fn handoffs(out: &mut String, rows: &[Facts]) {
    header(
        out,
        "Handoffs of command per incident",
        "changes of Incident Commander, from each document's history",
        rows.len(),
        "",
    );
    let labels = ["0", "1", "2", "3", "4", "5+"];
    let mut buckets = [0usize; 6];
    for row in rows {
        buckets[row.handoffs.min(5)] += 1;
    }
    svg_open(out, "Bars of incidents by number of handoffs");
    axes(out);
    let max = buckets.iter().copied().max().unwrap_or(0).max(1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / labels.len() as f64;
    for tick in axis_ticks(max) {
        let y = HEIGHT - BOTTOM - tick as f64 / max as f64 * plot_h;
        text(out, LEFT - 6.0, y + 4.0, "end", &tick.to_string());
    }
    for (i, (label, n)) in labels.iter().zip(buckets).enumerate() {
        let h = n as f64 / max as f64 * plot_h;
        let x = LEFT + i as f64 * slot + slot * 0.15;
        let y = HEIGHT - BOTTOM - h;
        let _ = writeln!(
            out,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#67a9cf\"/>",
            slot * 0.7
        );
        text(out, x + slot * 0.35, y - 4.0, "middle", &n.to_string());
        text(
            out,
            x + slot * 0.35,
            HEIGHT - BOTTOM + 16.0,
            "middle",
            label,
        );
    }
    text(
        out,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 8.0,
        "middle",
        "handoffs; y: incidents",
    );
    out.push_str("</svg>\n</figure>\n");
}

#[cfg(test)]
mod tests {
    use super::{axis_ticks, percentile};

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<i64> = (1..=10).collect();
        assert_eq!(percentile(&values, 50.0), Some(5));
        assert_eq!(percentile(&values, 90.0), Some(9));
        assert_eq!(percentile(&values, 99.0), Some(10));
        assert_eq!(percentile(&[7], 50.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn count_axes_have_a_few_round_ticks() {
        assert_eq!(axis_ticks(1), [0, 1]);
        assert_eq!(axis_ticks(4), [0, 1, 2, 3, 4]);
        assert_eq!(axis_ticks(9), [0, 2, 4, 6, 8]);
        assert_eq!(axis_ticks(500), [0, 200, 400]);
    }
}
