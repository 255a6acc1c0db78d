//! Role rotation ("if you were the commander last time, take another role this time"), computed from the same
//! cached analytics rows as the insights, whose role intervals come from each incident's history: a person's role
//! history (`GET /api/people/{name}/roles`, real incidents and drills apart) and the people present ranked for
//! command by how long ago they last commanded a real incident (`GET /api/people/rotation`). Pure: the routes pass
//! the rows the caller may see.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use incident_doc::analytics::Facts;
use incident_doc::export::format_time;
use incident_doc::history::RoleSpan;
use incident_doc::schema::Role;
use serde::Serialize;
use utoipa::ToSchema;

/// One person's roles across the incidents the caller may see.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PersonRoles {
    /// The person (a token name).
    person: String,
    /// In real incidents.
    incidents: RoleHistory,
    /// In drills, counted apart: practice is not the real thing.
    drills: RoleHistory,
}

/// Roles held in one kind of incident.
#[derive(Debug, Default, Serialize, ToSchema)]
pub(super) struct RoleHistory {
    /// Per role, the commander's first.
    roles: Vec<RoleTally>,
    /// The incidents they held a role in, the latest first.
    held: Vec<HeldIn>,
}

/// How often and how long a person held one role.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RoleTally {
    /// The role.
    role: Role,
    /// In how many incidents.
    incidents: usize,
    /// For how long in all, in seconds (a role still held counts until now, or until the incident closed).
    seconds: i64,
    /// When they last held it (the end of the latest interval, or now while they hold it).
    last_held: DateTime<Utc>,
}

/// An incident a person held roles in.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct HeldIn {
    /// The incident's id.
    id: String,
    /// Its number.
    number: Option<i64>,
    /// Its title.
    title: String,
    /// The roles they held, in role order.
    roles: Vec<Role>,
    /// When they first took one.
    from: DateTime<Utc>,
}

/// When an interval ends: its own end, the incident's close, or now while it runs.
fn end_of(span: &RoleSpan, row: &Facts, now: DateTime<Utc>) -> DateTime<Utc> {
    span.to.or(row.closed_at).unwrap_or(now).max(span.from)
}

/// `person`'s role history in `rows`.
pub(super) fn person_roles(rows: &[Facts], person: &str, now: DateTime<Utc>) -> PersonRoles {
    let history = |drill: bool| {
        let mut tallies: BTreeMap<Role, RoleTally> = BTreeMap::new();
        let mut held = Vec::new();
        for row in rows.iter().filter(|row| row.drill == drill) {
            let spans: Vec<&RoleSpan> = row.roles.iter().filter(|s| s.person == person).collect();
            let Some(from) = spans.iter().map(|s| s.from).min() else {
                continue;
            };
            let mut roles: Vec<Role> = spans.iter().map(|s| s.role).collect();
            roles.sort();
            roles.dedup();
            for role in &roles {
                tallies
                    .entry(*role)
                    .or_insert(RoleTally {
                        role: *role,
                        incidents: 0,
                        seconds: 0,
                        last_held: from,
                    })
                    .incidents += 1;
            }
            for span in &spans {
                let end = end_of(span, row, now);
                if let Some(tally) = tallies.get_mut(&span.role) {
                    tally.seconds += (end - span.from).num_seconds();
                    tally.last_held = tally.last_held.max(end);
                }
            }
            held.push(HeldIn {
                id: row.id.clone(),
                number: row.number,
                title: row.title.clone(),
                roles,
                from,
            });
        }
        held.sort_by(|a, b| b.from.cmp(&a.from).then_with(|| a.id.cmp(&b.id)));
        RoleHistory {
            roles: tallies.into_values().collect(),
            held,
        }
    };
    PersonRoles {
        person: person.to_owned(),
        incidents: history(false),
        drills: history(true),
    }
}

/// The people present, ranked for command.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Rotation {
    /// Who was considered: the names asked about, or the people connected to this node.
    present: Vec<String>,
    /// The same people, those who commanded a real incident longest ago first (those who never did before them).
    candidates: Vec<Candidate>,
}

/// One person's case for taking command.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Candidate {
    /// The person.
    person: String,
    /// When they last held command in a real incident; absent if never.
    last_commanded: Option<DateTime<Utc>>,
    /// In how many real incidents they held command.
    commanded: usize,
    /// In how many drills they held command.
    drills_commanded: usize,
    /// Why they rank where they do, in words.
    reason: String,
}

/// Ranks `present` for command by their command history in `rows`.
pub(super) fn rotation(rows: &[Facts], present: Vec<String>, now: DateTime<Utc>) -> Rotation {
    let mut candidates: Vec<(Option<DateTime<Utc>>, Candidate)> = present
        .iter()
        .map(|person| {
            let commands = |drill: bool| {
                rows.iter().filter(move |row| row.drill == drill).filter_map(|row| {
                    let end = row
                        .roles
                        .iter()
                        .filter(|s| s.role == Role::Commander && s.person == *person)
                        .map(|s| end_of(s, row, now))
                        .max()?;
                    Some((end, row))
                })
            };
            let latest = commands(false).max_by_key(|(end, _)| *end);
            let commanded = commands(false).count();
            let drills_commanded = commands(true).count();
            let drills = match drills_commanded {
                0 => String::new(),
                1 => " (and 1 drill)".to_owned(),
                n => format!(" (and {n} drills)"),
            };
            let reason = match latest {
                None => format!("has not commanded an incident{drills}"),
                Some((end, row)) => {
                    let number = row.number.map(|n| format!("#{n} ")).unwrap_or_default();
                    let days = (now - end).num_days();
                    let ago = match days {
                        0 => "today".to_owned(),
                        1 => "1 day ago".to_owned(),
                        n => format!("{n} days ago"),
                    };
                    format!(
                        "last commanded {number}{} until {} ({ago}); {commanded} incident{} in all{drills}",
                        row.title,
                        format_time(end),
                        if commanded == 1 { "" } else { "s" }
                    )
                }
            };
            let last = latest.map(|(end, _)| end);
            let candidate = Candidate {
                person: person.clone(),
                last_commanded: last,
                commanded,
                drills_commanded,
                reason,
            };
            (last, candidate)
        })
        .collect();
    // `None` (never) sorts first; then the longest ago; ties by fewer commands, then by name.
    candidates.sort_by(|(a, x), (b, y)| {
        a.cmp(b)
            .then_with(|| x.commanded.cmp(&y.commanded))
            .then_with(|| x.person.cmp(&y.person))
    });
    Rotation {
        present,
        candidates: candidates.into_iter().map(|(_, c)| c).collect(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    fn t(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, 9, 0, 0)
            .single()
            .expect("valid")
    }

    fn row(id: &str, drill: bool, spans: &[(Role, &str, u32, Option<u32>)]) -> Facts {
        Facts {
            id: id.to_owned(),
            number: Some(1),
            title: id.to_owned(),
            drill,
            roles: spans
                .iter()
                .map(|(role, person, from, to)| RoleSpan {
                    role: *role,
                    person: (*person).to_owned(),
                    from: t(*from),
                    to: to.map(t),
                })
                .collect(),
            ..Facts::default()
        }
    }

    #[test]
    fn people_who_never_commanded_come_first_then_the_longest_ago() {
        let rows = [
            row("a", false, &[(Role::Commander, "alice", 1, Some(2))]),
            row(
                "b",
                false,
                &[
                    (Role::Commander, "bob", 10, Some(11)),
                    (Role::Operations, "carol", 10, Some(11)),
                ],
            ),
            row("d", true, &[(Role::Commander, "carol", 12, Some(13))]),
        ];
        let now = t(20);
        let ranked = rotation(
            &rows,
            vec!["bob".into(), "alice".into(), "carol".into()],
            now,
        );
        let order: Vec<&str> = ranked
            .candidates
            .iter()
            .map(|c| c.person.as_str())
            .collect();
        assert_eq!(order, ["carol", "alice", "bob"]);
        assert_eq!(
            ranked.candidates[0].reason,
            "has not commanded an incident (and 1 drill)"
        );
        assert!(
            ranked.candidates[1]
                .reason
                .starts_with("last commanded #1 a until"),
            "{}",
            ranked.candidates[1].reason
        );

        let carol = person_roles(&rows, "carol", now);
        assert_eq!(carol.incidents.roles.len(), 1);
        assert_eq!(carol.incidents.roles[0].role, Role::Operations);
        assert_eq!(
            carol.incidents.roles[0].seconds,
            Duration::days(1).num_seconds()
        );
        assert_eq!(carol.drills.held.len(), 1);
        assert_eq!(carol.drills.roles[0].role, Role::Commander);
    }
}
