//! The chat core: what a line said in an incident's bound channel does, whichever network it came from. The IRC
//! bot (`chat/irc.rs`) and the Slack routes (`api/slack.rs`) hand every line to [`Chat::hear`], which logs it
//! beside the document (`store::chat_log`), and carries out the timeline prefix or the command it holds through
//! the same typed operations and command rules as HTTP, as the person `[[chat.people]]` maps the speaker to
//! ([`people`]). What the incident's changes cause in the channel (a status change, a handoff) is not said here but
//! queued with the change ([`posts`]); the bots send the queue.

pub mod commands;
pub mod irc;
pub mod people;
pub mod posts;
pub mod slack;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use incident_doc::schema::Role;
use incident_doc::update::UpdateFormat;
use incident_doc::{Editor, Operation};
use tokio::sync::Notify;

pub use incident_doc::channel::{Channel, Network};

use crate::auth::Scope;
use crate::config::ChatSettings;
use crate::document::{DocError, DocHandle, Registry};
use crate::reads::HeavyReads;
use crate::store::chat_log::NewChatLine;
use crate::store::{IncidentSummary, Store, StoreError};
use commands::Command;
use people::{People, Person};

/// Who said a line, as the network tells it. People are mapped from it by `[[chat.people]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speaker {
    /// What is shown in the log: the IRC nick, the Slack user id.
    pub name: String,
    /// IRC: the full `nick!user@host` prefix, which `irc = "…"` masks in `[[chat.people]]` match (`*`/`?`
    /// wildcards; a bare nick `alice` means `alice!*@*`). `None` on Slack.
    pub mask: Option<String>,
    /// IRC: the services account of an IRCv3 `account-tag`, which `irc-account = "…"` matches. `None` otherwise.
    pub account: Option<String>,
}

/// A line said in a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    /// The network.
    pub network: Network,
    /// IRC: the channel name as the server sends it (`#inc-465-checkout`, compared case-insensitively); Slack: the
    /// channel id (`C0123ABCD`).
    pub channel: String,
    /// The network's id of the line when it has one (Slack `ts`); lines with an id are logged once whatever
    /// repeats them (Slack retries, two nodes). IRC lines have none.
    pub id: Option<String>,
    /// Who said it.
    pub speaker: Speaker,
    /// What was said.
    pub text: String,
    /// When it was said.
    pub at: DateTime<Utc>,
}

/// The chat core, one per server, in `AppState` as `chat: Arc<Chat>` (also reachable by the bots).
pub struct Chat {
    store: Arc<dyn Store>,
    registry: Registry,
    reads: HeavyReads,
    /// The timeline prefix (`!tl `).
    prefix: String,
    people: People,
    /// Woken when a channel was bound or unbound on this node (other nodes' changes are seen by polling
    /// [`Chat::channels`] every few seconds).
    pub changed: Notify,
}

/// A `[chat]` table that cannot work: a person without a name, an unknown scope, a mask that matches everyone.
#[derive(Debug, thiserror::Error)]
#[error("[chat]: {0}")]
pub struct ChatError(pub String);

impl Chat {
    /// The chat core for `settings` (the defaults without a `[chat]` table), checked.
    pub fn new(
        store: Arc<dyn Store>,
        registry: Registry,
        reads: HeavyReads,
        settings: &ChatSettings,
    ) -> Result<Chat, ChatError> {
        if settings.timeline_prefix.trim().is_empty() {
            return Err(ChatError("timeline-prefix must not be empty".into()));
        }
        Ok(Chat {
            store,
            registry,
            reads,
            prefix: settings.timeline_prefix.clone(),
            people: People::new(&settings.people).map_err(ChatError)?,
            changed: Notify::new(),
        })
    }

    /// Logs a line said in a bound channel (nothing for a channel bound to no incident), carries out the timeline
    /// prefix or the command it holds, through the same typed operations and command rules as HTTP, as the mapped
    /// person. Returns the lines to say back in the channel (a refusal, `!status`'s answer, …); posts that follow
    /// from document changes (a status change) are not returned but queued in the outbox.
    pub async fn hear(&self, heard: Heard) -> Vec<String> {
        match self.hear_inner(heard).await {
            Ok(lines) => lines,
            Err(e) => {
                tracing::warn!(error = %e, "a chat line could not be handled");
                vec![format!(
                    "commandpost could not do that just now ({e}); try again"
                )]
            }
        }
    }

    async fn hear_inner(&self, heard: Heard) -> Result<Vec<String>, StoreError> {
        let Some(incident) = self
            .store
            .incident_by_channel(heard.network, &heard.channel)
            .await?
        else {
            return Ok(Vec::new());
        };
        let person = self.people.find(heard.network, &heard.speaker);
        let line = NewChatLine {
            doc: incident.id,
            network: heard.network,
            channel: heard.channel.clone(),
            line_id: heard.id.clone(),
            speaker: loggable(&heard.speaker.name),
            person: person.map(|p| p.name.clone()),
            text: loggable(&heard.text),
            at: heard.at,
        };
        let added = self.store.append_chat(vec![line]).await?;
        if added == 0 {
            // Logged already (a retried Slack event, another node): so was its command.
            return Ok(Vec::new());
        }
        let command = match commands::parse(&heard.text, &self.prefix) {
            Ok(Some(command)) => command,
            Ok(None) => return Ok(Vec::new()),
            Err(refusal) => return Ok(vec![refusal]),
        };
        Ok(self.run(&incident, &heard.speaker, person, command).await)
    }

    /// Runs a command given outside the channel's conversation (a Slack slash command: `/incident sev SEV1` is
    /// `sev SEV1`), for the incident bound to `channel`, without logging it. Returns the answer's lines.
    pub async fn command(
        &self,
        network: Network,
        channel: &str,
        speaker: &Speaker,
        text: &str,
    ) -> Vec<String> {
        let incident = match self.store.incident_by_channel(network, channel).await {
            Ok(Some(incident)) => incident,
            Ok(None) => {
                return vec![
                    "this channel is bound to no open incident: bind it on the incident's page"
                        .to_owned(),
                ];
            }
            Err(e) => {
                return vec![format!(
                    "commandpost could not do that just now ({e}); try again"
                )];
            }
        };
        let line = format!("!{}", text.trim());
        let command = match commands::parse(&line, &self.prefix) {
            Ok(Some(command)) => command,
            Ok(None) => return vec![commands::help(&self.prefix)],
            Err(refusal) => return vec![refusal],
        };
        let person = self.people.find(network, speaker);
        self.run(&incident, speaker, person, command).await
    }

    /// Makes the logged line `line_id` of `channel` a timeline entry by the person `reactor` speaks for (a Slack
    /// reaction), dated when the line was said and naming who said it. Returns what to say in the channel.
    pub async fn promote(
        &self,
        network: Network,
        channel: &str,
        line_id: &str,
        reactor: &Speaker,
    ) -> Vec<String> {
        let found = async {
            let Some(incident) = self.store.incident_by_channel(network, channel).await? else {
                return Ok(None);
            };
            let line = self
                .store
                .chat_line(incident.id, network, channel, line_id)
                .await?;
            Ok::<_, StoreError>(line.map(|line| (incident, line)))
        }
        .await;
        let (incident, line) = match found {
            Ok(Some(found)) => found,
            Ok(None) => return Vec::new(),
            Err(e) => {
                return vec![format!(
                    "commandpost could not do that just now ({e}); try again"
                )];
            }
        };
        let who = line.person.as_deref().unwrap_or(&line.speaker);
        let command = Command::Entry(format!("{who} (in chat): {}", line.text), line.at);
        let person = self.people.find(network, reactor);
        self.run(&incident, reactor, person, command).await
    }

    /// Carries out one command for `person` (the speaker's mapping) in `incident`'s channel.
    async fn run(
        &self,
        incident: &IncidentSummary,
        speaker: &Speaker,
        person: Option<&Person>,
        command: Command,
    ) -> Vec<String> {
        if command == Command::Help {
            return vec![commands::help(&self.prefix)];
        }
        let Some(person) = person else {
            return vec![format!(
                "I don't know who you are: ask an admin to map {} in [[chat.people]]",
                speaker.name
            )];
        };
        let admin = person.scope == Scope::Admin;
        if !incident.visible_to(&person.name, admin) {
            return vec![format!(
                "{} is not a member of this restricted incident: ask its commander to add them",
                person.name
            )];
        }
        let handle = match self.registry.get(incident.id).await {
            Ok(Some(handle)) => handle,
            Ok(None) => return vec!["this incident is gone".to_owned()],
            Err(e) => return vec![format!("commandpost could not load the incident ({e})")],
        };
        let reply = match command {
            Command::Status(None) => self.status_line(&handle).await,
            Command::Update => self.update_text(&handle).await,
            command => {
                if person.scope == Scope::Read {
                    return vec![format!(
                        "{} may only read incidents (scope read in [[chat.people]])",
                        person.name
                    )];
                }
                let editor = Editor::new(person.name.clone(), Utc::now()).with_admin(admin);
                self.edit(&handle, command, editor).await
            }
        };
        match reply {
            Ok(lines) => lines,
            Err(e) => vec![refusal(&e)],
        }
    }

    /// Applies the command's operation as `editor`; returns what to say when the change itself posts nothing.
    async fn edit(
        &self,
        handle: &DocHandle,
        command: Command,
        editor: Editor,
    ) -> Result<Vec<String>, DocError> {
        let name = editor.name.clone();
        let (op, said) = match command {
            Command::Timeline(text) => (
                Operation::AddTimelineEntry { text, at: None },
                Some("noted in the timeline".to_owned()),
            ),
            Command::Entry(text, at) => (
                Operation::AddTimelineEntry { text, at: Some(at) },
                Some("noted in the timeline".to_owned()),
            ),
            Command::Summary(text) => (
                Operation::SetText {
                    field: incident_doc::signals::SUMMARY_KEY.to_owned(),
                    text,
                },
                Some("summary updated".to_owned()),
            ),
            Command::Status(Some(status)) => (
                Operation::SetStatus {
                    status,
                    override_reason: None,
                },
                None,
            ),
            Command::Severity(value) => (
                Operation::SetChoice {
                    field: incident_doc::schema::SEVERITY_KEY.to_owned(),
                    value: Some(value),
                },
                None,
            ),
            Command::Role(role, person) => {
                let said = match &person {
                    Some(p) => format!("{p} is now the {}", role.label()),
                    None => format!("the {} is unassigned", role.label()),
                };
                (Operation::AssignRole { role, person }, Some(said))
            }
            Command::Handoff(role, to) => (Operation::ProposeHandoff { role, to }, None),
            Command::Ack => {
                let handoffs = handle.read(|incident| incident.signals().handoffs).await?;
                let mine: Vec<Role> = handoffs
                    .iter()
                    .filter(|(_, to)| **to == name)
                    .map(|(role, _)| *role)
                    .collect();
                let [role] = mine.as_slice() else {
                    return Ok(vec![if mine.is_empty() {
                        format!("no handoff is waiting for {name}")
                    } else {
                        format!(
                            "several handoffs wait for {name}: accept each on the incident page"
                        )
                    }]);
                };
                (Operation::AcceptHandoff { role: *role }, None)
            }
            Command::Help | Command::Status(None) | Command::Update => return Ok(Vec::new()),
        };
        handle.apply(vec![op], editor).await?;
        Ok(said.into_iter().collect())
    }

    /// `!status`: title, status, severity, commander, last update, in one line.
    async fn status_line(&self, handle: &DocHandle) -> Result<Vec<String>, DocError> {
        let line = handle
            .read(|incident| {
                let signals = incident.signals();
                let h = &signals.headline;
                let last = incident.last_update().map_or_else(
                    || "no update sent yet".to_owned(),
                    |u| {
                        format!(
                            "last update {} by {}",
                            incident_doc::export::format_time(u.at),
                            u.by
                        )
                    },
                );
                let title = posts::name(&signals);
                format!(
                    "{title}: status {}, severity {}, commander {}, {last}",
                    h.status.as_deref().unwrap_or("none"),
                    h.severity.as_deref().unwrap_or("none"),
                    signals
                        .roles
                        .get(&Role::Commander)
                        .map_or("nobody", String::as_str),
                )
            })
            .await?;
        Ok(vec![line])
    }

    /// `!update`: the status update's text, as `GET /api/incidents/{id}/update` gives it.
    async fn update_text(&self, handle: &DocHandle) -> Result<Vec<String>, DocError> {
        let now = Utc::now();
        let text = self
            .reads
            .run(handle, move |incident| {
                Ok(crate::export::status_update(incident, now, UpdateFormat::Text)?.0)
            })
            .await;
        match text {
            Ok(text) => Ok(vec![text.trim_end().to_owned()]),
            Err(e) => Ok(vec![format!(
                "commandpost could not write the update ({e})"
            )]),
        }
    }

    /// The channels of `network` bound to open incidents: the IRC bot joins exactly these, and leaves others.
    pub async fn channels(&self, network: Network) -> Result<Vec<String>, StoreError> {
        Ok(self
            .store
            .bound_channels(network)
            .await?
            .iter()
            .map(|c| c.address().to_owned())
            .collect())
    }

    /// The person `speaker` speaks for on `network`, if `[[chat.people]]` maps them.
    pub fn person(&self, network: Network, speaker: &Speaker) -> Option<&Person> {
        self.people.find(network, speaker)
    }
}

/// The longest line logged, in characters (Slack's own message limit; an IRC line is far shorter).
pub const MAX_LINE_CHARS: usize = 40_000;

/// Text as the log keeps it: as said, but without NUL (which PostgreSQL's text cannot hold; shown as U+FFFD) and
/// cut to [`MAX_LINE_CHARS`].
fn loggable(text: &str) -> String {
    text.chars()
        .take(MAX_LINE_CHARS)
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .collect()
}

/// A refused command in one line: the rule's own words for a refusal, a plain word for the rest.
fn refusal(e: &DocError) -> String {
    match e {
        DocError::Refused(op) => format!("refused: {op}"),
        DocError::TooLarge(_) => "refused: the incident document is full".to_owned(),
        DocError::Storage(_) | DocError::Gone => {
            "commandpost could not save that just now; try again".to_owned()
        }
    }
}
