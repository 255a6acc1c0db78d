//! Chat channels bound to incidents (issue 21): the types every chat network's bot shares, and the bots.
//!
//! The chat core (binding, the channel log, commands, identity mapping) is the CHAT branch's; this file holds the
//! contract's shared types so the IRC bot builds on its own, and is replaced by that branch's `chat.rs` at merge.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod irc;

/// Which chat network a channel is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// An IRC network (`[irc]`).
    Irc,
    /// A Slack workspace.
    Slack,
}

impl Network {
    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Irc => "irc",
            Network::Slack => "slack",
        }
    }
}

/// Who said a line, as the network tells it. People are mapped from it by `[[chat.people]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speaker {
    /// What is shown in the log: the IRC nick, the Slack user id.
    pub name: String,
    /// IRC: the full `nick!user@host` prefix, which `irc = "…"` masks match. `None` on Slack.
    pub mask: Option<String>,
    /// IRC: the services account of an IRCv3 `account-tag`, which `irc-account = "…"` matches.
    pub account: Option<String>,
}

/// A line said in a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    /// The network.
    pub network: Network,
    /// IRC: the channel name as the server sends it; Slack: the channel id.
    pub channel: String,
    /// The network's id of the line when it has one (Slack `ts`); IRC lines have none.
    pub id: Option<String>,
    /// Who said it.
    pub speaker: Speaker,
    /// What was said, formatting stripped.
    pub text: String,
    /// When it was said (IRCv3 `server-time` when offered, else when the bot read it).
    pub at: DateTime<Utc>,
}
