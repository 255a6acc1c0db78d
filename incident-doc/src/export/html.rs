//! HTML export: the Markdown export rendered by pulldown-cmark and sanitized by ammonia.
//!
//! Responders paste anything into an incident (log lines, alert payloads, links from chat), so the HTML must be
//! inert: no scripts, no event handlers, no `javascript:` links, no raw HTML passes through.

use pulldown_cmark::{CowStr, Event, LinkType, Options, Parser, Tag, TagEnd};

use super::autolink::{Piece, pieces};
use super::markdown;
use crate::view::IncidentView;

/// A complete HTML page of the incident.
pub fn html(view: &IncidentView) -> String {
    let md = markdown(view);
    let options =
        Options::ENABLE_TASKLISTS | Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    // Checkboxes become characters: the export is read, not edited, and it keeps `<input>` off the allow-list.
    // Bare addresses in text (not in links or code) become links; ammonia then keeps only safe schemes.
    let mut in_link = 0usize;
    let events = Parser::new_ext(&md, options).flat_map(|event| match event {
        Event::TaskListMarker(true) => vec![Event::Text("☑ ".into())],
        Event::TaskListMarker(false) => vec![Event::Text("☐ ".into())],
        Event::Start(Tag::Link { .. }) => {
            in_link += 1;
            vec![event]
        }
        Event::End(TagEnd::Link) => {
            in_link = in_link.saturating_sub(1);
            vec![event]
        }
        Event::Text(text) if in_link == 0 => linked(&text),
        other => vec![other],
    });
    let mut body = String::new();
    pulldown_cmark::html::push_html(&mut body, events);
    let clean = ammonia::Builder::default().clean(&body).to_string();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{clean}</main>\n</body>\n</html>\n",
        title = escape(&view.headline.title),
    )
}

/// A text event with its bare web addresses turned into links.
fn linked(text: &str) -> Vec<Event<'static>> {
    let mut out = Vec::new();
    for piece in pieces(text) {
        match piece {
            Piece::Text(t) => out.push(Event::Text(CowStr::from(t.to_owned()))),
            Piece::Url(url) => {
                let url = CowStr::from(url.to_owned());
                out.push(Event::Start(Tag::Link {
                    link_type: LinkType::Autolink,
                    dest_url: url.clone(),
                    title: CowStr::from(""),
                    id: CowStr::from(""),
                }));
                out.push(Event::Text(url));
                out.push(Event::End(TagEnd::Link));
            }
        }
    }
    out
}

/// Enough style to read the export on a laptop or a phone, printed or on screen.
const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:0;padding:1rem;color:#111}\
main{max-width:50rem;margin:auto}h1{font-size:1.6rem}h2{border-bottom:1px solid #ccc;font-size:1.2rem}\
h3{font-size:1rem;margin-bottom:0}ul{padding-left:1.4rem}code,pre{background:#f4f4f4}";

/// Text made safe for HTML content and attribute values (and XML, such as inline SVG).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
