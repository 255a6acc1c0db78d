//! What the model's integration tests share: a fixed moment, editors acting minutes after it, declaring an incident
//! from a shipped template, and its Markdown export. Each test file is its own crate and uses only some of these,
//! so the unused ones are allowed per crate.
#![allow(dead_code)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use incident_doc::template::Template;
use incident_doc::{Declaration, Editor, Incident, template};

/// The moment the tests' incidents are declared at.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0)
        .single()
        .expect("valid time")
}

/// `name` acting `minutes` after [`t0`].
pub fn at(name: &str, minutes: i64) -> Editor {
    Editor::new(name, t0() + Duration::minutes(minutes))
}

/// The shipped template `id`.
pub fn builtin(id: &str) -> Template {
    template::builtin()
        .into_iter()
        .find(|t| t.id == id)
        .expect("a shipped template")
}

/// An incident `name` with `number`, declared from `template` by `by`.
pub fn declare_from(template: &Template, name: &str, number: i64, by: &Editor) -> Incident {
    Incident::create(
        template,
        &Declaration {
            name: name.into(),
            number: Some(number),
        },
        by,
        None,
    )
    .expect("create")
}

/// An incident `name` with `number`, declared from the shipped template `template_id` by alice at [`t0`].
pub fn declare(template_id: &str, name: &str, number: i64) -> Incident {
    declare_from(&builtin(template_id), name, number, &at("alice", 0))
}

/// The incident's Markdown export.
pub fn markdown(incident: &Incident) -> String {
    incident_doc::export::markdown(&incident.view())
}
