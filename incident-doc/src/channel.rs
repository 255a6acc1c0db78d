//! The incident's command post in chat: the IRC or Slack channel bound to it (root key [`keys::CHAT_CHANNEL`],
//! `{network, name, id?}`), where the server's bots log the traffic and post the incident's events.
//!
//! Binding and unbinding are the commander's (or an administrator's) typed operations (`bindChannel`,
//! `unbindChannel`), each recorded in the timeline; the key is the server's to write, so a raw change to it over
//! `/sync` is put back like any other server-owned key. Names are checked here, where the browser's replica checks
//! them too, so a channel the network would refuse never reaches the document.

use automerge::{ROOT, ReadDoc};
use serde::{Deserialize, Serialize};

use crate::edit::OpError;
use crate::incident::Incident;
use crate::read::Reader;
use crate::schema::keys;

/// Which chat network a channel is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// An IRC network (the server's `[irc]` bot).
    Irc,
    /// A Slack workspace (the server's `[slack]` app).
    Slack,
}

impl Network {
    /// The name in JSON, the index column and configuration (`irc`, `slack`).
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Irc => "irc",
            Network::Slack => "slack",
        }
    }

    /// How a person reads the network's name.
    pub fn label(self) -> &'static str {
        match self {
            Network::Irc => "IRC",
            Network::Slack => "Slack",
        }
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Network, String> {
        match s {
            "irc" => Ok(Network::Irc),
            "slack" => Ok(Network::Slack),
            other => Err(format!(
                "unknown chat network {other:?} (expected irc or slack)"
            )),
        }
    }
}

/// The channel an incident is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Channel {
    /// The network.
    pub network: Network,
    /// IRC: the channel as joined (`#inc-465-checkout`); Slack: the channel's name without `#`.
    pub name: String,
    /// Slack: the channel id (`C0123ABCD`), which events and posts use; absent on IRC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The longest IRC channel name commandpost binds (RFC 2812 allows 50 characters, prefix included).
pub const IRC_MAX: usize = 50;
/// The longest Slack channel name (Slack's limit).
pub const SLACK_MAX: usize = 80;

impl Channel {
    /// Checks and normalises a channel as typed: an IRC name starting `#` or `&` without spaces, commas, BEL or
    /// control characters; a Slack name of lowercase letters, digits, `-` and `_` (a leading `#` is dropped) with
    /// the channel id Slack gave it.
    pub fn new(network: Network, name: &str, id: Option<&str>) -> Result<Channel, OpError> {
        let name = name.trim();
        let bad = |why: &str| OpError::InvalidValue(format!("channel {name:?}: {why}"));
        match network {
            Network::Irc => {
                if !(name.starts_with('#') || name.starts_with('&')) || name.chars().count() < 2 {
                    return Err(bad("an IRC channel starts with # or & and has a name"));
                }
                if name.chars().count() > IRC_MAX {
                    return Err(bad("an IRC channel name has at most 50 characters"));
                }
                if name
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == ':')
                {
                    return Err(bad(
                        "an IRC channel name has no spaces, commas, colons or control characters",
                    ));
                }
                if id.is_some() {
                    return Err(bad("an IRC channel has no id"));
                }
                Ok(Channel {
                    network,
                    name: name.to_owned(),
                    id: None,
                })
            }
            Network::Slack => {
                let name = name.strip_prefix('#').unwrap_or(name);
                if name.is_empty() || name.chars().count() > SLACK_MAX {
                    return Err(bad("a Slack channel name has 1 to 80 characters"));
                }
                if !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
                {
                    return Err(bad(
                        "a Slack channel name has only lowercase letters, digits, - and _",
                    ));
                }
                let id = id.map(str::trim).unwrap_or_default();
                if !is_slack_id(id) {
                    return Err(bad(
                        "a Slack channel needs its id (C… or G…, as Slack shows it)",
                    ));
                }
                Ok(Channel {
                    network,
                    name: name.to_owned(),
                    id: Some(id.to_owned()),
                })
            }
        }
    }

    /// The channel as the network addresses it: the IRC name, the Slack id.
    pub fn address(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.name)
    }

    /// How a person reads it: `#inc-465-checkout (IRC)`.
    pub fn display(&self) -> String {
        match self.network {
            Network::Irc => format!("{} (IRC)", self.name),
            Network::Slack => format!("#{} (Slack)", self.name),
        }
    }
}

/// A Slack conversation id: `C`, `G` or `D` and 8 to 20 uppercase letters or digits.
pub fn is_slack_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some('C' | 'G'))
        && (9..=21).contains(&id.len())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// The channel name a template's rule (`inc-{number}-{slug}`) gives an incident: `{number}` is the incident number,
/// `{slug}` the title in lowercase ASCII letters and digits joined by dashes; the whole is cut to the network's
/// limit without a trailing dash.
pub fn channel_name(rule: &str, network: Network, number: Option<i64>, title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    let number = number.map(|n| n.to_string()).unwrap_or_default();
    let name = rule.replace("{number}", &number).replace("{slug}", slug);
    let max = match network {
        Network::Irc => IRC_MAX,
        Network::Slack => SLACK_MAX,
    };
    let cut: String = name.chars().take(max).collect();
    cut.trim_end_matches(['-', '_']).to_owned()
}

/// The `n`th candidate for `name` when it is taken: `name` itself first, then `name-2` … cut so that it stays
/// within `max` characters.
pub fn suffixed(name: &str, n: usize, max: usize) -> String {
    if n <= 1 {
        return name.to_owned();
    }
    let suffix = format!("-{n}");
    let keep = max.saturating_sub(suffix.len());
    format!("{}{suffix}", name.chars().take(keep).collect::<String>())
}

/// The channel as written, if any.
pub(crate) fn read_channel<D: ReadDoc>(r: &Reader<'_, D>) -> Option<Channel> {
    let map = r.map(&ROOT, keys::CHAT_CHANNEL)?;
    Some(Channel {
        network: r.str(&map, "network")?.parse().ok()?,
        name: r.str(&map, "name")?,
        id: r.str(&map, "id"),
    })
}

impl Incident {
    /// The channel bound to the incident, if any: one lookup of a root key.
    pub fn channel(&self) -> Option<Channel> {
        read_channel(&Reader::new(self.doc(), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_checked_per_network() {
        assert!(Channel::new(Network::Irc, "#inc-1-db", None).is_ok());
        assert!(Channel::new(Network::Irc, " &ops ", None).is_ok());
        for bad in [
            "inc",
            "#",
            "#a b",
            "#a,b",
            "#a\u{7}",
            "#a\r\nPRIVMSG #x :hi",
            &format!("#{}", "a".repeat(50)),
        ] {
            assert!(Channel::new(Network::Irc, bad, None).is_err(), "{bad:?}");
        }
        assert!(Channel::new(Network::Irc, "#ok", Some("C1")).is_err());
        let slack = Channel::new(Network::Slack, "#inc-1-db", Some("C0123ABCD")).expect("valid");
        assert_eq!(slack.name, "inc-1-db");
        assert_eq!(slack.address(), "C0123ABCD");
        for (name, id) in [
            ("Inc", Some("C0123ABCD")),
            ("inc 1", Some("C0123ABCD")),
            ("inc", None),
            ("inc", Some("c0123abcd")),
            ("inc", Some("U0123ABCD")),
            ("inc", Some("C01")),
        ] {
            assert!(
                Channel::new(Network::Slack, name, id).is_err(),
                "{name:?} {id:?}"
            );
        }
    }

    #[test]
    fn naming_rules_slug_the_title_within_the_limit() {
        assert_eq!(
            channel_name(
                "#inc-{number}-{slug}",
                Network::Irc,
                Some(465),
                "Checkout: errors (EU) — 5xx!"
            ),
            "#inc-465-checkout-errors-eu-5xx"
        );
        assert_eq!(
            channel_name("inc-{number}-{slug}", Network::Slack, None, "Ünïcode only"),
            "inc--n-code-only"
        );
        let long = channel_name(
            "#inc-{number}-{slug}",
            Network::Irc,
            Some(1),
            &"word ".repeat(30),
        );
        assert!(
            long.chars().count() <= IRC_MAX && !long.ends_with('-'),
            "{long}"
        );
        assert!(Channel::new(Network::Irc, &long, None).is_ok());
    }
}
