//! The commandpost server: hosts live incident documents over automerge-repo's sync protocol, with an HTTP API,
//! token auth and pluggable storage.
//!
//! [`run`] serves on a listener until a shutdown signal, then waits for every document to finish its last
//! durable write and closes the store. The binary (`commandpost`, see [`cli`]) and the integration tests both call
//! it, the tests on port 0.

pub mod api;
pub mod audit;
pub mod auth;
pub mod backups;
pub mod chat;
pub mod cli;
pub mod config;
pub mod connection;
pub mod document;
pub mod ephemeral;
pub mod error;
pub mod export;
pub mod input;
pub mod mail;
pub mod metrics;
pub mod peer;
pub mod reads;
pub mod replay;
pub mod retention;
pub mod sessions;
pub mod sso;
pub mod store;
pub mod templates;
pub mod web;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::config::Config;
use crate::connection::SyncContext;
use crate::document::Registry;
use crate::metrics::Metrics;
use crate::reads::HeavyReads;
use crate::sessions::Sessions;
use crate::store::Store;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::templates::Templates;
use wire::PeerId;

/// Opens the store the configuration names: PostgreSQL when a database URL is set, else the embedded store.
///
/// Call it inside a tokio runtime. The PostgreSQL store connects on demand and applies its migrations on its first
/// operation, so a database that is down shows up as `Unavailable` errors from the store, not here.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(url) = &config.database_url {
        let store = PostgresStore::open(url).context("opening the PostgreSQL store")?;
        return Ok(Arc::new(store));
    }
    let store = SqliteStore::open(&config.data_dir).with_context(|| {
        format!(
            "opening the embedded store in {}",
            config.data_dir.display()
        )
    })?;
    Ok(Arc::new(store))
}

/// Where the configuration's data lives, in words for messages (never a password): the operator sees which
/// store a command used, and an error names the database it could not reach.
pub fn store_location(config: &Config) -> String {
    match &config.database_url {
        Some(url) => store::postgres::location(url),
        None => {
            let file = SqliteStore::file(&config.data_dir);
            let file = std::path::absolute(&file).unwrap_or(file);
            format!("the embedded store {}", file.display())
        }
    }
}

/// Whether the store the configuration names has been created, found out without creating it: commands that
/// read what is stored refuse an empty new store rather than report on it.
pub async fn store_exists(config: &Config) -> anyhow::Result<bool> {
    let Some(url) = &config.database_url else {
        return Ok(SqliteStore::file(&config.data_dir).is_file());
    };
    let store = PostgresStore::open(url)?;
    let set_up = store.is_set_up().await;
    store.close().await?;
    Ok(set_up?)
}

/// Serves `listener` until `shutdown` completes; then stops accepting, lets every document finish its last
/// durable write, and closes the store.
pub async fn run(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if !web::client_built() {
        tracing::warn!(
            "the web client is not built into this server (web/pkg/ was missing at build time): \
             the UI at / explains how to build it; the API and /sync work"
        );
    }
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let server_id = PeerId::from(format!(
        "{}{}",
        connection::SERVER_PEER_PREFIX,
        wire::DocumentId::random()
    ));
    let webhooks = Arc::new(config.webhooks().context("the webhook configuration")?);
    let registry = Registry::new(
        store.clone(),
        metrics.clone(),
        server_id.clone(),
        config.doc_config(webhooks.clone()),
        stop.clone(),
    );
    // Without endpoints nothing is ever queued; deliveries queued before they were removed wait in the log.
    let deliverer = webhooks.enabled().then(|| {
        let (store, webhooks) = (store.clone(), webhooks.clone());
        webhooks::delivery::spawn(store, webhooks, metrics.clone(), stop.clone())
    });
    let mail = config
        .mail
        .as_ref()
        .map(|settings| mail::Mail::new(settings, config.webhook_delivery.clone()))
        .transpose()?
        .map(Arc::new);
    let mailer = mail
        .clone()
        .map(|mail| mail::sender::spawn(store.clone(), mail, metrics.clone(), stop.clone()));
    let backups = backups::Schedule::from_config(&config)?
        .map(|schedule| backups::spawn(store.clone(), schedule, metrics.clone(), stop.clone()));
    if let Some(notices) = store.subscribe() {
        registry.follow(notices);
    }
    let sso = config
        .oidc
        .clone()
        .map(sso::Sso::new)
        .transpose()
        .context("the single sign-on configuration")?
        .map(Arc::new);
    let sessions = Sessions::default();
    sessions.sweep(store.clone(), sso.clone(), stop.clone());
    let reads = HeavyReads::new(config.max_heavy_reads, metrics.clone());
    let templates = Templates::load(config.templates_dir.clone(), store.clone()).await?;
    templates.spawn_reloader(stop.clone());
    if config.retention.enabled() {
        retention::spawn(
            store.clone(),
            registry.clone(),
            templates.clone(),
            config.retention.clone(),
            metrics.clone(),
            stop.clone(),
        );
    }
    let chat = Arc::new(
        chat::Chat::new(
            store.clone(),
            registry.clone(),
            reads.clone(),
            &config.chat.clone().unwrap_or_default(),
        )
        .context("the chat configuration")?,
    );
    if config.chat_posts() {
        let every = std::time::Duration::from_secs(config.webhook_delivery.stale_check_secs.max(1));
        chat::posts::spawn_stale_sweep(store.clone(), every, stop.clone());
    }
    let slack = config
        .slack
        .clone()
        .map(chat::slack::SlackApp::new)
        .transpose()
        .map_err(anyhow::Error::msg)?
        .map(Arc::new);
    let slack_sender = slack.as_ref().map(|app| {
        chat::slack::spawn(
            store.clone(),
            app.api.clone(),
            metrics.clone(),
            app.wake.clone(),
            stop.clone(),
        )
    });
    if let Some(settings) = config.irc.clone() {
        let bot = chat::irc::Bot {
            settings,
            store: store.clone(),
            chat: chat.clone(),
            metrics: metrics.clone(),
            holder: format!("{server_id}-{:016x}", rand::random::<u64>()),
        };
        tokio::spawn(chat::irc::run(bot, stop.clone()));
    }
    let replays = replay::spawn(
        store.clone(),
        registry.clone(),
        format!("{server_id}-{:016x}", rand::random::<u64>()),
        stop.clone(),
    );
    let state = AppState {
        store: store.clone(),
        registry: registry.clone(),
        templates,
        metrics: metrics.clone(),
        sync: SyncContext {
            registry: registry.clone(),
            metrics,
            server_id,
            limits: config.sync_limits(),
            shutdown: stop.clone(),
            sessions,
        },
        max_body_bytes: config.max_body_bytes,
        reads,
        webhooks,
        alertmanager_label: Arc::from(config.alertmanager_label.as_str()),
        sso,
        mail,
        chat,
        slack,
    };
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        signal.cancel();
    });
    let graceful = stop.clone();
    // The peer's address reaches handlers for the audit log's and sessions' "from where".
    let app = api::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { graceful.cancelled().await })
        .await
        .context("serving HTTP")?;
    stop.cancel();
    registry.drained().await;
    if let Some(deliverer) = deliverer {
        // It finishes the attempts under way and records them before the store closes.
        let _ = deliverer.await;
    }
    if let Some(mailer) = mailer {
        // The message under way is sent and recorded before the store closes.
        let _ = mailer.await;
    }
    if let Some(sender) = slack_sender {
        // The post under way is recorded before the store closes.
        let _ = sender.await;
    }
    // A step under way is recorded before the store closes, and the lease is given up for the next node.
    let _ = replays.await;
    if let Some(backups) = backups {
        // A backup under way finishes before the store closes.
        let _ = backups.await;
    }
    store.close().await.context("closing the store")?;
    Ok(())
}
