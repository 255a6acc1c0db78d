//! Postmortem draft: Markdown in the shape of the SRE book's example postmortem, seeded from the state document.
//!
//! Writing a postmortem starts from facts responders already recorded: the summary, the follow-ups, the
//! timeline, who commanded. This draft puts them in place (timeline oldest first with the lifecycle milestones,
//! TODOs as action items, role intervals from the document's history) and leaves prompts where only people can
//! write (root causes, lessons learned). A template field with the section's key (`impact`, `rootCauses`,
//! `trigger`, `resolution`, `detection`) fills that section instead of its prompt.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::markdown::{change_line, deviation_line, inline};
use super::time::{format_duration as duration, format_time};
use crate::analytics::TODOS_KEY;
use crate::history::Record;
use crate::schema::{FieldKind, Stage};
use crate::view::{Deviation, FieldValue, IncidentView};

/// The sections people write, with the template keys that may already hold them and the prompt otherwise.
const WRITTEN: [(&str, &[&str], &str); 5] = [
    (
        "Impact",
        &["impact"],
        "Who was affected and how badly: users, requests, revenue, error budget.",
    ),
    (
        "Root causes",
        &["rootCauses", "rootCause"],
        "Why it happened: the conditions that made the failure possible, not who.",
    ),
    (
        "Trigger",
        &["trigger"],
        "What set it off: the change, load or event that met those conditions.",
    ),
    (
        "Resolution",
        &["resolution"],
        "What stopped the impact and what fixed the cause.",
    ),
    (
        "Detection",
        &["detection"],
        "How we found out: which alert or person, and how it could have been sooner.",
    ),
];

/// Lifecycle stages as the postmortem's timeline names them: outage (impact) apart from incident (response).
const MILESTONES: [(Stage, &str); 5] = [
    (Stage::ImpactStarted, "OUTAGE BEGINS"),
    (Stage::Declared, "INCIDENT BEGINS"),
    (Stage::Mitigated, "OUTAGE MITIGATED"),
    (Stage::Resolved, "OUTAGE ENDS"),
    (Stage::Closed, "INCIDENT ENDS"),
];

/// The postmortem draft of `view`, with responders and role intervals from `record` (the history up to the same
/// heads as the view).
pub fn postmortem(view: &IncidentView, record: &Record) -> String {
    let mut out = String::new();
    let title = if view.headline.title.trim().is_empty() {
        "Untitled incident".to_owned()
    } else {
        inline(&view.headline.title)
    };
    let number = view
        .headline
        .number
        .map(|n| format!(" (incident #{n})"))
        .unwrap_or_default();
    // Writing to a String cannot fail; the results are ignored for that reason throughout this module.
    let _ = writeln!(out, "# Postmortem: {title}{number}\n");
    let stamps = match view.field_of_kind(FieldKind::Timestamps).map(|f| &f.value) {
        Some(FieldValue::Timestamps(stamps)) => stamps.clone(),
        _ => Default::default(),
    };
    let declared = stamps
        .get(&Stage::Declared)
        .copied()
        .or(view.headline.created_at);
    if let Some(at) = declared {
        let _ = writeln!(out, "**Date:** {}  ", at.format("%Y-%m-%d"));
    }
    let responders: Vec<String> = record.responders(view).iter().map(|p| inline(p)).collect();
    let authors = if responders.is_empty() {
        "_none recorded_".to_owned()
    } else {
        responders.join(", ")
    };
    let _ = writeln!(out, "**Authors:** {authors} (the responders)  ");
    let status = view.headline.status.as_deref().unwrap_or("unknown");
    let _ = writeln!(
        out,
        "**Status:** draft; the incident is {}  ",
        inline(status)
    );
    if let Some(severity) = &view.headline.severity {
        let _ = writeln!(out, "**Severity:** {}  ", inline(severity));
    }
    out.push('\n');
    if view.headline.drill {
        let _ = writeln!(
            out,
            "> **Drill:** this was a practice incident, not a real one.\n"
        );
    }
    if let Some(replay) = &view.replay {
        let _ = writeln!(out, "> **Replay:** this drill {}.\n", replay.describe());
    }

    let _ = writeln!(out, "## Summary\n");
    let summary = text_of(view, &["summary"]);
    let _ = writeln!(
        out,
        "{}\n",
        summary.unwrap_or_else(
            || "_One or two sentences: what broke, for whom, for how long._".into()
        )
    );

    let mut used: Vec<&str> = vec!["summary"];
    for (heading, keys, prompt) in WRITTEN {
        let _ = writeln!(out, "## {heading}\n");
        match text_of(view, keys) {
            Some(text) => {
                let _ = writeln!(out, "{text}\n");
            }
            None => {
                let _ = writeln!(out, "_{prompt}_\n");
            }
        }
        used.extend(keys);
        if let Some(facts) = seeded_facts(heading, &stamps) {
            let _ = writeln!(out, "{facts}\n");
        }
    }

    let _ = writeln!(out, "## Action items\n");
    action_items(&mut out, view);

    changes_to_production(&mut out, view);

    let _ = writeln!(out, "## Lessons learned\n");
    for (heading, prompt) in [
        ("What went well", "What helped: tools, people, process."),
        ("What went wrong", "What hindered or slowed the response."),
        (
            "Where we got lucky",
            "What went right by chance, and would not next time.",
        ),
    ] {
        let _ = writeln!(out, "### {heading}\n\n_{prompt}_\n");
    }

    let _ = writeln!(out, "## Timeline\n");
    timeline(&mut out, view, &stamps);

    let _ = writeln!(out, "## Command\n");
    command(&mut out, record);
    checkins(&mut out, view);

    supporting(&mut out, view, &used);

    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out.push('\n');
    out
}

/// The trimmed Markdown of the first non-empty text field among `keys`.
fn text_of(view: &IncidentView, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|key| match view.field(key).map(|f| &f.value) {
            Some(FieldValue::Text(t)) if !t.trim().is_empty() => Some(t.trim().to_owned()),
            _ => None,
        })
}

/// Lines the lifecycle can already say for a section, if any.
fn seeded_facts(
    heading: &str,
    stamps: &std::collections::BTreeMap<Stage, DateTime<Utc>>,
) -> Option<String> {
    let at = |stage: Stage| stamps.get(&stage).copied();
    let impact = at(Stage::ImpactStarted);
    let after_impact = |stage: Stage| -> Option<String> {
        let t = at(stage)?;
        let since = impact
            .map(|i| format!(", {} after the impact started", duration(t - i)))
            .unwrap_or_default();
        Some(format!("{}{since}", format_time(t)))
    };
    match heading {
        "Impact" => {
            let start = impact?;
            let end = at(Stage::Mitigated).or(at(Stage::Resolved));
            Some(match end {
                Some(end) => format!(
                    "- Impact from {} to {} ({}).",
                    format_time(start),
                    format_time(end),
                    duration(end - start)
                ),
                None => format!("- Impact from {}; no end recorded.", format_time(start)),
            })
        }
        "Detection" => after_impact(Stage::Detected).map(|d| format!("- Detected {d}.")),
        "Resolution" => {
            let lines: Vec<String> = [
                (Stage::Mitigated, "Mitigated"),
                (Stage::Resolved, "Resolved"),
            ]
            .into_iter()
            .filter_map(|(stage, label)| after_impact(stage).map(|t| format!("- {label} {t}.")))
            .collect();
            (!lines.is_empty()).then(|| lines.join("\n"))
        }
        _ => None,
    }
}

/// The revert list's deviations, if the template has one.
fn deviations(view: &IncidentView) -> &[Deviation] {
    match view.field_of_kind(FieldKind::Deviations).map(|f| &f.value) {
        Some(FieldValue::Deviations(list)) => list,
        _ => &[],
    }
}

/// The TODOs, then every deviation still open: reverting it is an action item of its own.
fn action_items(out: &mut String, view: &IncidentView) {
    let items = match view.field(TODOS_KEY).map(|f| &f.value) {
        Some(FieldValue::Checklist(items)) => items.as_slice(),
        _ => &[],
    };
    let open: Vec<&Deviation> = deviations(view)
        .iter()
        .filter(|d| d.reverted.is_none())
        .collect();
    if items.is_empty() && open.is_empty() {
        let _ = writeln!(out, "_No TODOs were filed during the incident._\n");
        return;
    }
    let _ = writeln!(
        out,
        "Type is one of mitigate, prevent, process or other.\n\n\
         | Action item | Type | Owner | Bug | State |\n|---|---|---|---|---|"
    );
    for item in items {
        let cell = |v: &Option<String>| v.as_deref().map(inline).unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} |  | {} | {} | {} |",
            inline(&item.text),
            cell(&item.owner),
            cell(&item.bug),
            if item.done { "DONE" } else { "TODO" }
        );
    }
    for d in open {
        let _ = writeln!(
            out,
            "| Revert: {} ({}) | mitigate |  |  | TODO |",
            inline(&d.what),
            inline(&d.revert)
        );
    }
    out.push('\n');
}

/// The revert list and the operations log as they stood, when the template has them: what was changed away from
/// normal (and whether it was put back), and who changed production, freelancing marked.
fn changes_to_production(out: &mut String, view: &IncidentView) {
    if view.field_of_kind(FieldKind::Deviations).is_some() {
        let _ = writeln!(out, "## Deviations from normal (revert list)\n");
        let list = deviations(view);
        if list.is_empty() {
            let _ = writeln!(out, "_None were recorded._\n");
        } else {
            for d in list {
                let _ = writeln!(out, "{}", deviation_line(d));
            }
            out.push('\n');
        }
    }
    if let Some(FieldValue::Changes(list)) =
        view.field_of_kind(FieldKind::Changes).map(|f| &f.value)
    {
        let _ = writeln!(out, "## Operations log\n");
        if list.is_empty() {
            let _ = writeln!(out, "_No changes were logged._\n");
        } else {
            let freelanced = list.iter().filter(|c| c.uncoordinated).count();
            if freelanced > 0 {
                let _ = writeln!(
                    out,
                    "{freelanced} of {} changes were uncoordinated (made outside the Operations role).\n",
                    list.len()
                );
            }
            for c in list {
                let _ = writeln!(out, "{}", change_line(c));
            }
            out.push('\n');
        }
    }
}

/// Timeline entries and lifecycle milestones, oldest first; at the same moment a milestone comes before entries.
fn timeline(
    out: &mut String,
    view: &IncidentView,
    stamps: &std::collections::BTreeMap<Stage, DateTime<Utc>>,
) {
    let mut events: Vec<(DateTime<Utc>, u8, String, String)> = MILESTONES
        .iter()
        .filter_map(|(stage, label)| {
            let at = stamps.get(stage)?;
            Some((*at, 0, String::new(), format!("**{label}**")))
        })
        .collect();
    if let Some(FieldValue::Timeline(entries)) =
        view.field_of_kind(FieldKind::Timeline).map(|f| &f.value)
    {
        for entry in entries {
            let mut lines = entry.text.trim().lines();
            let mut text = format!(
                "{}: {}",
                inline(&entry.author),
                lines.next().unwrap_or_default()
            );
            for line in lines {
                let _ = write!(text, "\n  {line}");
            }
            events.push((entry.at, 1, entry.id.clone(), text));
        }
    }
    if events.is_empty() {
        let _ = writeln!(out, "_No entries._\n");
        return;
    }
    events.sort();
    let _ = writeln!(out, "All times UTC, oldest first.\n");
    for (at, _, _, text) in events {
        let _ = writeln!(out, "- {} {text}", format_time(at));
    }
    out.push('\n');
}

fn command(out: &mut String, record: &Record) {
    if record.roles.is_empty() {
        let _ = writeln!(out, "_No role assignments recorded._\n");
        return;
    }
    let _ = writeln!(
        out,
        "Who held which role when (roles nobody else held stayed with the commander).\n\n\
         | Role | Person | From | To |\n|---|---|---|---|"
    );
    for span in &record.roles {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            span.role.label(),
            inline(&span.person),
            format_time(span.from),
            span.to.map(format_time).unwrap_or_else(|| "—".into())
        );
    }
    out.push('\n');
    let handoffs = record.handoffs();
    let _ = writeln!(
        out,
        "Command changed hands {handoffs} time{}.\n",
        if handoffs == 1 { "" } else { "s" }
    );
}

/// The commander's check-ins in one line, where the template turned them on: how often the approach was
/// reconsidered, and who raised the help flag (how often).
fn checkins(out: &mut String, view: &IncidentView) {
    let Some(checkins) = &view.checkins else {
        return;
    };
    let mut parts = Vec::new();
    if checkins.reconsider_minutes.is_some() {
        let n = checkins.reconsiderations;
        parts.push(format!(
            "the approach was reconsidered {n} time{}",
            if n == 1 { "" } else { "s" }
        ));
    }
    if checkins.help_flag {
        let raised: Vec<String> = checkins
            .help
            .iter()
            .filter(|(_, flag)| flag.raised > 0)
            .map(|(person, flag)| format!("{} ({})", inline(person), flag.raised))
            .collect();
        parts.push(if raised.is_empty() {
            "no help flag was raised".to_owned()
        } else {
            format!("help flags were raised by {}", raised.join(", "))
        });
    }
    let _ = writeln!(out, "**Check-ins:** {}.\n", parts.join("; "));
}

/// The other prose fields, as the responders last left them.
fn supporting(out: &mut String, view: &IncidentView, used: &[&str]) {
    let rest: Vec<_> = view
        .fields
        .iter()
        .filter(|f| f.def.kind == FieldKind::Markdown && !used.contains(&f.def.key.as_str()))
        .filter_map(|f| match &f.value {
            FieldValue::Text(t) if !t.trim().is_empty() => Some((f, t.trim())),
            _ => None,
        })
        .collect();
    if rest.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Supporting information\n\nFrom the state document, as last updated.\n"
    );
    for (field, text) in rest {
        let _ = writeln!(out, "### {}\n\n{text}\n", inline(&field.def.label));
    }
}
