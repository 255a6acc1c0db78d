//! Server settings: defaults, an optional TOML file, then environment variables and flags (which win).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::retention::RetentionSettings;
use crate::webhooks::{DeliverySettings, Endpoint, WebhookError, Webhooks};

/// Every setting of `commandpost serve`. In a config file, keys are written in kebab-case.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// PostgreSQL URL; when set, it is used instead of the embedded store.
    pub database_url: Option<String>,
    /// Largest `/sync` frame accepted, in bytes (a number, or a size such as `"16 MiB"`). A full Automerge document
    /// of a long incident must fit.
    #[serde(deserialize_with = "bytes")]
    pub max_frame_bytes: usize,
    /// Largest HTTP request body, in bytes (a number, or a size such as `"1 MiB"`).
    #[serde(deserialize_with = "bytes")]
    pub max_body_bytes: usize,
    /// Frames queued for one connection before it counts as not reading and is cut off.
    pub outbox_frames: usize,
    /// Seconds between server pings on `/sync`.
    pub ping_interval_secs: u64,
    /// Seconds of silence (no frame, no pong) after which a `/sync` connection is closed.
    pub idle_timeout_secs: u64,
    /// Seconds a document with no peers stays in memory.
    pub unload_after_secs: u64,
    /// Largest stored size of one document, in bytes: a sync message whose changes would take a document past it
    /// is refused (nothing stored), and HTTP edits to a document at the limit get 422. A number, or a size such as
    /// `"64 MiB"`.
    #[serde(deserialize_with = "bytes")]
    pub max_document_bytes: usize,
    /// Open `/sync` connections one token may have at once; the next upgrade gets 429.
    pub max_connections_per_token: usize,
    /// Sustained rate of change-carrying sync messages one connection may send, per second (token bucket);
    /// faster senders are throttled (their socket is read more slowly), not disconnected.
    pub max_edits_per_sec: u32,
    /// How many change-carrying sync messages a connection may send in a burst above the sustained rate.
    pub edit_burst: u32,
    /// Sustained rate of ephemeral messages (presence) one connection may send, per second (token bucket); a
    /// faster sender gets an `error` and is disconnected. The web client sends one every 10 s and one per focus
    /// change.
    pub max_ephemeral_per_sec: u32,
    /// How many ephemeral messages a connection may send in a burst above the sustained rate.
    pub ephemeral_burst: u32,
    /// Outgoing webhook endpoints (`[[webhooks]]` tables; `docs/integrations.md`).
    pub webhooks: Vec<Endpoint>,
    /// Timing of webhook deliveries (`[webhook-delivery]`).
    pub webhook_delivery: DeliverySettings,
    /// The alert label that names the incident in Alertmanager payloads (`/api/hooks/alertmanager`).
    pub alertmanager_label: String,
    /// A directory of the team's own templates (`*.md`, `templates/README.md`), offered beside the built-in ones
    /// and re-read every second; a file with a built-in's id overrides it.
    pub templates_dir: Option<PathBuf>,
    /// How long closed incidents are kept (`[retention]`); without it, for ever.
    pub retention: RetentionSettings,
    /// Heavy reads (history, exports, the postmortem, the status update, the JSON view) computing at once; as many
    /// again may wait, and further ones get 503 with `Retry-After`. Defaults to the number of cores.
    pub max_heavy_reads: usize,
    /// Where scheduled backups (`backup-every`) are written; created if missing.
    pub backup_dir: Option<PathBuf>,
    /// How often the server backs its store up into `backup-dir` (`6h`, `30m`, `1d`, `90s`, `500ms`, or seconds);
    /// none by default, since many teams schedule `commandpost backup` themselves.
    #[serde(deserialize_with = "optional_duration")]
    pub backup_every: Option<Duration>,
    /// How many scheduled backups stay in `backup-dir`: older ones are deleted after each successful backup.
    pub backup_keep: usize,
    /// Single sign-on with an OpenID Connect provider (`[oidc]`, docs/security.md); without it, tokens only.
    pub oidc: Option<OidcSettings>,
    /// Status updates by email (`[mail]`: the SMTP relay, the sender, `[[mail.lists]]`; docs/integrations.md);
    /// without it, updates are copied and marked as sent by hand.
    pub mail: Option<MailSettings>,
    /// The IRC bot's network (`[irc]`, docs/integrations.md); without it, no IRC bot.
    pub irc: Option<IrcSettings>,
    /// Chat channels bound to incidents (`[chat]`: the timeline prefix and `[[chat.people]]`, who is who in chat;
    /// docs/integrations.md). With it (or `[slack]`), document actors post incidents' events to their channels.
    pub chat: Option<ChatSettings>,
    /// The Slack app (`[slack]`): its bot token, signing secret and API address.
    pub slack: Option<SlackSettings>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7420)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            max_frame_bytes: 16 * 1024 * 1024,
            max_body_bytes: 1024 * 1024,
            outbox_frames: 1024,
            ping_interval_secs: 15,
            idle_timeout_secs: 60,
            unload_after_secs: 300,
            max_document_bytes: 64 * 1024 * 1024,
            max_connections_per_token: 4096,
            max_edits_per_sec: 100,
            edit_burst: 200,
            max_ephemeral_per_sec: 20,
            ephemeral_burst: 50,
            webhooks: Vec::new(),
            webhook_delivery: DeliverySettings::default(),
            alertmanager_label: "incident".to_owned(),
            templates_dir: None,
            retention: RetentionSettings::default(),
            max_heavy_reads: std::thread::available_parallelism().map_or(1, usize::from),
            backup_dir: None,
            backup_every: None,
            backup_keep: 7,
            oidc: None,
            mail: None,
            irc: None,
            chat: None,
            slack: None,
        }
    }
}

/// A size in bytes as people write it: `1048576`, `64 KiB`, `1MiB`, `2 GB`. Binary units (KiB, MiB, GiB: the ones
/// the help and the docs print) and decimal ones (kB, MB, GB), any case, with or without a space.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let expected = || {
        format!("{text:?} is not a size: write bytes (1048576) or a size such as 1 MiB or 64 KiB")
    };
    let number: usize = number.parse().map_err(|_| expected())?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(expected()),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is larger than this machine can count"))
}

/// A byte size in the config file: a number, or a string [`parse_bytes`] reads.
fn bytes<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(usize),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Number(n) => Ok(n),
        Size::Text(text) => parse_bytes(&text).map_err(serde::de::Error::custom),
    }
}

/// A period as people write it: `6h`, `30m`, `1d`, `90s`, `500ms`, or a number of seconds; never zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let expected = || format!("{text:?} is not a period: write 6h, 30m, 1d, 90s, 500ms or seconds");
    let number: u64 = number.parse().map_err(|_| expected())?;
    let duration = match unit.trim() {
        "" | "s" => Duration::from_secs(number),
        "ms" => Duration::from_millis(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3600)),
        "d" => Duration::from_secs(number.saturating_mul(86_400)),
        _ => return Err(expected()),
    };
    if duration.is_zero() {
        return Err(format!(
            "{text:?} is no period: it must be longer than zero"
        ));
    }
    Ok(duration)
}

/// An optional period in the config file: a number of seconds, or a string [`parse_duration`] reads.
fn optional_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Period {
        Seconds(u64),
        Text(String),
    }
    let text = match Period::deserialize(deserializer)? {
        Period::Seconds(n) => n.to_string(),
        Period::Text(text) => text,
    };
    parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A period in the config file: a number of seconds, or a string [`parse_duration`] reads.
pub(crate) fn duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    optional_duration(deserializer)?.ok_or_else(|| serde::de::Error::custom("a period is required"))
}

/// A config file that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
#[error("config file {path}: {reason}")]
pub struct ConfigError {
    /// The file.
    path: String,
    /// What went wrong.
    reason: String,
}

impl Config {
    /// Defaults overlaid with the file at `path`.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let error = |reason: String| ConfigError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let config = toml::from_str(&text).map_err(|e| error(e.to_string()))?;
        // The store is one or the other; with both keys, one would be ignored without a word.
        let keys: toml::Table = toml::from_str(&text).map_err(|e| error(e.to_string()))?;
        if keys.contains_key("data-dir") && keys.contains_key("database-url") {
            return Err(error(
                "data-dir and database-url name two different stores; keep the one the server should use"
                    .into(),
            ));
        }
        Ok(config)
    }

    /// Limits of `/sync` connections.
    pub fn sync_limits(&self) -> SyncLimits {
        SyncLimits {
            max_frame_bytes: self.max_frame_bytes,
            outbox_frames: self.outbox_frames.max(16),
            ping_interval: Duration::from_secs(self.ping_interval_secs.max(1)),
            idle_timeout: Duration::from_secs(
                self.idle_timeout_secs
                    .max(self.ping_interval_secs * 2)
                    .max(2),
            ),
            max_connections_per_token: self.max_connections_per_token.max(1),
            edits_per_sec: self.max_edits_per_sec.max(1),
            edit_burst: self.edit_burst.max(1),
            ephemeral_per_sec: self.max_ephemeral_per_sec.max(1),
            ephemeral_burst: self.ephemeral_burst.max(1),
        }
    }

    /// The webhook endpoints, checked.
    pub fn webhooks(&self) -> Result<Webhooks, WebhookError> {
        Webhooks::new(self.webhooks.clone(), self.webhook_delivery.clone())
    }

    /// Settings of document actors, which queue events for `webhooks`.
    pub fn doc_config(&self, webhooks: Arc<Webhooks>) -> DocConfig {
        DocConfig {
            idle_unload: Duration::from_secs(self.unload_after_secs),
            queue: 1024,
            max_document_bytes: self.max_document_bytes,
            webhooks,
            chat_posts: self.chat_posts(),
        }
    }

    /// Whether document actors post incidents' events to their bound channels: when a chat network or `[chat]`
    /// is configured.
    pub fn chat_posts(&self) -> bool {
        self.chat.is_some() || self.slack.is_some() || self.irc.is_some()
    }
}

/// Limits and timings of sync connections.
#[derive(Debug, Clone)]
pub struct SyncLimits {
    /// Largest frame accepted; larger ones get an `error` message and a close.
    pub max_frame_bytes: usize,
    /// Frames queued for one connection before it counts as not reading and is cut off.
    pub outbox_frames: usize,
    /// How often the server pings; the JavaScript server does so every 5 s, browsers answer automatically.
    pub ping_interval: Duration,
    /// A connection silent (no frame, no pong) for this long is closed.
    pub idle_timeout: Duration,
    /// Live connections one token may hold.
    pub max_connections_per_token: usize,
    /// Sustained change-carrying sync messages per second per connection.
    pub edits_per_sec: u32,
    /// Change-carrying sync messages a connection may send at once above the sustained rate.
    pub edit_burst: u32,
    /// Sustained ephemeral messages (presence) per second per connection; a faster sender is cut off.
    pub ephemeral_per_sec: u32,
    /// Ephemeral messages a connection may send at once above the sustained rate.
    pub ephemeral_burst: u32,
}

/// Settings of every document actor.
#[derive(Debug, Clone)]
pub struct DocConfig {
    /// A document with no peers and no commands for this long is unloaded from memory.
    pub idle_unload: Duration,
    /// Capacity of each actor's command queue.
    pub queue: usize,
    /// Largest stored size of a document: what it loaded from, plus what it appended since (or its last snapshot).
    pub max_document_bytes: usize,
    /// The webhook endpoints: when there are any, each batch's events are queued with its changes.
    pub webhooks: Arc<Webhooks>,
    /// Whether each batch's events are posted to the incident's chat channel (queued with its changes too).
    pub chat_posts: bool,
}

/// The `[chat]` table: how channel lines become timeline entries and who the people in chat are.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ChatSettings {
    /// A line starting with this becomes a timeline entry (the rest of the line); `!tl ` by default.
    pub timeline_prefix: String,
    /// Who is who in chat (`[[chat.people]]`): the commandpost person (and scope) an IRC mask or account or a Slack
    /// user id speaks for. Commands from anyone else are refused in the channel; their lines are still logged.
    pub people: Vec<ChatPerson>,
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings {
            timeline_prefix: "!tl ".to_owned(),
            people: Vec::new(),
        }
    }
}

/// One `[[chat.people]]` entry: a commandpost person and the chat identities that speak for them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ChatPerson {
    /// The person's name, as their token names them (what the timeline and the roles say).
    pub name: String,
    /// What they may do from chat: `read`, `write` (the default) or `admin`, as a token's scope.
    #[serde(default = "write_scope")]
    pub scope: String,
    /// IRC `nick!user@host` masks (`*` and `?` wildcards; a bare nick `alice` means `alice!*@*`). Nicks are easily
    /// taken on networks without services: prefer `irc-account` where the network has accounts.
    #[serde(default)]
    pub irc: Vec<String>,
    /// The services account (IRCv3 `account-tag`) that speaks for the person.
    pub irc_account: Option<String>,
    /// The Slack user id (`U024BE7LH`) that speaks for the person.
    pub slack: Option<String>,
}

fn write_scope() -> String {
    "write".to_owned()
}

/// The `[slack]` table: the Slack app commandpost runs as.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SlackSettings {
    /// The bot token (`xoxb-…`) `chat.postMessage` and `conversations.create` are called with. Keep the config
    /// file readable by the server's user only.
    pub bot_token: String,
    /// The app's signing secret, which every request from Slack is verified with.
    pub signing_secret: String,
    /// The Web API's address (a test's stand-in, or a proxy).
    pub api_url: String,
    /// The reaction (emoji name) that makes the line it is added to a timeline entry.
    pub reaction: String,
}

impl Default for SlackSettings {
    fn default() -> Self {
        SlackSettings {
            bot_token: String::new(),
            signing_secret: String::new(),
            api_url: "https://slack.com/api".to_owned(),
            reaction: "pushpin".to_owned(),
        }
    }
}

impl std::fmt::Debug for SlackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackSettings")
            .field("api_url", &self.api_url)
            .field("reaction", &self.reaction)
            .finish_non_exhaustive()
    }
}

/// The `[irc]` table: the IRC network the bot connects to (one connection per cluster), who it is there, and how
/// fast it may talk.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct IrcSettings {
    /// The server's host name (checked against its certificate with TLS) or address.
    pub server: String,
    /// The server's port; by default 6697 with TLS, 6667 without.
    pub port: Option<u16>,
    /// Whether to connect with TLS, verifying the server's certificate (on by default).
    pub tls: bool,
    /// A PEM file of CA certificates trusted besides the system's, for a network with a private CA.
    pub ca_file: Option<PathBuf>,
    /// The bot's nick; `_` is appended while it is taken.
    pub nick: String,
    /// The user name (ident) the bot registers with.
    pub user: String,
    /// The real name (gecos) the bot registers with.
    pub real_name: String,
    /// The server password (`PASS`), for networks or bouncers that want one.
    pub password: Option<String>,
    /// The services account to log in with by SASL PLAIN (with `sasl-password`), when the server offers SASL.
    pub sasl_user: Option<String>,
    /// The SASL password.
    pub sasl_password: Option<String>,
    /// Identify to NickServ with this password after connecting, when SASL is not used.
    pub nickserv_password: Option<String>,
    /// Lines the bot may send at once before flood control spaces them out.
    pub flood_burst: u32,
    /// Lines per second the bot sends at most, sustained (a token bucket refilled at this rate; posts queue up).
    pub flood_rate: f64,
}

impl Default for IrcSettings {
    fn default() -> Self {
        IrcSettings {
            server: String::new(),
            port: None,
            tls: true,
            ca_file: None,
            nick: "commandpost".into(),
            user: "commandpost".into(),
            real_name: "commandpost incident bot".into(),
            password: None,
            sasl_user: None,
            sasl_password: None,
            nickserv_password: None,
            flood_burst: 5,
            flood_rate: 1.0,
        }
    }
}

impl IrcSettings {
    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls { 6697 } else { 6667 })
    }
}

/// Like the derived form, with the passwords left out: configurations end up in logs and panics.
impl std::fmt::Debug for IrcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "…");
        f.debug_struct("IrcSettings")
            .field("server", &self.server)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("nick", &self.nick)
            .field("user", &self.user)
            .field("real_name", &self.real_name)
            .field("password", &hidden(&self.password))
            .field("sasl_user", &self.sasl_user)
            .field("sasl_password", &hidden(&self.sasl_password))
            .field("nickserv_password", &hidden(&self.nickserv_password))
            .field("flood_burst", &self.flood_burst)
            .field("flood_rate", &self.flood_rate)
            .finish()
    }
}

/// The `[oidc]` table: the provider, the client registered there, and who gets which scope.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct OidcSettings {
    /// The provider's issuer URL; its discovery document is `<issuer>/.well-known/openid-configuration`.
    pub issuer_url: String,
    /// The client id registered at the provider.
    pub client_id: String,
    /// The client secret (confidential client); better given as `COMMANDPOST_OIDC_CLIENT_SECRET` than in a file.
    pub client_secret: Option<String>,
    /// This server's callback as registered at the provider: `https://<public address>/auth/oidc/callback`. Its
    /// origin is the server's public origin (cookie `Secure` flag, cross-site checks).
    pub redirect_url: String,
    /// Scopes asked for; `openid` is always asked.
    pub scopes: Vec<String>,
    /// The provider's name on the sign-in button ("Sign in with …").
    pub display_name: String,
    /// The claim whose value is the person's name in documents (checked like a token name).
    pub name_claim: String,
    /// The claim the scope rules read: a string or a list of strings (groups, roles, email).
    pub role_claim: String,
    /// Values of `role-claim` that give `admin`; a value starting with `@` matches the end of the claim (an email
    /// domain).
    pub admin: Vec<String>,
    /// Values that give `write`.
    pub write: Vec<String>,
    /// Values that give `read`.
    pub read: Vec<String>,
    /// The scope of people who match no rule: `read`, `write`, `admin` or `refused`.
    pub default_scope: String,
    /// The absolute lifetime of a session, however much it is used.
    #[serde(deserialize_with = "duration")]
    pub session_lifetime: Duration,
    /// A session unused for this long ends (every use renews it).
    #[serde(deserialize_with = "duration")]
    pub session_idle: Duration,
}

impl Default for OidcSettings {
    fn default() -> Self {
        OidcSettings {
            issuer_url: String::new(),
            client_id: String::new(),
            client_secret: None,
            redirect_url: String::new(),
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
            display_name: "single sign-on".into(),
            name_claim: "preferred_username".into(),
            role_claim: "groups".into(),
            admin: Vec::new(),
            write: Vec::new(),
            read: Vec::new(),
            default_scope: "refused".into(),
            session_lifetime: Duration::from_secs(12 * 3600),
            session_idle: Duration::from_secs(3600),
        }
    }
}

/// Like the derived form, with the client secret left out: configurations end up in logs and panics.
impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer_url", &self.issuer_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "…"))
            .field("redirect_url", &self.redirect_url)
            .field("scopes", &self.scopes)
            .field("display_name", &self.display_name)
            .field("name_claim", &self.name_claim)
            .field("role_claim", &self.role_claim)
            .field("admin", &self.admin)
            .field("write", &self.write)
            .field("read", &self.read)
            .field("default_scope", &self.default_scope)
            .field("session_lifetime", &self.session_lifetime)
            .field("session_idle", &self.session_idle)
            .finish()
    }
}

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS, which the relay must offer: a relay (or a machine in the middle)
    /// that does not is refused, so credentials and updates never travel in clear.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No TLS at all: only for a relay on the loopback interface (a local MTA).
    None,
}

impl Security {
    /// The port the relay listens on by convention for this kind of connection.
    pub(crate) fn default_port(self) -> u16 {
        match self {
            Security::Starttls => 587,
            Security::Tls => 465,
            Security::None => 25,
        }
    }
}

/// The `[mail]` table: where status updates are sent from, through which relay, to which lists (checked and put to
/// work by `crate::mail::Mail`).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MailSettings {
    /// The SMTP relay's host name (checked against its certificate).
    pub host: String,
    /// The relay's port; 587 for `starttls`, 465 for `tls`, 25 for `none` when absent.
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none` (loopback only).
    pub security: Security,
    /// The relay login (AUTH PLAIN or LOGIN), with `password`.
    pub username: Option<String>,
    /// The relay password.
    pub password: Option<String>,
    /// A PEM file of CA certificates trusted besides the system's, for a relay with a private CA.
    pub ca_file: Option<PathBuf>,
    /// The sender (`From:`), such as `Incident updates <incidents@example.com>`.
    pub from: String,
    /// The domain of the messages' `Message-ID`s; the sender's domain when absent.
    pub message_id_domain: Option<String>,
    /// Seconds one attempt (connect, TLS, AUTH, DATA) may take.
    pub timeout_secs: u64,
    /// The mailing lists (`[[mail.lists]]`) and which incidents each receives.
    pub lists: Vec<MailList>,
}

impl Default for MailSettings {
    fn default() -> Self {
        MailSettings {
            host: String::new(),
            port: None,
            security: Security::default(),
            username: None,
            password: None,
            ca_file: None,
            from: String::new(),
            message_id_domain: None,
            timeout_secs: 30,
            lists: Vec::new(),
        }
    }
}

impl std::fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("ca_file", &self.ca_file)
            .field("from", &self.from)
            .field("message_id_domain", &self.message_id_domain)
            .field("timeout_secs", &self.timeout_secs)
            .field("lists", &self.lists)
            .finish()
    }
}

/// One mailing list and the incidents it hears about: those of the listed templates (all when empty) at the
/// listed severities (all when empty). `severities = ["SEV1"]` is the executive list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MailList {
    /// The list's address (`ops@example.com` or `Ops <ops@example.com>`).
    pub address: String,
    /// Template ids whose incidents it receives; every template when empty.
    #[serde(default)]
    pub templates: Vec<String>,
    /// Severities at which it receives them; every severity when empty.
    #[serde(default)]
    pub severities: Vec<String>,
    /// Whether updates of restricted incidents go to it too. Off by default, as for webhooks: a restricted incident's
    /// updates go only to lists that say so and to its template's own (`mail-to=`), never to a list meant for all.
    #[serde(default)]
    pub restricted: bool,
}

impl MailList {
    /// Whether an incident of `template` at `severity` (restricted or not) goes to this list.
    pub(crate) fn receives(
        &self,
        template: &str,
        severity: Option<&str>,
        restricted: bool,
    ) -> bool {
        if restricted && !self.restricted {
            return false;
        }
        let template_ok = self.templates.is_empty() || self.templates.iter().any(|t| t == template);
        let severity_ok = self.severities.is_empty()
            || severity.is_some_and(|s| self.severities.iter().any(|want| want == s));
        template_ok && severity_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_in_the_units_the_help_prints() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_bytes(" 64 kib "), Ok(64 << 10));
        assert_eq!(parse_bytes("2 GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("10 B"), Ok(10));
        for bad in ["", "MiB", "1.5 MiB", "1 MiBs", "-1", "1 PiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
        assert!(parse_bytes("99999999999999999999 GiB").is_err());
    }

    /// The keys serde reads for `T`: its field names as the config file spells them. Asked of `T`'s derived
    /// `Deserialize` itself, so a new setting is listed without anyone remembering to.
    fn keys<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
        struct Fields(Option<&'static [&'static str]>);
        #[derive(Debug)]
        struct Done;
        impl std::fmt::Display for Done {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("fields read")
            }
        }
        impl std::error::Error for Done {}
        impl serde::de::Error for Done {
            fn custom<M: std::fmt::Display>(_: M) -> Self {
                Done
            }
        }
        impl<'de> serde::Deserializer<'de> for &mut Fields {
            type Error = Done;
            fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Done> {
                Err(Done)
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Done> {
                self.0 = Some(fields);
                Err(Done)
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
                unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
            }
        }
        let mut fields = Fields(None);
        let _ = T::deserialize(&mut fields);
        fields.0.expect("a struct")
    }

    #[test]
    fn every_config_key_is_in_the_reference() {
        let reference = include_str!("../../docs/configuration.md");
        let all = [
            keys::<Config>(),
            keys::<crate::webhooks::Endpoint>(),
            keys::<DeliverySettings>(),
            keys::<RetentionSettings>(),
            keys::<OidcSettings>(),
            keys::<MailSettings>(),
            keys::<MailList>(),
            keys::<IrcSettings>(),
            keys::<ChatSettings>(),
            keys::<ChatPerson>(),
            keys::<SlackSettings>(),
        ];
        assert!(all.iter().all(|k| k.len() > 1));
        for key in all.concat() {
            assert!(
                reference.contains(&format!("| `{key}` |"))
                    || reference.contains(&format!("| `[{key}]` |"))
                    || reference.contains(&format!("| `[[{key}]]` |")),
                "docs/configuration.md does not describe the config key {key:?}"
            );
        }
    }

    #[test]
    fn the_config_file_takes_periods_as_seconds_or_text() {
        let config: Config =
            toml::from_str("backup-every = \"6h\"\nbackup-dir = \"b\"\n").expect("valid");
        assert_eq!(config.backup_every, Some(Duration::from_secs(6 * 3600)));
        let config: Config = toml::from_str("backup-every = 90\n").expect("valid");
        assert_eq!(config.backup_every, Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        for wrong in ["0s", "soon", "6 weeks", "-1h"] {
            assert!(parse_duration(wrong).is_err(), "{wrong} is refused");
        }
    }

    #[test]
    fn the_config_file_takes_sizes_as_numbers_or_text() {
        let config: Config =
            toml::from_str("max-body-bytes = \"2 MiB\"\nmax-frame-bytes = 4096\n").expect("valid");
        assert_eq!(config.max_body_bytes, 2 << 20);
        assert_eq!(config.max_frame_bytes, 4096);
        let error = toml::from_str::<Config>("max-document-bytes = \"lots\"\n")
            .expect_err("refused")
            .to_string();
        assert!(error.contains("is not a size"), "{error}");
    }
}
