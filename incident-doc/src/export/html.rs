//! HTML export: the Markdown export rendered by pulldown-cmark and sanitized by ammonia.
//!
//! Responders paste anything into an incident (log lines, alert payloads, links from chat), so the HTML must be
//! inert: no scripts, no event handlers, no `javascript:` links, no raw HTML passes through. It must also load
//! nothing: an export is opened later, often as a saved file where no server header applies, and a remote image
//! (`![x](https://tracker.example/pixel.png)`) would tell its owner who read the incident and when. Markdown
//! images become plain links, `<img>` is not on the sanitizer's allow-list, and the page carries its own
//! [`POLICY`] in a `<meta>` for the saved file.

use pulldown_cmark::{CowStr, Event, LinkType, Options, Parser, Tag, TagEnd, TextMergeStream};

use super::autolink::{Piece, pieces};
use super::markdown;
use crate::view::IncidentView;

/// The export's own content security policy, in its `<meta>`: no script, no image, no frame, no font, nothing
/// fetched at all; only the inline stylesheet of the page. The server sends a stricter header with it
/// (`frame-ancestors`, `sandbox`, which a `<meta>` cannot carry).
pub const POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'";

/// A complete HTML page of the incident.
pub fn html(view: &IncidentView) -> String {
    let clean = body(&markdown(view));
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{POLICY}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{clean}</main>\n</body>\n</html>\n",
        title = escape(&view.headline.title),
    )
}

/// The page's body: `md` rendered and sanitized. Also the HTML part of a status update's email, which must be as
/// inert as an export (mail clients run no script, but some fetch images).
pub fn body(md: &str) -> String {
    let options =
        Options::ENABLE_TASKLISTS | Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    // Checkboxes become characters: the export is read, not edited, and it keeps `<input>` off the allow-list.
    // Bare addresses in text (not in links or code) become links; ammonia then keeps only safe schemes.
    // Images become links to their address, labelled with their description (or the address when there is none).
    let mut in_link = 0usize;
    // For each open image: its address, and whether its description had any text.
    let mut images: Vec<(CowStr<'_>, bool)> = Vec::new();
    // Merged first: the parser splits text at characters that might start markup (`_`, `(`, …), which would cut a
    // bare address such as `…/wiki/Foo_(bar)` in two before the autolinker sees it.
    let events = TextMergeStream::new(Parser::new_ext(md, options)).flat_map(|event| match event {
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
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            in_link += 1;
            images.push((dest_url.clone(), false));
            vec![Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            })]
        }
        Event::End(TagEnd::Image) => {
            in_link = in_link.saturating_sub(1);
            match images.pop() {
                Some((url, false)) => vec![Event::Text(url), Event::End(TagEnd::Link)],
                _ => vec![Event::End(TagEnd::Link)],
            }
        }
        Event::Text(text) if in_link == 0 => linked(&text),
        other => {
            if let (Some(image), Event::Text(_) | Event::Code(_)) = (images.last_mut(), &other) {
                image.1 = true;
            }
            vec![other]
        }
    });
    let mut body = String::new();
    pulldown_cmark::html::push_html(&mut body, events);
    ammonia::Builder::default()
        .rm_tags(["img"])
        .clean(&body)
        .to_string()
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

#[cfg(test)]
mod tests {
    use super::body;

    #[test]
    fn images_become_links_and_load_nothing() {
        assert_eq!(
            body("![pixel](https://tracker.example/p.png \"a title\")"),
            "<p><a href=\"https://tracker.example/p.png\" title=\"a title\" rel=\"noopener noreferrer\">pixel</a></p>\n"
        );
        // No description: the address is the link's text, so the link is visible.
        assert_eq!(
            body("![](https://tracker.example/p.png)"),
            "<p><a href=\"https://tracker.example/p.png\" rel=\"noopener noreferrer\">https://tracker.example/p.png</a></p>\n"
        );
        // A description that is an address is not linked a second time inside the link.
        assert_eq!(
            body("![https://a.example](https://tracker.example/p.png)"),
            "<p><a href=\"https://tracker.example/p.png\" rel=\"noopener noreferrer\">https://a.example</a></p>\n"
        );
        // An image inside a link: one link, the outer one's text is the description.
        let nested = body("[![badge](https://tracker.example/b.svg)](https://ci.example/run)");
        assert!(!nested.contains("<img"), "{nested}");
        assert!(nested.contains("badge"), "{nested}");
        // Raw HTML images are dropped by the sanitizer; `data:` images never were allowed.
        assert_eq!(
            body("<img src=\"https://tracker.example/raw.png\" alt=\"x\">"),
            ""
        );
        assert!(!body("![d](data:image/png;base64,AAAA)").contains("<img"));
    }
}
