//! The commands said in a bound channel, parsed: the timeline prefix (`!tl <text>`, configurable) and `!status`,
//! `!status <state>`, `!summary <text>`, `!sev <severity>`, `!role <role> <person>`, `!handoff <role> <person>`,
//! `!ack`, `!update`, `!help`. Parsing is pure, so every hostile shape of a line is tested here; what a command
//! may do is the command rules' to decide, as for HTTP.

use incident_doc::MAX_SHORT_CHARS;
use incident_doc::schema::{Role, Status};

/// One command from a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A timeline entry with this text.
    Timeline(String),
    /// A timeline entry with this text, dated (a line promoted by a reaction, at the time it was said).
    Entry(String, chrono::DateTime<chrono::Utc>),
    /// `!status`: say the incident's state; with a state, move to it.
    Status(Option<Status>),
    /// `!summary <text>`: replace the summary.
    Summary(String),
    /// `!sev <severity>`: set the severity (an option of the template's severity field).
    Severity(String),
    /// `!role <role> <person>` (`none` clears): assign a role.
    Role(Role, Option<String>),
    /// `!handoff <role> <person>`: propose a handoff.
    Handoff(Role, String),
    /// `!ack`: accept the handoff proposed to the speaker.
    Ack,
    /// `!update`: say the status update's text.
    Update,
    /// `!help`: list the commands.
    Help,
}

/// The command a line holds: `Ok(None)` for conversation (and unknown `!words`, which other bots may own), `Err`
/// with a one-line refusal for a command said wrong.
pub fn parse(line: &str, prefix: &str) -> Result<Option<Command>, String> {
    if let Some(text) = line.strip_prefix(prefix) {
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("say what happened after {}", prefix.trim()));
        }
        return Ok(Some(Command::Timeline(text.to_owned())));
    }
    let Some(rest) = line.strip_prefix('!') else {
        return Ok(None);
    };
    let rest = rest.trim();
    let (word, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let args = args.trim();
    let command = match word.to_ascii_lowercase().as_str() {
        "status" if args.is_empty() => Command::Status(None),
        "status" => Command::Status(Some(args.to_ascii_lowercase().parse().map_err(|()| {
            format!(
                "unknown status {args:?}: one of {}",
                Status::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?)),
        "summary" if args.is_empty() => return Err("usage: !summary <text>".into()),
        "summary" => Command::Summary(args.to_owned()),
        "sev" | "severity" => {
            let value = one_word(args, "usage: !sev SEV1")?;
            Command::Severity(value.to_ascii_uppercase())
        }
        "role" => {
            let (role, person) = role_and_person(args, "usage: !role ops alice (or none)")?;
            let person = (!person.eq_ignore_ascii_case("none")).then(|| person.to_owned());
            Command::Role(role, person)
        }
        "handoff" => {
            let (role, person) = role_and_person(args, "usage: !handoff commander bob")?;
            Command::Handoff(role, person.to_owned())
        }
        "ack" if args.is_empty() => Command::Ack,
        "update" if args.is_empty() => Command::Update,
        "help" => Command::Help,
        "ack" | "update" => return Err(format!("!{word} takes nothing after it")),
        _ => return Ok(None),
    };
    Ok(Some(command))
}

/// A role as people say it in chat: `ic`/`commander`, `ops`/`operations`, `comms`/`communications`, `planning`.
pub fn role(word: &str) -> Option<Role> {
    match word.to_ascii_lowercase().as_str() {
        "ic" | "commander" | "incident-commander" => Some(Role::Commander),
        "ops" | "operations" => Some(Role::Operations),
        "comms" | "communications" => Some(Role::Communications),
        "planning" | "plans" => Some(Role::Planning),
        _ => None,
    }
}

fn one_word<'a>(args: &'a str, usage: &str) -> Result<&'a str, String> {
    if args.is_empty()
        || args.contains(char::is_whitespace)
        || args.chars().count() > MAX_SHORT_CHARS
    {
        return Err(usage.to_owned());
    }
    Ok(args)
}

fn role_and_person<'a>(args: &'a str, usage: &str) -> Result<(Role, &'a str), String> {
    let mut words = args.split_whitespace();
    let (Some(role_word), Some(person), None) = (words.next(), words.next(), words.next()) else {
        return Err(usage.to_owned());
    };
    let role = role(role_word)
        .ok_or_else(|| format!("unknown role {role_word:?}: ic, ops, comms or planning"))?;
    let person = one_word(person, usage)?;
    Ok((role, person))
}

/// `!help`'s answer, one line.
pub fn help(prefix: &str) -> String {
    format!(
        "{}<text> adds a timeline entry; !status [state]; !summary <text>; !sev SEV1; !role ops alice; \
         !handoff commander bob; !ack (accept a handoff to you); !update (the status update); !help",
        prefix
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Option<Command>, String> {
        parse(line, "!tl ")
    }

    #[test]
    fn commands_parse_with_aliases() {
        assert_eq!(
            p("!tl rolled back deploy 4411"),
            Ok(Some(Command::Timeline("rolled back deploy 4411".into())))
        );
        assert_eq!(p("!status"), Ok(Some(Command::Status(None))));
        assert_eq!(
            p("!STATUS Mitigated"),
            Ok(Some(Command::Status(Some(Status::Mitigated))))
        );
        assert_eq!(
            p("!summary  Checkout 5xx in EU  "),
            Ok(Some(Command::Summary("Checkout 5xx in EU".into())))
        );
        assert_eq!(p("!sev sev1"), Ok(Some(Command::Severity("SEV1".into()))));
        assert_eq!(
            p("!role ops alice"),
            Ok(Some(Command::Role(Role::Operations, Some("alice".into()))))
        );
        assert_eq!(
            p("!role comms none"),
            Ok(Some(Command::Role(Role::Communications, None)))
        );
        assert_eq!(
            p("!handoff ic bob"),
            Ok(Some(Command::Handoff(Role::Commander, "bob".into())))
        );
        assert_eq!(p("!ack"), Ok(Some(Command::Ack)));
        assert_eq!(p("!update"), Ok(Some(Command::Update)));
        assert_eq!(p("!help me"), Ok(Some(Command::Help)));
        // A custom prefix.
        assert_eq!(
            parse("tl: db failover", "tl: "),
            Ok(Some(Command::Timeline("db failover".into())))
        );
    }

    #[test]
    fn conversation_and_hostile_lines_are_not_commands() {
        for line in [
            "hello",
            "",
            " !status",
            "!!",
            "!",
            "!deploy prod",
            "!tl",
            "\u{202e}!status",
            "!\u{0}",
        ] {
            assert!(matches!(p(line), Ok(None) | Err(_)), "{line:?}");
            assert_ne!(p(line), Ok(Some(Command::Status(None))), "{line:?}");
        }
        assert!(p("!tl    ").is_err());
        assert!(p("!status exploded").is_err());
        assert!(p("!sev").is_err());
        assert!(p("!sev SEV1 now").is_err());
        assert!(p(&format!("!sev {}", "S".repeat(500))).is_err());
        assert!(p("!role ops").is_err());
        assert!(p("!role boss alice").is_err());
        assert!(p("!role ops alice bob").is_err());
        assert!(p("!handoff commander").is_err());
        assert!(p("!ack now").is_err());
        assert!(p("!summary").is_err());
        // Control characters and markup are the operations' to judge as text, never a second command.
        assert_eq!(
            p("!tl a\r\n!status closed"),
            Ok(Some(Command::Timeline("a\r\n!status closed".into())))
        );
    }
}
