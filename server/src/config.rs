//! Server settings: defaults, an optional TOML file, then environment variables and flags (which win).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

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
    /// Largest `/sync` frame accepted, in bytes. A full Automerge document of a long incident must fit.
    pub max_frame_bytes: usize,
    /// Largest HTTP request body, in bytes.
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
    /// is refused (nothing stored), and HTTP edits to a document at the limit get 422.
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
    /// Heavy reads (history, exports, the postmortem, the status update, the JSON view) computing at once; as many
    /// again may wait, and further ones get 503 with `Retry-After`. Defaults to the number of cores.
    pub max_heavy_reads: usize,
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
            max_heavy_reads: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
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
        }
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
}
