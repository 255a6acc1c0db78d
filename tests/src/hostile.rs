//! Hostile user text: what an attacker with a write token (or a pasted alert payload) would put into an incident to
//! make the HTML export or the web UI run code, and a check that a page of HTML is inert.
//!
//! Every payload that could run sets `window.__pwned` and the document's title to `pwned`, so a browser test can
//! tell that nothing ran; the export check needs no browser: it looks at every tag and attribute that survived.

use serde_json::{Value, json};

/// One payload per way user text has turned into code in other tools: raw HTML (scripts, event handlers, frames,
/// forms, styles, meta refresh), Markdown links and autolinks with `javascript:`/`data:`/`vbscript:` targets, and
/// their obfuscated spellings (case, entities, whitespace inside the scheme).
pub const PAYLOADS: &[&str] = &[
    "<script>window.__pwned=1;document.title='pwned'</script>",
    "<img src=x onerror=\"window.__pwned=2;document.title='pwned'\">",
    "[click me](javascript:window.__pwned=3)",
    "<a href=\"javascript:window.__pwned=4\">raw link</a>",
    "<a href=\"jav&#x09;ascript:window.__pwned=5\">entity link</a>",
    "[mixed case](JaVaScRiPt:window.__pwned=6)",
    "<javascript:window.__pwned=7>",
    "<svg onload=\"window.__pwned=8\"><circle r=1></circle></svg>",
    "<iframe srcdoc=\"<script>parent.__pwned=9</script>\"></iframe>",
    "[data](data:text/html;base64,PHNjcmlwdD5wYXJlbnQuX19wd25lZD0xMDwvc2NyaXB0Pg==)",
    "<details open ontoggle=\"window.__pwned=11\"><summary>x</summary></details>",
    "<style>body{display:none}</style>",
    "<meta http-equiv=\"refresh\" content=\"0;url=javascript:window.__pwned=12\">",
    "<form action=\"javascript:window.__pwned=13\"><button formaction=\"javascript:window.__pwned=13\">go</button></form>",
    "<object data=\"javascript:window.__pwned=14\"></object><embed src=\"javascript:window.__pwned=15\">",
    "[vb](vbscript:msgbox(16))",
    "<div style=\"background:url(javascript:window.__pwned=17)\">styled</div>",
    "<base href=\"javascript:window.__pwned=18//\"><math><mi xlink:href=\"javascript:window.__pwned=19\">m</mi></math>",
    "\"><script>window.__pwned=20</script>",
    "</textarea><script>window.__pwned=21</script>",
];

/// All payloads in one text, one per line, for fields that hold a single text.
pub fn all_in_one() -> String {
    PAYLOADS.join("\n\n")
}

/// The typed operations that put the payloads into every kind of field that holds user text: the Markdown fields
/// (summary, command post, detailed status), a checklist item's text, owner and bug, a role's person, and one
/// timeline entry per payload.
pub fn operations() -> Value {
    let text = all_in_one();
    let mut ops = vec![
        json!({"op": "setText", "field": "summary", "text": text}),
        json!({"op": "setText", "field": "commandPost", "text": text}),
        json!({"op": "setText", "field": "detailedStatus", "text": text}),
        // Checklist items are one line.
        json!({"op": "addItem", "field": "todos", "text": PAYLOADS.join(" "),
               "owner": PAYLOADS[1], "bug": PAYLOADS[0]}),
        json!({"op": "assignRole", "role": "operations", "person": PAYLOADS[1]}),
    ];
    ops.extend(
        PAYLOADS
            .iter()
            .map(|p| json!({"op": "addTimelineEntry", "text": p})),
    );
    json!(ops)
}

/// Tags that have no business in an incident page made from user text.
const FORBIDDEN_TAGS: &[&str] = &[
    "script", "iframe", "object", "embed", "form", "button", "base", "link", "svg", "math",
    "frame", "frameset", "applet", "input", "textarea",
];

/// URL schemes that run code or render attacker HTML.
const FORBIDDEN_SCHEMES: &[&str] = &["javascript:", "vbscript:", "data:"];

/// Attributes that make a browser fetch something as the page loads (an image, a poster, a background): the
/// export loads nothing, since a remote load opened from a saved file tells a tracker who read the incident.
const LOADING_ATTRIBUTES: &[&str] = &["src", "srcset", "poster", "background", "lowsrc", "dynsrc"];

/// Checks that `html` (a whole page) is inert: no forbidden tag, no event-handler, `style` or `http-equiv`
/// attribute (but a content security policy, which only takes permissions away), no attribute that loads anything,
/// no attribute holding a code-running URL, and no `<style>` but the page's own first one. Returns every problem.
pub fn inert(html: &str) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut styles = 0;
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let end = after.find('>').unwrap_or(after.len());
        let tag = after[..end].to_lowercase();
        rest = &after[end..];
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if tag.starts_with('/') || tag.starts_with('!') || name.is_empty() {
            continue;
        }
        if FORBIDDEN_TAGS.contains(&name.as_str()) {
            problems.push(format!("<{tag}>"));
        }
        if name == "style" {
            styles += 1;
            if styles > 1 {
                problems.push("a second <style>".to_owned());
            }
        }
        for attribute in attributes(&tag) {
            let (key, value) = attribute.split_once('=').unwrap_or((attribute, ""));
            let value: String = value
                .trim_matches(|c| c == '"' || c == '\'')
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            // `http-equiv` is how a `<meta>` refreshes to another URL; the page's own metas carry none.
            let policy = key == "http-equiv" && value == "content-security-policy";
            if key.starts_with("on")
                || ["style", "srcdoc", "formaction"].contains(&key)
                || (key == "http-equiv" && !policy)
                || LOADING_ATTRIBUTES.contains(&key)
            {
                problems.push(format!("attribute {attribute} in <{tag}>"));
            }
            if FORBIDDEN_SCHEMES.iter().any(|s| value.starts_with(s)) {
                problems.push(format!("URL {attribute} in <{tag}>"));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The attributes of a tag's text (`name a="x y" b=z c`), quotes respected.
fn attributes(tag: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    let mut quote = None;
    let body_start = tag.find(char::is_whitespace).unwrap_or(tag.len());
    for (i, c) in tag.char_indices().skip_while(|(i, _)| *i < body_start) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, c) if c.is_whitespace() || c == '/' => {
                if let Some(s) = start.take() {
                    out.push(&tag[s..i]);
                }
            }
            (None, _) => {
                if start.is_none() {
                    start = Some(i);
                }
            }
        }
    }
    if let Some(s) = start {
        out.push(&tag[s..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_finds_what_it_is_meant_to_find() {
        assert!(inert("<style>own</style><p><a href=\"https://x\">ok</a></p>").is_ok());
        assert!(
            inert("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'\">")
                .is_ok()
        );
        for bad in [
            "<p><script>x</script></p>",
            "<img src=x onerror=\"y\">",
            "<a href=\"javascript:x\">",
            "<a href=' java script:x'>",
            "<style>a</style><style>b</style>",
            "<div style=\"x\">",
            "<meta http-equiv=\"refresh\" content=\"0\">",
            "<img src=\"https://tracker.example/pixel.png\" alt=\"x\">",
            "<video poster=\"https://tracker.example/p.png\"></video>",
            "<img srcset=\"https://tracker.example/p.png 2x\">",
        ] {
            assert!(inert(bad).is_err(), "{bad}");
        }
    }
}
