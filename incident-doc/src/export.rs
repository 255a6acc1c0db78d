//! Exports: Markdown, HTML and JSON renderings of an [`IncidentView`].
//!
//! All three are deterministic: the same document gives the same bytes, so exports can be diffed, cached and
//! compared across replicas. Pinned fields come first (in pin order), then the template order.

mod html;
mod markdown;

pub use html::html;
pub use markdown::markdown;

use chrono::{DateTime, Utc};

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
