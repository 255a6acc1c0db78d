//! Exports: Markdown, HTML and JSON renderings of an [`IncidentView`], and the postmortem draft.
//!
//! All three are deterministic: the same document gives the same bytes, so exports can be diffed, cached and
//! compared across replicas. Pinned fields come first (in pin order), then the template order.

mod autolink;
mod html;
pub(crate) mod markdown;
mod postmortem;
mod time;

pub use html::{POLICY as HTML_POLICY, body as markdown_html, escape as escape_html, html};
pub use markdown::markdown;
pub use postmortem::postmortem;
pub use time::{format_duration, format_time};

use crate::view::IncidentView;

/// The JSON export: the view's documented serde form, pretty-printed, with a final newline.
pub fn json(view: &IncidentView) -> String {
    let mut out = serde_json::to_string_pretty(view).unwrap_or_else(|_| String::from("{}"));
    out.push('\n');
    out
}
