//! Templates: Markdown files whose headings give the fields of a new incident document, in order.
//!
//! The format is described in `templates/README.md`. In short: one `# Name` heading, then one `## Label` section per
//! field, each carrying an annotation comment `<!-- commandpost key=… kind=… -->`; a block quote in a section is the
//! field's prompt, list items are its options or default checklist items, other content is its default text.
//! Parsing never panics: a bad template is a [`TemplateError`] naming the file, the line and the reason.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use crate::schema::{Choice, FieldDef, FieldKind, Role, SEVERITY_KEY, TITLE_KEY, keys};

/// A parsed template, ready to instantiate incidents from.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// Stable identifier (the file name without `.md`), stored in every document made from it.
    pub id: String,
    /// The `# Name` heading, shown in the template picker.
    pub name: String,
    /// A hash of the source ([`version_of`]), stored in every document made from it: the same text always has the
    /// same version, on every node, and any edit gives a new one.
    pub version: String,
    /// The text under the name, shown in the template picker.
    pub description: String,
    /// Incidents from this template are drills (role-play), marked everywhere and left out of analytics by default.
    pub drill: bool,
    /// Incidents from this template are restricted to their members unless the declaration says otherwise: a
    /// security or HR incident must not be visible to everyone even for the minute before someone restricts it.
    pub restricted: bool,
    /// The chat channel incidents from this template are bound to when declared, by its naming rule
    /// (`channel.irc=#inc-{number}-{slug}` or `channel.slack=inc-{number}-{slug}`; see
    /// [`crate::channel::channel_name`]), checked when the template is parsed.
    pub channel: Option<(crate::channel::Network, String)>,
    /// The fields in template order.
    pub fields: Vec<TemplateField>,
    /// Mailing lists this template's status updates go to (`mail-to=ops@example.com`), and those added at a
    /// severity (`mail-to.SEV1=exec@example.com`), besides the server's `[[mail.lists]]`.
    pub mail_to: Vec<MailTo>,
    /// The commander's check-ins this template turns on (`reconsider=30m`, `help-flag`).
    pub checkins: crate::checkins::CheckInSettings,
}

/// One mailing list of a template (`mail-to=…` or `mail-to.<severity>=…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailTo {
    /// The severity at which it receives updates; every severity when `None`.
    pub severity: Option<String>,
    /// The list's address (`local@domain`), checked when the template is parsed.
    pub address: String,
}

/// Whether `address` is a bare mail address a template may name: `local@domain`, with no space, control
/// character, quote, bracket, comma or semicolon (nothing that could end a header or add a recipient), and a
/// domain of letters, digits, dots and hyphens.
pub fn is_mail_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local.chars().all(|c| {
            c.is_ascii_graphic()
                && !matches!(
                    c,
                    '"' | '(' | ')' | ',' | ':' | ';' | '<' | '>' | '@' | '[' | '\\' | ']'
                )
        })
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let domain_ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    local_ok && domain_ok
}

/// One field of a template: its definition and the value a new document starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateField {
    /// What is stored in the document's layout.
    pub def: FieldDef,
    /// The starting value.
    pub default: FieldDefault,
}

/// The value a field starts with in a new document.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldDefault {
    /// Nothing: empty text, no choice, empty list.
    Empty,
    /// Starting text of a text or markdown field.
    Text(String),
    /// Starting value of a choice field.
    Choice(String),
    /// Starting value of a flag.
    Flag(bool),
    /// Starting items of a checklist (text, done).
    Items(Vec<(String, bool)>),
}

/// Why a template was refused, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct TemplateError {
    /// The file name given to the parser.
    pub file: String,
    /// 1-based line of the offending heading, annotation or item.
    pub line: usize,
    /// What is wrong, in words a template author can act on.
    pub reason: String,
}

/// Checks a channel naming rule: only `{number}` and `{slug}` as placeholders, and the names it gives (for a long
/// title too) channels the network takes.
fn check_channel_rule(network: crate::channel::Network, rule: &str) -> Result<(), String> {
    let bare = rule.replace("{number}", "").replace("{slug}", "");
    if bare.contains(['{', '}']) {
        return Err(format!(
            "channel rule {rule:?}: only {{number}} and {{slug}} are replaced"
        ));
    }
    for title in ["Checkout errors", &"long title ".repeat(20)] {
        let name = crate::channel::channel_name(rule, network, Some(465), title);
        let id = (network == crate::channel::Network::Slack).then_some("C0000000000");
        crate::channel::Channel::new(network, &name, id)
            .map_err(|e| format!("channel rule {rule:?} gives {name:?}: {e}"))?;
    }
    Ok(())
}

/// The marker that tells a field annotation from any other HTML comment.
const ANNOTATION_MARKER: &str = "commandpost";

/// Root keys that templates may not use for fields, because the document stores its own data there.
const RESERVED_KEYS: [&str; 13] = [
    keys::SCHEMA_VERSION,
    keys::TEMPLATE,
    keys::TEMPLATE_NAME,
    keys::TEMPLATE_VERSION,
    keys::CREATED_AT,
    keys::CREATED_BY,
    keys::NUMBER,
    keys::DRILL,
    keys::LAYOUT,
    keys::UPDATED,
    keys::CHAT_CHANNEL,
    keys::CHECKINS,
    keys::HELP,
];

impl Template {
    /// Parses a template. `id` is the template's identifier, `file` the name used in error messages.
    pub fn parse(id: &str, file: &str, source: &str) -> Result<Template, TemplateError> {
        TemplateParser { file, source }.parse(id)
    }

    /// The field with this key, if the template has it.
    pub fn field(&self, key: &str) -> Option<&TemplateField> {
        self.fields.iter().find(|f| f.def.key == key)
    }
}

/// How many hex digits of the source's SHA-256 a version keeps: 64 bits tell a team's versions apart while
/// staying short enough to read in a CSV column.
const VERSION_HEX_DIGITS: usize = 16;

/// The version of a template's source: the first [`VERSION_HEX_DIGITS`] hex digits of its SHA-256. Computed from
/// the exact bytes, so two nodes loading the same file agree without talking to each other.
pub fn version_of(source: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(source.as_bytes());
    let mut hex = String::with_capacity(VERSION_HEX_DIGITS);
    for byte in digest.iter().take(VERSION_HEX_DIGITS / 2) {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// Holds what every error needs (file name and source for line numbers).
struct TemplateParser<'a> {
    /// Named in every error.
    file: &'a str,
    /// Offsets in events index into this.
    source: &'a str,
}

/// A `##` section before its body is interpreted.
struct Section {
    /// The heading text.
    label: String,
    /// Where the heading starts, for error lines.
    heading_at: usize,
    /// The body, from after the heading to the next `#`/`##` heading.
    body: Range<usize>,
}

/// A field annotation's attributes, read and checked.
struct Annotation {
    /// The field key.
    key: String,
    /// The field kind.
    kind: FieldKind,
    /// `owner=…`: the role that keeps the field current.
    owner: Option<Role>,
    /// `cadence=…`, in minutes.
    cadence: Option<i64>,
    /// `cadence.<severity>=…`, in minutes.
    cadence_by_severity: BTreeMap<String, i64>,
    /// `stamp`: the field shows its *last updated* stamp.
    stamp: bool,
    /// `default=…`, which only choices and flags take.
    default: Option<String>,
}

/// What a section body holds, split by meaning.
#[derive(Default)]
struct SectionBody {
    /// The annotation comment's text and offset.
    annotation: Option<(String, usize)>,
    /// Block quotes, joined: the prompt.
    prompt: Vec<String>,
    /// List items: (task marker, text, offset).
    items: Vec<(Option<bool>, String, usize)>,
    /// Source ranges of every other block: the default text.
    content: Vec<Range<usize>>,
    /// Source ranges of the lists: options or items for some kinds, default text for text and markdown.
    lists: Vec<Range<usize>>,
}

impl<'a> TemplateParser<'a> {
    fn error(&self, offset: usize, reason: impl Into<String>) -> TemplateError {
        let line = self.source[..offset.min(self.source.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1;
        TemplateError {
            file: self.file.to_owned(),
            line,
            reason: reason.into(),
        }
    }

    fn parse(&self, id: &str) -> Result<Template, TemplateError> {
        if !is_identifier(id) {
            return Err(self.error(
                0,
                format!("template id {id:?} must be letters, digits, '-' or '_'"),
            ));
        }
        let (name, name_at, preamble, sections) = self.split()?;
        let Some(name) = name else {
            return Err(self.error(
                0,
                "missing title: a template starts with a `# Name` heading",
            ));
        };
        if name.is_empty() {
            return Err(self.error(name_at, "the `#` title heading is empty"));
        }
        let pre = self.body(preamble.clone())?;
        let mut drill = false;
        let mut restricted = false;
        let mut mail_to = Vec::new();
        let mut channel = None;
        let mut checkins = crate::checkins::CheckInSettings::default();
        if let Some((text, at)) = &pre.annotation {
            for (attr, value) in self.attributes(text, *at)? {
                match (attr.as_str(), value) {
                    ("drill", None) => drill = true,
                    ("restricted", None) => restricted = true,
                    ("help-flag", None) => checkins.help_flag = true,
                    ("reconsider", Some(every)) => {
                        let minutes = parse_cadence(&every).ok_or_else(|| {
                            self.error(
                                *at,
                                format!("bad reconsider interval {every:?}: expected minutes or hours like 30m, 1h"),
                            )
                        })?;
                        checkins.reconsider_minutes = Some(minutes);
                    }
                    (mail, Some(addresses))
                        if mail == "mail-to" || mail.starts_with("mail-to.") =>
                    {
                        let severity = mail.strip_prefix("mail-to.").map(str::to_owned);
                        if severity.as_deref() == Some("") {
                            return Err(self.error(
                                *at,
                                "a severity's mailing list names the severity: mail-to.SEV1=exec@example.com",
                            ));
                        }
                        for address in addresses.split(',').map(str::trim) {
                            if !is_mail_address(address) {
                                return Err(self.error(
                                    *at,
                                    format!(
                                        "{mail}: {address:?} is not a mail address (list@example.com; several separated by commas)"
                                    ),
                                ));
                            }
                            mail_to.push(MailTo {
                                severity: severity.clone(),
                                address: address.to_owned(),
                            });
                        }
                    }
                    (network @ ("channel.irc" | "channel.slack"), Some(rule)) => {
                        if channel.is_some() {
                            return Err(self.error(*at, "a template names one channel rule"));
                        }
                        let network = match network {
                            "channel.irc" => crate::channel::Network::Irc,
                            _ => crate::channel::Network::Slack,
                        };
                        check_channel_rule(network, &rule).map_err(|why| self.error(*at, why))?;
                        channel = Some((network, rule));
                    }
                    (other, _) => {
                        return Err(self.error(
                            *at,
                            format!(
                                "unknown template attribute {other:?} (expected drill, restricted, \
                                 reconsider=…, help-flag, mail-to=…, mail-to.<severity>=…, channel.irc=… or channel.slack=…)"
                            ),
                        ));
                    }
                }
            }
        }
        let description = pre
            .content
            .iter()
            .map(|r| self.source[r.clone()].trim())
            .collect::<Vec<_>>()
            .join("\n\n");

        let mut fields: Vec<TemplateField> = Vec::new();
        let mut seen_keys = HashSet::new();
        let mut seen_kinds = HashSet::new();
        for section in sections {
            let field = self.field(&section)?;
            if !seen_keys.insert(field.def.key.clone()) {
                return Err(self.error(
                    section.heading_at,
                    format!("duplicate field key {:?}", field.def.key),
                ));
            }
            if field.def.kind.is_singleton() && !seen_kinds.insert(field.def.kind) {
                return Err(self.error(
                    section.heading_at,
                    format!(
                        "a template may have only one field of kind {}",
                        field.def.kind
                    ),
                ));
            }
            fields.push(field);
        }
        let severities = fields
            .iter()
            .find(|f| f.def.key == SEVERITY_KEY && f.def.kind == FieldKind::Choice)
            .map(|f| &f.def.options);
        for field in &fields {
            for severity in field.def.cadence_by_severity.keys() {
                if !severities.is_some_and(|options| options.iter().any(|o| &o.key == severity)) {
                    return Err(self.error(
                        name_at,
                        format!(
                            "field {:?} has a cadence for severity {severity:?}, which is not an option of the \
                             `severity` choice field",
                            field.def.key
                        ),
                    ));
                }
            }
        }
        match fields.iter().find(|f| f.def.key == TITLE_KEY) {
            Some(f) if f.def.kind == FieldKind::Text => {}
            Some(_) => {
                return Err(self.error(name_at, "the `title` field must be of kind text"));
            }
            None => {
                return Err(self.error(
                    name_at,
                    "missing the `title` field (a section with key=title kind=text)",
                ));
            }
        }
        Ok(Template {
            id: id.to_owned(),
            name,
            version: version_of(self.source),
            description,
            drill,
            restricted,
            channel,
            fields,
            mail_to,
            checkins,
        })
    }

    /// Splits the source into the title, the preamble under it and the `##` sections.
    #[allow(clippy::type_complexity)]
    fn split(&self) -> Result<(Option<String>, usize, Range<usize>, Vec<Section>), TemplateError> {
        let mut name: Option<String> = None;
        let mut name_at = 0;
        let mut preamble = 0..0;
        let mut sections: Vec<Section> = Vec::new();
        let mut depth = 0usize;
        let mut heading: Option<(HeadingLevel, usize, String)> = None;
        for (event, range) in Parser::new_ext(self.source, parser_options()).into_offset_iter() {
            match event {
                Event::Start(Tag::Heading { level, .. })
                    if depth == 0 && level <= HeadingLevel::H2 =>
                {
                    // The previous part ends where this heading starts.
                    if let Some(last) = sections.last_mut() {
                        last.body.end = range.start;
                    } else if name.is_some() {
                        preamble.end = range.start;
                    }
                    heading = Some((level, range.start, String::new()));
                    depth += 1;
                }
                Event::End(TagEnd::Heading(level))
                    if depth == 1 && level <= HeadingLevel::H2 && heading.is_some() =>
                {
                    depth -= 1;
                    let Some((level, at, text)) = heading.take() else {
                        continue;
                    };
                    let text = text.trim().to_owned();
                    if level == HeadingLevel::H1 {
                        if name.is_some() {
                            return Err(self.error(at, "a template has only one `#` heading"));
                        }
                        if !sections.is_empty() {
                            return Err(self.error(at, "the `#` title must come before the fields"));
                        }
                        name = Some(text);
                        name_at = at;
                        preamble = range.end..self.source.len();
                    } else {
                        if name.is_none() {
                            return Err(self.error(
                                at,
                                "missing title: a template starts with a `# Name` heading",
                            ));
                        }
                        sections.push(Section {
                            label: text,
                            heading_at: at,
                            body: range.end..self.source.len(),
                        });
                    }
                }
                Event::Text(t) | Event::Code(t) if heading.is_some() => {
                    if let Some((_, _, text)) = heading.as_mut() {
                        text.push_str(&t);
                    }
                }
                Event::Start(_) => depth += 1,
                Event::End(_) => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        Ok((name, name_at, preamble, sections))
    }

    /// Sorts the top-level blocks of a section body by meaning.
    fn body(&self, range: Range<usize>) -> Result<SectionBody, TemplateError> {
        let base = range.start;
        let text = &self.source[range];
        let mut body = SectionBody::default();
        let mut depth = 0usize;
        // The top-level block being read: its tag and start.
        let mut block: Option<(BlockKind, usize)> = None;
        let mut quote = String::new();
        let mut item: Option<(Option<bool>, String, usize)> = None;
        let mut html = String::new();
        for (event, r) in Parser::new_ext(text, parser_options()).into_offset_iter() {
            let r = (r.start + base)..(r.end + base);
            match &event {
                Event::Start(tag) => {
                    if depth == 0 {
                        let kind = match tag {
                            Tag::BlockQuote(_) => BlockKind::Quote,
                            Tag::List(_) => BlockKind::List,
                            Tag::HtmlBlock => BlockKind::Html,
                            _ => BlockKind::Other,
                        };
                        block = Some((kind, r.start));
                    }
                    if depth == 1 && matches!(tag, Tag::Item) {
                        item = Some((None, String::new(), r.start));
                    }
                    depth += 1;
                    continue;
                }
                Event::End(end) => {
                    depth = depth.saturating_sub(1);
                    if depth == 1
                        && matches!(end, TagEnd::Item)
                        && let Some((done, text, at)) = item.take()
                    {
                        body.items.push((done, text.trim().to_owned(), at));
                    }
                    if depth == 0
                        && let Some((kind, start)) = block.take()
                    {
                        self.finish_block(&mut body, kind, start..r.end, &mut quote, &mut html)?;
                    }
                    continue;
                }
                _ => {}
            }
            // Leaf events: collect text for the block being read.
            let Some((kind, _)) = &block else {
                // A top-level leaf outside any block (e.g. a lone rule): default content.
                if !matches!(event, Event::SoftBreak | Event::HardBreak) {
                    body.content.push(r);
                }
                continue;
            };
            match (kind, event) {
                (BlockKind::Html, Event::Html(t)) => html.push_str(&t),
                (BlockKind::Quote, Event::Text(t) | Event::Code(t)) => quote.push_str(&t),
                (BlockKind::Quote, Event::SoftBreak | Event::HardBreak) => quote.push(' '),
                (BlockKind::List, Event::TaskListMarker(done)) => {
                    if let Some(item) = item.as_mut() {
                        item.0 = Some(done);
                    }
                }
                (BlockKind::List, Event::Text(t) | Event::Code(t)) => {
                    if let Some(item) = item.as_mut() {
                        item.1.push_str(&t);
                    }
                }
                (BlockKind::List, Event::SoftBreak | Event::HardBreak) => {
                    if let Some(item) = item.as_mut() {
                        item.1.push(' ');
                    }
                }
                _ => {}
            }
        }
        Ok(body)
    }

    fn finish_block(
        &self,
        body: &mut SectionBody,
        kind: BlockKind,
        range: Range<usize>,
        quote: &mut String,
        html: &mut String,
    ) -> Result<(), TemplateError> {
        match kind {
            BlockKind::Quote => body.prompt.push(std::mem::take(quote).trim().to_owned()),
            BlockKind::Html => {
                let text = std::mem::take(html);
                let trimmed = text.trim();
                let is_annotation = trimmed
                    .strip_prefix("<!--")
                    .is_some_and(|rest| rest.trim_start().starts_with(ANNOTATION_MARKER));
                if is_annotation {
                    if body.annotation.is_some() {
                        return Err(self.error(range.start, "a section has only one annotation"));
                    }
                    body.annotation = Some((trimmed.to_owned(), range.start));
                } else if !trimmed.starts_with("<!--") {
                    body.content.push(range);
                }
            }
            BlockKind::List => body.lists.push(range),
            BlockKind::Other => body.content.push(range),
        }
        Ok(())
    }

    /// Reads `key=value`, `key="quoted value"` and bare `flag` attributes from an annotation comment.
    fn attributes(
        &self,
        annotation: &str,
        at: usize,
    ) -> Result<Vec<(String, Option<String>)>, TemplateError> {
        let inner = annotation
            .trim()
            .trim_start_matches("<!--")
            .trim_end_matches("-->")
            .trim();
        let inner = inner.strip_prefix(ANNOTATION_MARKER).unwrap_or(inner);
        let mut attrs = Vec::new();
        let mut chars = inner.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek().is_none() {
                break;
            }
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '=' {
                    break;
                }
                name.push(c);
                chars.next();
            }
            if chars.peek() != Some(&'=') {
                attrs.push((name, None));
                continue;
            }
            chars.next();
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '"' {
                        closed = true;
                        break;
                    }
                    value.push(c);
                }
                if !closed {
                    return Err(self.error(at, format!("unterminated quote in attribute {name:?}")));
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
            if name.is_empty() {
                return Err(self.error(at, "attribute without a name in annotation"));
            }
            attrs.push((name, Some(value)));
        }
        Ok(attrs)
    }

    fn field(&self, section: &Section) -> Result<TemplateField, TemplateError> {
        let at = section.heading_at;
        if section.label.is_empty() {
            return Err(self.error(at, "a `##` field heading is empty"));
        }
        let body = self.body(section.body.clone())?;
        let Some((annotation, ann_at)) = &body.annotation else {
            return Err(self.error(
                at,
                format!(
                    "section {:?} has no `<!-- commandpost key=… kind=… -->` annotation",
                    section.label
                ),
            ));
        };
        let ann = self.annotation(annotation, *ann_at)?;
        let (default, options) = self.default(&ann, &body, at, *ann_at)?;
        let prompt = (!body.prompt.is_empty()).then(|| body.prompt.join(" "));
        Ok(TemplateField {
            def: FieldDef {
                key: ann.key,
                label: section.label.clone(),
                kind: ann.kind,
                owner: ann.owner,
                cadence_minutes: ann.cadence,
                cadence_by_severity: ann.cadence_by_severity,
                stamp: ann.stamp,
                prompt,
                options,
            },
            default,
        })
    }

    /// Reads the annotation's attributes in the order they are written, so the first bad one is the one reported.
    fn annotation(&self, annotation: &str, ann_at: usize) -> Result<Annotation, TemplateError> {
        let mut key = None;
        let mut kind = None;
        let mut owner = None;
        let mut cadence = None;
        let mut cadence_by_severity = BTreeMap::new();
        let mut stamp = false;
        let mut default = None;
        let bad_cadence = |v: &str| {
            self.error(
                ann_at,
                format!("bad cadence {v:?}: expected minutes, hours or days like 30m, 4h, 1d"),
            )
        };
        for (name, value) in self.attributes(annotation, ann_at)? {
            let need = |v: Option<String>| {
                v.ok_or_else(|| self.error(ann_at, format!("attribute {name:?} needs a value")))
            };
            match name.as_str() {
                "key" => key = Some(need(value)?),
                "kind" => {
                    let v = need(value)?;
                    kind = Some(v.parse::<FieldKind>().map_err(|()| {
                        let all: Vec<_> = FieldKind::ALL.iter().map(|k| k.as_str()).collect();
                        self.error(
                            ann_at,
                            format!("unknown kind {v:?} (expected one of {})", all.join(", ")),
                        )
                    })?);
                }
                "owner" => {
                    let v = need(value)?;
                    owner = Some(v.parse::<Role>().map_err(|()| {
                        let all: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
                        self.error(
                            ann_at,
                            format!(
                                "unknown owner role {v:?} (expected one of {})",
                                all.join(", ")
                            ),
                        )
                    })?);
                }
                "cadence" => {
                    let v = need(value)?;
                    cadence = Some(parse_cadence(&v).ok_or_else(|| bad_cadence(&v))?);
                }
                severity_cadence if severity_cadence.starts_with("cadence.") => {
                    let severity = &severity_cadence["cadence.".len()..];
                    let v = need(value)?;
                    let minutes = parse_cadence(&v).ok_or_else(|| bad_cadence(&v))?;
                    if severity.is_empty() {
                        return Err(self.error(
                            ann_at,
                            "a severity cadence names the severity: cadence.SEV1=1h",
                        ));
                    }
                    cadence_by_severity.insert(severity.to_owned(), minutes);
                }
                "stamp" if value.is_none() => stamp = true,
                "default" => default = Some(need(value)?),
                other => {
                    return Err(self.error(
                        ann_at,
                        format!(
                            "unknown attribute {other:?} (expected key, kind, owner, cadence, cadence.<severity>, stamp, default)"
                        ),
                    ));
                }
            }
        }
        let key = key.ok_or_else(|| self.error(ann_at, "annotation has no key=…"))?;
        let kind = kind.ok_or_else(|| self.error(ann_at, "annotation has no kind=…"))?;
        if !is_field_key(&key) {
            return Err(self.error(
                ann_at,
                format!(
                    "field key {key:?} must start with a letter and hold only letters and digits"
                ),
            ));
        }
        if RESERVED_KEYS.contains(&key.as_str()) || key == keys::PINS || key == keys::ACCESS {
            return Err(self.error(
                ann_at,
                format!("field key {key:?} is reserved by the document schema"),
            ));
        }
        Ok(Annotation {
            key,
            kind,
            owner,
            cadence,
            cadence_by_severity,
            stamp,
            default,
        })
    }

    /// The field's starting value and options, from the section body as the field's kind reads it: each kind
    /// refuses what it would otherwise silently ignore.
    fn default(
        &self,
        ann: &Annotation,
        body: &SectionBody,
        at: usize,
        ann_at: usize,
    ) -> Result<(FieldDefault, Vec<Choice>), TemplateError> {
        let kind = ann.kind;
        let content = self.join(body.content.iter());
        let content_at = body.content.first().map_or(at, |r| r.start);
        let default = match kind {
            FieldKind::Text | FieldKind::Markdown => {
                self.no_default_attr(&ann.default, ann_at, kind)?;
                let mut blocks: Vec<&Range<usize>> =
                    body.content.iter().chain(&body.lists).collect();
                blocks.sort_by_key(|r| r.start);
                let content = self.join(blocks.into_iter());
                if kind == FieldKind::Text && content.contains('\n') {
                    return Err(self.error(content_at, "a text field's default must be one line"));
                }
                if content.is_empty() {
                    FieldDefault::Empty
                } else {
                    FieldDefault::Text(content)
                }
            }
            FieldKind::Choice | FieldKind::Questions => {
                self.no_content(&content, content_at, kind)?;
                let options = self.options(kind, body, at)?;
                let default = match (kind, &ann.default) {
                    (FieldKind::Choice, Some(d)) => {
                        if !options.iter().any(|o| &o.key == d) {
                            return Err(self.error(
                                ann_at,
                                format!("default {d:?} is not one of the options"),
                            ));
                        }
                        FieldDefault::Choice(d.clone())
                    }
                    (FieldKind::Questions, Some(_)) => {
                        return Err(self.error(ann_at, "questions take no default"));
                    }
                    _ => FieldDefault::Empty,
                };
                return Ok((default, options));
            }
            FieldKind::Flag => {
                self.no_items(body, kind)?;
                self.no_content(&content, content_at, kind)?;
                match ann.default.as_deref() {
                    None | Some("no") => FieldDefault::Flag(false),
                    Some("yes") => FieldDefault::Flag(true),
                    Some(other) => {
                        return Err(self.error(
                            ann_at,
                            format!("a flag's default is yes or no, not {other:?}"),
                        ));
                    }
                }
            }
            FieldKind::Checklist => {
                self.no_content(&content, content_at, kind)?;
                self.no_default_attr(&ann.default, ann_at, kind)?;
                let mut items = Vec::new();
                for (marker, text, item_at) in &body.items {
                    let Some(done) = marker else {
                        return Err(self.error(*item_at, "checklist items are tasks: `- [ ] text`"));
                    };
                    items.push((text.clone(), *done));
                }
                if items.is_empty() {
                    FieldDefault::Empty
                } else {
                    FieldDefault::Items(items)
                }
            }
            FieldKind::Status
            | FieldKind::Roles
            | FieldKind::Timeline
            | FieldKind::Timestamps
            | FieldKind::Deviations
            | FieldKind::Changes => {
                self.no_items(body, kind)?;
                self.no_content(&content, content_at, kind)?;
                self.no_default_attr(&ann.default, ann_at, kind)?;
                FieldDefault::Empty
            }
        };
        Ok((default, Vec::new()))
    }

    /// The options of a choice or questions field: its plain list items, `- key: label` (or `- key` alone for a
    /// choice). Question keys become document keys, so they must be field-key shaped.
    fn options(
        &self,
        kind: FieldKind,
        body: &SectionBody,
        at: usize,
    ) -> Result<Vec<Choice>, TemplateError> {
        let mut options = Vec::new();
        for (marker, text, item_at) in &body.items {
            if marker.is_some() {
                return Err(self.error(
                    *item_at,
                    format!("{kind} options are plain list items, not tasks"),
                ));
            }
            let (k, label) = match text.split_once(':') {
                Some((k, label)) => (k.trim(), label.trim()),
                None => (text.as_str(), text.as_str()),
            };
            if !is_field_key(k) && kind == FieldKind::Questions {
                return Err(self.error(
                    *item_at,
                    format!(
                        "question key {k:?} must be letters and digits (write `- key: question`)"
                    ),
                ));
            }
            if k.is_empty() || options.iter().any(|o: &Choice| o.key == k) {
                return Err(self.error(*item_at, format!("empty or duplicate option {k:?}")));
            }
            options.push(Choice {
                key: k.to_owned(),
                label: label.to_owned(),
            });
        }
        if options.is_empty() {
            return Err(self.error(
                at,
                format!("a {kind} field lists its options as `- key: label` items"),
            ));
        }
        Ok(options)
    }

    /// The source of `blocks`, trimmed, separated by blank lines.
    fn join<'r>(&self, blocks: impl Iterator<Item = &'r Range<usize>>) -> String {
        blocks
            .map(|r| self.source[r.clone()].trim())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    fn no_items(&self, body: &SectionBody, kind: FieldKind) -> Result<(), TemplateError> {
        match body.items.first() {
            Some((_, _, at)) => Err(self.error(*at, format!("a {kind} field takes no list items"))),
            None => Ok(()),
        }
    }

    fn no_content(&self, content: &str, at: usize, kind: FieldKind) -> Result<(), TemplateError> {
        if content.is_empty() {
            Ok(())
        } else {
            Err(self.error(
                at,
                format!(
                    "a {kind} field takes no default text (use a `>` block quote for a prompt)"
                ),
            ))
        }
    }

    fn no_default_attr(
        &self,
        attr: &Option<String>,
        at: usize,
        kind: FieldKind,
    ) -> Result<(), TemplateError> {
        if attr.is_some() {
            Err(self.error(at, format!("a {kind} field takes no default=… attribute")))
        } else {
            Ok(())
        }
    }
}

/// The top-level block kinds a section body distinguishes.
#[derive(Clone, Copy)]
enum BlockKind {
    Quote,
    List,
    Html,
    Other,
}

fn parser_options() -> Options {
    Options::ENABLE_TASKLISTS | Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH
}

/// Field keys become JavaScript property names in plain Automerge clients, so keep them simple.
fn is_field_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric())
}

fn is_identifier(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `30m`, `4h`, `1d` → minutes.
fn parse_cadence(text: &str) -> Option<i64> {
    let unit = text.chars().last()?;
    let number: i64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let factor = match unit {
        'm' => 1,
        'h' => 60,
        'd' => 24 * 60,
        _ => return None,
    };
    (number > 0).then(|| number.checked_mul(factor)).flatten()
}

/// The templates shipped in `templates/`, compiled into the binary so a server needs no files to start.
const BUILTIN: [(&str, &str); 3] = [
    ("incident", include_str!("../../templates/incident.md")),
    ("security", include_str!("../../templates/security.md")),
    ("drill", include_str!("../../templates/drill.md")),
];

/// The id of the template used when none is named.
pub const DEFAULT_TEMPLATE: &str = "incident";

/// The shipped templates, default first. A test checks they parse, so this cannot fail at run time.
pub fn builtin() -> Vec<Template> {
    BUILTIN
        .iter()
        .filter_map(|(id, source)| Template::parse(id, &format!("templates/{id}.md"), source).ok())
        .collect()
}

/// The ids and sources of the shipped templates, for tests that compare them with `templates/`.
pub fn builtin_sources() -> &'static [(&'static str, &'static str)] {
    &BUILTIN
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "# Minimal\n\nA tiny one.\n\n## Title\n<!-- commandpost key=title kind=text -->\n";

    fn err(src: &str) -> TemplateError {
        Template::parse("t", "t.md", src).expect_err("template should be refused")
    }

    #[test]
    fn channel_rules_are_checked_when_parsed() {
        let with = |attr: &str| {
            format!(
                "# T\n<!-- commandpost {attr} -->\n\n## Title\n<!-- commandpost key=title kind=text -->\n"
            )
        };
        let t =
            Template::parse("t", "t.md", &with("channel.irc=#inc-{number}-{slug}")).expect("valid");
        assert_eq!(
            t.channel,
            Some((crate::channel::Network::Irc, "#inc-{number}-{slug}".into()))
        );
        let t = Template::parse("t", "t.md", &with("channel.slack=inc-{number}-{slug}"))
            .expect("valid");
        assert_eq!(t.channel.map(|c| c.0), Some(crate::channel::Network::Slack));
        assert_eq!(
            Template::parse("t", "t.md", MINIMAL)
                .expect("valid")
                .channel,
            None
        );
        for bad in [
            "channel.irc=inc-{number}",
            "channel.irc=#inc-{id}",
            "channel.slack=Inc-{number}",
            "channel.slack=#inc,{number}",
            "channel.irc=#a channel.slack=b",
            "channel.xmpp=#x",
            "channel.irc",
        ] {
            assert!(Template::parse("t", "t.md", &with(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_restricted_attribute_makes_incidents_restricted_by_default() {
        let src = "# T\n<!-- commandpost restricted -->\n\n## Title\n<!-- commandpost key=title kind=text -->\n";
        assert!(Template::parse("t", "t.md", src).expect("valid").restricted);
        assert!(
            !Template::parse("t", "t.md", MINIMAL)
                .expect("valid")
                .restricted
        );
        let security = builtin()
            .into_iter()
            .find(|t| t.id == "security")
            .expect("the security template");
        assert!(security.restricted);
        let e = err("# T\n\n## Access\n<!-- commandpost key=access kind=flag -->\n");
        assert!(e.reason.contains("reserved"), "{e}");
    }

    #[test]
    fn mailing_lists_are_read_and_their_addresses_checked() {
        let src = "# T\n<!-- commandpost mail-to=ops@example.com,sre@example.com mail-to.SEV1=exec@example.com -->\n\n\
                   ## Title\n<!-- commandpost key=title kind=text -->\n";
        let t = Template::parse("t", "t.md", src).expect("valid");
        let lists: Vec<(Option<&str>, &str)> = t
            .mail_to
            .iter()
            .map(|m| (m.severity.as_deref(), m.address.as_str()))
            .collect();
        assert_eq!(
            lists,
            [
                (None, "ops@example.com"),
                (None, "sre@example.com"),
                (Some("SEV1"), "exec@example.com")
            ]
        );
        assert!(
            Template::parse("t", "t.md", MINIMAL)
                .expect("valid")
                .mail_to
                .is_empty()
        );
        for bad in [
            "mail-to=ops",
            "mail-to=ops@example.com,",
            "mail-to=\"Ops <ops@example.com>\"",
            "mail-to=ops@example.com;bcc@evil.example",
            "mail-to=ops@exa\u{0}mple.com",
            "mail-to=ops@-example.com",
            "mail-to.=exec@example.com",
            "mail-to",
        ] {
            let e = err(&format!(
                "# T\n<!-- commandpost {bad} -->\n\n## Title\n<!-- commandpost key=title kind=text -->\n"
            ));
            assert_eq!(e.line, 2, "{bad}: {e}");
        }
        assert!(is_mail_address("first.last+tag@mail.example.co.uk"));
        for bad in [
            "@example.com",
            "a@",
            "a@b",
            "a b@example.com",
            "a@exam_ple.com",
            ".a@example.com",
            "a\r\n@example.com",
        ] {
            assert!(!is_mail_address(bad), "{bad}");
        }
    }

    #[test]
    fn parses_a_minimal_template() {
        let t = Template::parse("minimal", "minimal.md", MINIMAL).expect("valid");
        assert_eq!(t.name, "Minimal");
        assert_eq!(t.description, "A tiny one.");
        assert_eq!(t.fields.len(), 1);
        assert_eq!(t.fields[0].def.kind, FieldKind::Text);
    }

    #[test]
    fn reads_prompts_defaults_options_and_items() {
        let src = "# T\n<!-- commandpost drill -->\n\n## Title\n<!-- commandpost key=title kind=text -->\n\n\
## Summary\n<!-- commandpost key=summary kind=markdown owner=communications cadence=4h stamp -->\n\
> What is broken.\n\nStarting **text**.\n\n- with a list\n\n\
## Severity\n<!-- commandpost key=severity kind=choice default=SEV2 -->\n- SEV1: Critical\n- SEV2: Major\n\n\
## Exit\n<!-- commandpost key=exit kind=checklist -->\n- [ ] Within SLO\n- [x] Paged\n";
        let t = Template::parse("t", "t.md", src).expect("valid");
        assert!(t.drill);
        assert!(!t.restricted);
        let summary = t.field("summary").expect("summary");
        assert_eq!(summary.def.prompt.as_deref(), Some("What is broken."));
        assert_eq!(summary.def.owner, Some(Role::Communications));
        assert_eq!(summary.def.cadence_minutes, Some(240));
        assert!(summary.def.stamp);
        // List items in a markdown field are not options: they are part of the default text.
        assert_eq!(
            summary.default,
            FieldDefault::Text("Starting **text**.\n\n- with a list".into())
        );
        let sev = t.field("severity").expect("severity");
        assert_eq!(
            sev.def.options[0],
            Choice {
                key: "SEV1".into(),
                label: "Critical".into()
            }
        );
        assert_eq!(sev.default, FieldDefault::Choice("SEV2".into()));
        let exit = t.field("exit").expect("exit");
        assert_eq!(
            exit.default,
            FieldDefault::Items(vec![("Within SLO".into(), false), ("Paged".into(), true)])
        );
    }

    #[test]
    fn bad_templates_name_file_line_and_reason() {
        let e = err("no heading\n");
        assert_eq!((e.file.as_str(), e.line), ("t.md", 1));
        assert!(e.reason.contains("missing title"), "{e}");

        let e = err("# T\n\n## Title\n<!-- commandpost key=title kind=bogus -->\n");
        assert_eq!(e.line, 4);
        assert!(e.reason.contains("unknown kind \"bogus\""), "{e}");

        let e = err(
            "# T\n## Title\n<!-- commandpost key=title kind=text -->\n## Again\n<!-- commandpost key=title kind=markdown -->\n",
        );
        assert_eq!(e.line, 4);
        assert!(e.reason.contains("duplicate field key"), "{e}");

        let e = err("# T\n## Summary\n<!-- commandpost key=summary kind=markdown -->\n");
        assert!(e.reason.contains("missing the `title` field"), "{e}");

        let e = err(
            "# T\n## Title\n<!-- commandpost key=title kind=text -->\n## Plain\nno annotation\n",
        );
        assert_eq!(e.line, 4);
        assert!(e.reason.contains("no `<!-- commandpost"), "{e}");

        let e = err("# T\n## Title\n<!-- commandpost key=title kind=text cadence=often -->\n");
        assert!(e.reason.contains("bad cadence"), "{e}");

        let e = err(
            "# T\n## Title\n<!-- commandpost key=title kind=text -->\n## S\n<!-- commandpost key=s kind=choice -->\n",
        );
        assert!(e.reason.contains("options"), "{e}");

        let e = err("# T\n## Title\n<!-- commandpost key=layout kind=text -->\n");
        assert!(e.reason.contains("reserved"), "{e}");

        let e = err(
            "# T\n## Title\n<!-- commandpost key=title kind=text -->\n## A\n<!-- commandpost key=a kind=timeline -->\n## B\n<!-- commandpost key=b kind=timeline -->\n",
        );
        assert_eq!(e.line, 6);
        assert!(e.reason.contains("only one field of kind timeline"), "{e}");

        let e = err("# T\n## Title\n<!-- commandpost key=title kind=text \"oops -->\n");
        assert!(e.reason.contains("attribute"), "{e}");
    }

    #[test]
    fn cadence_units() {
        assert_eq!(parse_cadence("30m"), Some(30));
        assert_eq!(parse_cadence("4h"), Some(240));
        assert_eq!(parse_cadence("1d"), Some(1440));
        assert_eq!(parse_cadence("0h"), None);
        assert_eq!(parse_cadence("h"), None);
        assert_eq!(parse_cadence("5x"), None);
        assert_eq!(parse_cadence("é"), None);
    }
}
