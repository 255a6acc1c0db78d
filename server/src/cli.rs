//! The `commandpost` command line: `serve`, `token create|list|revoke`, `export`/`import` of incidents and
//! `backup`/`restore`/`check` of the whole store, all against the same store, found the same way (`--config`, `--data-dir`, `--database-url` and their variables);
//! and `templates check|preview`, which need no store but find `templates-dir` as `serve` does.

mod archive;
mod backup;
mod limits;
mod templates;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::net::{TcpListener, TcpSocket};

use crate::audit;
use crate::auth::{self, Scope};
use crate::config::Config;
use crate::store::Store;

/// commandpost: live incident state documents.
#[derive(Parser)]
#[command(name = "commandpost", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    settings: SettingsArgs,
}

/// The single sign-on settings a deployment most often gives outside the file (the secret above all); each
/// overrides the `[oidc]` key of the same name, and giving any of them turns single sign-on on.
#[derive(clap::Args, Debug, Default)]
struct OidcArgs {
    /// The OpenID Connect provider's issuer URL.
    #[arg(long, env = "COMMANDPOST_OIDC_ISSUER_URL")]
    oidc_issuer_url: Option<String>,
    /// The client id registered at the provider.
    #[arg(long, env = "COMMANDPOST_OIDC_CLIENT_ID")]
    oidc_client_id: Option<String>,
    /// The client secret.
    #[arg(long, env = "COMMANDPOST_OIDC_CLIENT_SECRET", hide_env_values = true)]
    oidc_client_secret: Option<String>,
    /// This server's callback as registered: https://<address>/auth/oidc/callback.
    #[arg(long, env = "COMMANDPOST_OIDC_REDIRECT_URL")]
    oidc_redirect_url: Option<String>,
}

impl OidcArgs {
    /// Writes every flag that was given over `config`'s `[oidc]` table (creating it with defaults).
    fn apply(self, config: &mut Config) {
        let OidcArgs {
            oidc_issuer_url,
            oidc_client_id,
            oidc_client_secret,
            oidc_redirect_url,
        } = self;
        if oidc_issuer_url.is_none()
            && oidc_client_id.is_none()
            && oidc_client_secret.is_none()
            && oidc_redirect_url.is_none()
        {
            return;
        }
        let oidc = config.oidc.get_or_insert_with(Default::default);
        if let Some(url) = oidc_issuer_url {
            oidc.issuer_url = url;
        }
        if let Some(id) = oidc_client_id {
            oidc.client_id = id;
        }
        if oidc_client_secret.is_some() {
            oidc.client_secret = oidc_client_secret;
        }
        if let Some(url) = oidc_redirect_url {
            oidc.redirect_url = url;
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Start the server (sync, HTTP API and web UI).
    Serve {
        /// Address to listen on [default: 127.0.0.1:7420].
        #[arg(long, env = "COMMANDPOST_LISTEN")]
        listen: Option<SocketAddr>,
        #[command(flatten)]
        limits: limits::LimitArgs,
        #[command(flatten)]
        backups: backup::ScheduleArgs,
        /// Boxed: the strings of four flags would make every command as large as `serve`.
        #[command(flatten)]
        oidc: Box<OidcArgs>,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Write incidents to files: every closed (archived) incident, or every incident with --all.
    Export {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Formats, comma-separated: automerge (restorable with import), markdown, html, json, postmortem.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "automerge")]
        format: Vec<crate::export::Format>,
        /// Only incidents declared on or after this date (YYYY-MM-DD, UTC) or RFC 3339 time.
        #[arg(long, value_parser = archive::parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Open incidents too, not only closed ones.
        #[arg(long)]
        all: bool,
    },
    /// Restore an incident from an Automerge file (from export or the HTTP export), with its whole history.
    Import {
        /// The `.automerge` file.
        file: PathBuf,
        /// The incident id to restore it under: a document id as the API and the UI show it (base58, e.g.
        /// t3NSKfb4wJQdkb2QFC6ukUTpLFg) or its automerge: URL [default: the id in the file name, else a new one].
        #[arg(long)]
        id: Option<String>,
    },
    /// Write a consistent copy of the whole store to one file, while the server runs (restorable into either store).
    Backup {
        /// The backup file to write (replaced atomically if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Fill an empty store (data directory or database) from a backup file.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Replace everything the store holds instead of refusing a store that is not empty.
        #[arg(long)]
        force: bool,
    },
    /// Check that the store (or a backup file) is whole: every document loads, the index agrees with the documents,
    /// tokens, outbox, tickets and templates read back; exit non-zero if anything is wrong.
    Check {
        /// Check this backup file instead of the store.
        #[arg(long)]
        backup: Option<PathBuf>,
    },
    /// Check a team's templates, or preview the incident one declares, without a server (for CI and editors).
    Templates {
        #[command(subcommand)]
        command: TemplatesCommand,
    },
    /// List the closed incidents the [retention] policy deletes now (a dry run: nothing is deleted here; a server
    /// with `delete = true` deletes them).
    Retention,
}

#[derive(Subcommand)]
enum TemplatesCommand {
    /// Check every template in a directory as the server would load it; exit non-zero if any is refused, with
    /// `file:line: reason` for each.
    Check {
        /// The directory [default: the server's templates-dir, from --templates-dir,
        /// COMMANDPOST_TEMPLATES_DIR or the config file].
        dir: Option<PathBuf>,
    },
    /// Print, as Markdown, the incident a template file would declare.
    Preview {
        /// The template file (its name without `.md` is the id).
        file: PathBuf,
        /// The incident's name (the title becomes `<name>: <date>`).
        #[arg(long, default_value = "Preview")]
        name: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (and nothing else) on stdout.
    Create {
        /// The person's or bot's name, used as their identity in the document.
        #[arg(long)]
        name: String,
        /// read, write or admin.
        #[arg(long)]
        scope: Scope,
    },
    /// List tokens (names, scopes, dates; never the tokens).
    List,
    /// Revoke the token with this name.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// Where the settings and the data are. Global, so every subcommand finds the store exactly as `serve` does:
/// a token made or listed with other flags than the server's would live in a store the server never reads.
#[derive(Args)]
struct SettingsArgs {
    /// Optional TOML config file; flags and environment variables win over it.
    #[arg(long, global = true, env = "COMMANDPOST_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of the embedded store [default: ./data].
    #[arg(long, global = true, env = "COMMANDPOST_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL, instead of the embedded store.
    #[arg(long, global = true, env = "COMMANDPOST_DATABASE_URL")]
    database_url: Option<String>,
    /// Directory of the team's own templates, beside the built-in ones (`serve` re-reads it every second;
    /// `templates check` checks it).
    #[arg(long, global = true, env = "COMMANDPOST_TEMPLATES_DIR")]
    templates_dir: Option<PathBuf>,
}

impl SettingsArgs {
    /// The settings every command starts from: the config file's (or the defaults), the store flags over them.
    /// The store is named once: a data directory and a database URL, from flags, variables or the file in any
    /// mix, are refused, since whichever lost would be ignored without a word.
    fn load(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let file_dir = config.data_dir != Config::default().data_dir;
        let dir = self.data_dir.is_some() || file_dir;
        let url = self.database_url.is_some() || config.database_url.is_some();
        anyhow::ensure!(
            !(dir && url),
            "the store is named twice: a data directory (--data-dir, COMMANDPOST_DATA_DIR or data-dir in the \
             config file) and a database URL (--database-url, COMMANDPOST_DATABASE_URL or database-url); give \
             the one the server should use"
        );
        if let Some(dir) = self.data_dir {
            config.data_dir = dir;
        }
        if let Some(url) = self.database_url {
            config.database_url = Some(url);
        }
        if let Some(dir) = self.templates_dir {
            config.templates_dir = Some(dir);
        }
        Ok(config)
    }
}

/// What a command does when the store it was given does not exist yet.
#[derive(Clone, Copy, PartialEq)]
enum IfMissing {
    /// Commands that add data (`serve`, `token create`, `import`) start a new store.
    Create,
    /// Commands that read or change what is stored refuse: a new, empty store would only answer "nothing",
    /// as if the server's store were empty.
    Refuse,
}

/// The binary's entry point: parses arguments, runs the command, and exits non-zero with the error on failure.
pub fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("commandpost: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = cli.settings.load()?;
    match cli.command {
        Command::Serve {
            listen,
            limits,
            backups,
            oidc,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        // automerge records an INFO span that formats the whole change graph for every
                        // received change: 42% of the server's CPU while a war room types (BENCHMARKS.md).
                        .unwrap_or_else(|_| "info,automerge=warn".into()),
                )
                .with_writer(std::io::stderr)
                // Colour codes only for a person at a terminal: journald, files and pipes get plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            limits.apply(&mut config);
            backups.apply(&mut config);
            (*oidc).apply(&mut config);
            if let Some(listen) = listen {
                config.listen = listen;
            }
            serve(config).await
        }
        Command::Token { command } => token(&config, command).await,
        Command::Export {
            out,
            format,
            since,
            all,
        } => {
            let request = archive::ExportRequest {
                out,
                formats: format,
                since,
                all,
            };
            with_store(&config, IfMissing::Refuse, |store| async move {
                archive::export(&store, &request).await.map(|_| ())
            })
            .await
        }
        Command::Import { file, id } => {
            with_store(&config, IfMissing::Create, |store| async move {
                let id = archive::import(&store, &file, id.as_deref()).await?;
                println!("{id}");
                Ok(())
            })
            .await
        }
        Command::Backup { out } => {
            with_store(&config, IfMissing::Refuse, |store| async move {
                backup::backup(store.as_ref(), &out).await
            })
            .await
        }
        Command::Restore { file, force } => {
            with_store(&config, IfMissing::Create, |store| async move {
                backup::restore(store.as_ref(), &file, force).await
            })
            .await
        }
        Command::Check { backup: Some(file) } => backup::check_file(&file).await,
        Command::Check { backup: None } => {
            with_store(&config, IfMissing::Refuse, |store| async move {
                backup::check_store(store.as_ref()).await
            })
            .await
        }
        Command::Templates { command } => match command {
            TemplatesCommand::Check { dir } => {
                let dir = dir.or(config.templates_dir).context(
                    "no directory to check: give one, or set templates-dir (--templates-dir, \
                     COMMANDPOST_TEMPLATES_DIR or the config file)",
                )?;
                templates::check(&dir)
            }
            TemplatesCommand::Preview { file, name } => templates::preview(&file, &name),
        },
        Command::Retention => {
            anyhow::ensure!(
                config.retention.enabled(),
                "no retention policy: set closed-after-days (and drills-after-days) under [retention] in the \
                 config file"
            );
            let (dir, policy) = (config.templates_dir.clone(), config.retention.clone());
            with_store(&config, IfMissing::Refuse, |store| async move {
                let templates = crate::templates::Templates::load(dir, store.clone()).await?;
                let due = crate::retention::due_now(&*store, &policy, &templates).await?;
                for row in &due {
                    let number = row.number.map(|n| format!("#{n}")).unwrap_or_default();
                    println!(
                        "{number}\t{}\tlast changed {}\t{}",
                        row.id,
                        row.updated_at.format("%Y-%m-%d %H:%M UTC"),
                        row.title
                    );
                }
                let action = if policy.delete {
                    "the server deletes them"
                } else {
                    "a dry run: set delete = true under [retention] for the server to delete them"
                };
                eprintln!("commandpost: {} closed incidents due; {action}", due.len());
                Ok(())
            })
            .await
        }
    }
}

/// Opens the store `config` names, saying on stderr which one it is, or refusing to create it.
async fn open_store(config: &Config, if_missing: IfMissing) -> anyhow::Result<Arc<dyn Store>> {
    let location = crate::store_location(config);
    let exists = crate::store_exists(config)
        .await
        .with_context(|| format!("reaching {location}"))?;
    if exists {
        eprintln!("commandpost: using {location}");
    } else {
        anyhow::ensure!(
            if_missing == IfMissing::Create,
            "{location}: no store there, and this command does not create one; name the server's store with \
             --config (or COMMANDPOST_CONFIG), --data-dir or --database-url"
        );
        eprintln!("commandpost: creating a new store: {location}");
    }
    crate::open_store(config).with_context(|| format!("opening {location}"))
}

/// Opens the store, runs `f` on it, and closes the store whether or not `f` succeeded.
async fn with_store<F, Fut>(config: &Config, if_missing: IfMissing, f: F) -> anyhow::Result<()>
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let store = open_store(config, if_missing).await?;
    let result = f(store.clone()).await;
    store.close().await?;
    result
}

/// Checks everything before it binds or prints: the webhooks, the templates directory, then the store (PostgreSQL
/// connected to and migrated), so that "listening" and a first-run token are printed only by a server that will keep
/// running.
async fn serve(config: Config) -> anyhow::Result<()> {
    let shutdown = shutdown_signal().context("installing the SIGTERM and Ctrl-C handlers")?;
    config.webhooks().context("the webhook configuration")?;
    if let Some(mail) = &config.mail {
        crate::mail::Mail::new(mail, config.webhook_delivery.clone())?;
    }
    crate::backups::Schedule::from_config(&config).context("the scheduled backups")?;
    if let Some(dir) = &config.templates_dir {
        crate::templates::dir::read(dir)
            .with_context(|| format!("reading templates-dir {}", dir.display()))?;
    }
    let store = open_store(&config, IfMissing::Create).await?;
    let tokens = store
        .token_count()
        .await
        .with_context(|| crate::store_location(&config))?;
    let listener =
        listen(config.listen).with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    // First run: without a token nobody could sign in, so make an admin one and show it once, after the address.
    let first_token = if tokens == 0 {
        let token = auth::new_token();
        store
            .create_token("admin", Scope::Admin, &auth::hash_token(&token))
            .await
            .context("creating the first admin token")?;
        let detail = serde_json::json!({"scope": "admin", "first": true});
        audit::record_local(
            &*store,
            audit::SERVER_ACTOR,
            "token.created",
            "admin",
            detail,
        )
        .await;
        Some(token)
    } else {
        None
    };
    println!("commandpost listening on http://{addr}");
    if let Some(token) = first_token {
        println!("First run: created an admin token. Open the web UI with it:");
        println!("  http://{addr}/#token={token}");
    }
    crate::run(listener, store, config, shutdown).await
}

/// How many connections may wait to be accepted. After a restart every browser reconnects at once; the default
/// of 128 overflows and makes the rest retry a second later.
const LISTEN_BACKLOG: u32 = 1024;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Completes on Ctrl-C or SIGTERM. The handlers are installed here, before the server announces its address, not
/// when the future is first polled: a SIGTERM that arrives in between (a supervisor stopping a server that just
/// started) would otherwise hit the default action and kill the process without the graceful stop.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let (mut interrupt, mut terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: flushing documents");
    })
}

async fn token(config: &Config, command: TokenCommand) -> anyhow::Result<()> {
    let (if_missing, action) = match command {
        TokenCommand::Create { name, scope } => {
            (IfMissing::Create, TokenAction::Create(name, scope))
        }
        TokenCommand::List => (IfMissing::Refuse, TokenAction::List),
        TokenCommand::Revoke { name } => (IfMissing::Refuse, TokenAction::Revoke(name)),
    };
    with_store(config, if_missing, |store| async move {
        match action {
            TokenAction::Create(name, scope) => {
                anyhow::ensure!(
                    auth::valid_token_name(&name),
                    "a token name is 1-64 letters, digits or - _ . @, and not the server's own name (commandpost)"
                );
                let token = auth::new_token();
                store
                    .create_token(&name, scope, &auth::hash_token(&token))
                    .await?;
                let detail = serde_json::json!({"scope": scope.as_str()});
                audit::record_local(&*store, audit::CLI_ACTOR, "token.created", &name, detail).await;
                println!("{token}");
                Ok(())
            }
            TokenAction::List => {
                for t in store.list_tokens().await? {
                    let revoked = t
                        .revoked_at
                        .map(|r| format!("revoked {}", r.to_rfc3339()))
                        .unwrap_or_else(|| "active".into());
                    println!(
                        "{}\t{}\t{}\t{revoked}",
                        t.name,
                        t.scope,
                        t.created_at.to_rfc3339()
                    );
                }
                Ok(())
            }
            TokenAction::Revoke(name) => {
                anyhow::ensure!(
                    store.revoke_token(&name).await?,
                    "no active token named {name:?}"
                );
                let detail = serde_json::Value::Null;
                audit::record_local(&*store, audit::CLI_ACTOR, "token.revoked", &name, detail).await;
                Ok(())
            }
        }
    })
    .await
}

/// What a token subcommand does once the store is open.
enum TokenAction {
    Create(String, Scope),
    List,
    Revoke(String),
}
