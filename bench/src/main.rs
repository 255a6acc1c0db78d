//! `commandpost-bench`: runs one scenario against a sync server and writes its result as JSON, or renders
//! results as Markdown (`report`). `scripts/bench.sh` drives it for every figure of BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bench::process::Process;
use bench::report::{self, Outcome};
use bench::scenario::{Hooks, Run, join_storm, many_incidents, trace, war_room};
use bench::target::{Server, Target};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// The latency a server must keep at p99 to count as sustaining a sweep's viewer count (the target).
const SWEEP_P99_LIMIT_MS: f64 = 100.0;

/// Load generator for collaboration servers: commandpost, automerge-repo's own sync server, and Hocuspocus (Yjs).
#[derive(Parser)]
#[command(name = "commandpost-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N editors type into the incident's fields and timeline while M viewers watch.
    WarRoom {
        #[command(flatten)]
        server: ServerArgs,
        /// Editors typing.
        #[arg(long, default_value_t = 10)]
        editors: u32,
        /// Keystrokes a second per editor.
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
        /// Viewers watching.
        #[arg(long, default_value_t = 200)]
        viewers: u32,
        /// Seconds of typing.
        #[arg(long, default_value_t = 20.0)]
        duration: f64,
        /// Seconds per window of the drift figures.
        #[arg(long, default_value_t = 5.0)]
        window: f64,
        /// Keystrokes of history the incident has before the editors start.
        #[arg(long, default_value_t = 0)]
        history: usize,
    },
    /// One editor replays an editing trace into one field while V viewers watch.
    Trace {
        #[command(flatten)]
        server: ServerArgs,
        /// The gzipped trace (automerge-paper.json.gz).
        #[arg(long, default_value = "bench/data/automerge-paper.json.gz")]
        file: PathBuf,
        /// Viewers watching.
        #[arg(long, default_value_t = 100)]
        viewers: u32,
        /// Keystrokes replayed from the start of the trace.
        #[arg(long, default_value_t = usize::MAX)]
        limit: usize,
        /// Milliseconds between the editor's sync messages (automerge-repo's clients use 100).
        #[arg(long, default_value_t = 100)]
        flush_ms: u64,
    },
    /// K clients join an incident with H changes of history.
    JoinStorm {
        #[command(flatten)]
        server: ServerArgs,
        /// Clients joining.
        #[arg(long, default_value_t = 200)]
        clients: u32,
        /// Changes of history.
        #[arg(long, default_value_t = 10_000)]
        history: usize,
        /// Seconds over which the clients arrive.
        #[arg(long, default_value_t = 2.0)]
        over: f64,
    },
    /// Declares many incidents and writes their ids to a file, for `many-incidents` (commandpost only).
    StoreIncidents {
        #[command(flatten)]
        server: ServerArgs,
        /// Incidents declared.
        #[arg(long, default_value_t = 10_000)]
        store: u32,
        /// Where the ids go.
        #[arg(long)]
        ids: PathBuf,
    },
    /// On a server restarted after `store-incidents`: loads some incidents, measures memory per loaded incident and
    /// per idle viewer, and waits for them to unload (commandpost only).
    ManyIncidents {
        #[command(flatten)]
        server: ServerArgs,
        /// The ids `store-incidents` wrote.
        #[arg(long)]
        ids: PathBuf,
        /// Incidents loaded.
        #[arg(long, default_value_t = 1_000)]
        load: u32,
        /// Idle viewer connections.
        #[arg(long, default_value_t = 1_000)]
        viewers: u32,
    },
    /// Measures, with Automerge alone, what one viewer's acknowledgement costs a server replica per history length.
    AckCost {
        /// History lengths (changes), comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000, 50_000])]
        history: Vec<usize>,
        /// Write the result here as JSON (else print it).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Prints the Markdown tables of result files (commandpost's first, then the peers').
    Report {
        /// Show war-room results as a viewer sweep: latency and CPU per viewer count, and the most viewers each
        /// server sustained with p99 ≤ 100 ms.
        #[arg(long)]
        sweep: bool,
        /// JSON results written with --json.
        files: Vec<PathBuf>,
    },
}

/// Which server, and how to reach and watch it.
#[derive(Args)]
struct ServerArgs {
    /// The sync endpoint: ws://127.0.0.1:7420/sync for commandpost, ws://127.0.0.1:PORT for the npm sync server or
    /// Hocuspocus.
    #[arg(long)]
    url: String,
    /// What kind of server it is.
    #[arg(long, value_enum, default_value_t = Kind::Commandpost)]
    kind: Kind,
    /// commandpost's HTTP base URL (default: the sync URL's host over http).
    #[arg(long)]
    api: Option<String>,
    /// A commandpost admin token (creates tokens and incidents).
    #[arg(long, env = "COMMANDPOST_BENCH_TOKEN")]
    token: Option<String>,
    /// The server's process id, for its CPU and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the result here as JSON (else print it).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Shell command run as the measured window opens ({pid} is the server's pid), e.g. to start a profiler.
    #[arg(long)]
    on_start: Option<String>,
    /// Shell command run as the measured window closes, e.g. to stop the profiler.
    #[arg(long)]
    on_stop: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    /// commandpost.
    Commandpost,
    /// `@automerge/automerge-repo-sync-server` or any server that takes documents from its peers.
    AutomergeRepo,
    /// `@hocuspocus/server`, with Yjs peers (war-room, trace and join-storm).
    Hocuspocus,
}

impl ServerArgs {
    /// The run these arguments describe: the target server, its process, no traffic yet.
    fn run(&self) -> anyhow::Result<Run> {
        let server = match self.kind {
            Kind::Commandpost => Server::Commandpost {
                api: match &self.api {
                    Some(api) => api.trim_end_matches('/').to_owned(),
                    None => http_base(&self.url)?,
                },
                token: self.token.clone().context(
                    "commandpost needs an admin token: --token or COMMANDPOST_BENCH_TOKEN",
                )?,
            },
            Kind::AutomergeRepo => Server::AutomergeRepo,
            Kind::Hocuspocus => Server::Hocuspocus,
        };
        Ok(Run {
            target: Target::new(self.url.clone(), server),
            server: self.server_pid.map(Process::pid),
            traffic: Arc::default(),
            hooks: Hooks {
                start: self.on_start.clone(),
                stop: self.on_stop.clone(),
            },
        })
    }

    /// Writes the result where `--json` says, else to stdout, for `report` to read later.
    fn write(&self, outcome: &Outcome) -> anyhow::Result<()> {
        write(self.json.as_deref(), outcome)
    }
}

/// Writes a result as JSON to `path`, or to stdout without one.
fn write(path: Option<&Path>, outcome: &Outcome) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(outcome)?;
    match path {
        Some(path) => {
            std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
        }
        None => {
            println!("{json}");
            Ok(())
        }
    }
}

/// `ws://host:port/…` → `http://host:port`.
fn http_base(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("ws://")
        .context("the sync URL must start with ws://")?;
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    Ok(format!("http://{host}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (server, outcome) = match cli.command {
        Command::WarRoom {
            server,
            editors,
            rate,
            viewers,
            duration,
            window,
            history,
        } => {
            let settings = war_room::Settings {
                editors,
                rate,
                viewers,
                duration_s: duration,
                window_s: window,
                history,
            };
            let outcome = Outcome::WarRoom(war_room::run(&server.run()?, settings).await?);
            (server, outcome)
        }
        Command::Trace {
            server,
            file,
            viewers,
            limit,
            flush_ms,
        } => {
            let loaded = trace::Trace::load(&file)?;
            let settings = trace::Settings {
                viewers,
                limit,
                flush_ms,
            };
            let outcome = Outcome::Trace(trace::run(&server.run()?, &loaded, settings).await?);
            (server, outcome)
        }
        Command::JoinStorm {
            server,
            clients,
            history,
            over,
        } => {
            let settings = join_storm::Settings {
                clients,
                history,
                over_s: over,
            };
            let outcome = Outcome::JoinStorm(join_storm::run(&server.run()?, settings).await?);
            (server, outcome)
        }
        Command::StoreIncidents { server, store, ids } => {
            let stored = many_incidents::store(&server.run()?, store).await?;
            std::fs::write(&ids, serde_json::to_string(&stored)?)
                .with_context(|| format!("writing {}", ids.display()))?;
            eprintln!(
                "declared {store} incidents ({:.0}/s); ids in {}",
                stored.declared_per_s,
                ids.display()
            );
            return Ok(());
        }
        Command::ManyIncidents {
            server,
            ids,
            load,
            viewers,
        } => {
            let text = std::fs::read_to_string(&ids)
                .with_context(|| format!("reading {}", ids.display()))?;
            let stored: many_incidents::Stored = serde_json::from_str(&text)
                .with_context(|| format!("reading {}", ids.display()))?;
            let outcome = Outcome::ManyIncidents(
                many_incidents::run(&server.run()?, &stored, load, viewers).await?,
            );
            (server, outcome)
        }
        Command::AckCost { history, json } => {
            let points = bench::ack_cost::measure(&history)?;
            return write(json.as_deref(), &Outcome::AckCost(points));
        }
        Command::Report { sweep, files } => {
            let mut outcomes = Vec::new();
            for file in files {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                outcomes.push(
                    serde_json::from_str(&text)
                        .with_context(|| format!("reading {}", file.display()))?,
                );
            }
            if sweep {
                print!("{}", report::sweep(&outcomes, SWEEP_P99_LIMIT_MS));
            } else {
                print!("{}", report::markdown(&outcomes));
            }
            return Ok(());
        }
    };
    server.write(&outcome)
}
