//! Exports: Markdown, HTML and JSON renderings of an [`IncidentView`], and the postmortem draft.
//!
//! All three are deterministic: the same document gives the same bytes, so exports can be diffed, cached and
//! compared across replicas. Pinned fields come first (in pin order), then the template order.

mod autolink;
mod html;
mod markdown;
mod postmortem;

pub use html::{POLICY as HTML_POLICY, escape as escape_html, html};
pub use markdown::markdown;
pub use postmortem::postmortem;

use chrono::{DateTime, Duration, Utc};

use crate::view::IncidentView;

/// The JSON export: the view's documented serde form, pretty-printed, with a final newline.
pub fn json(view: &IncidentView) -> String {
    let mut out = serde_json::to_string_pretty(view).unwrap_or_else(|_| String::from("{}"));
    out.push('\n');
    out
}

/// `YYYY-MM-DD HH:MM UTC`, the one human time format of every export.
pub fn format_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A duration as people read it: `30 s`, `42 min`, `1 h 5 min`, `2 d 3 h`, rounded down, since lifecycle
/// timestamps are only as precise as people set them. Negative durations (timestamps out of order) keep their sign.
pub fn format_duration(d: Duration) -> String {
    let seconds = d.num_seconds();
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    match (s / 86_400, s / 3600 % 24, s / 60 % 60) {
        (0, 0, 0) => format!("{sign}{s} s"),
        (0, 0, m) => format!("{sign}{m} min"),
        (0, h, m) => format!("{sign}{h} h {m} min"),
        (days, h, _) => format!("{sign}{days} d {h} h"),
    }
}
