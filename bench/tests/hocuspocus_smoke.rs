//! A small smoke of the Yjs peers against a real Hocuspocus (bench/js/hocuspocus-server.mjs, installed by `npm ci`
//! in bench/js, which scripts/test.sh runs): a few seconds of war room, a small join storm and the start of the
//! editing trace (which deletes too). As in
//! `harness_smoke.rs`, what is checked is that every replica converges and every keystroke is timed at every
//! viewer, never a speed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::Context;
use bench::scenario::{Run, trace};
use bench::target::{Server, Target};

mod smoke;

/// A Hocuspocus server of our own, stopped when dropped.
struct Hocuspocus {
    child: Child,
    url: String,
}

impl Hocuspocus {
    /// Starts `hocuspocus-server.mjs` and reads the port it prints.
    fn start() -> anyhow::Result<Hocuspocus> {
        let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
        anyhow::ensure!(
            js.join("node_modules/@hocuspocus/server").is_dir(),
            "run `npm ci` in bench/js first (scripts/test.sh does)"
        );
        let child = Command::new("node")
            .arg("hocuspocus-server.mjs")
            .current_dir(&js)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting node")?;
        let mut server = Hocuspocus {
            child,
            url: String::new(),
        };
        let stdout = server.child.stdout.take().context("node's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let port = line
            .trim()
            .strip_prefix("Listening on port ")
            .with_context(|| format!("Hocuspocus said {line:?}"))?;
        server.url = format!("ws://127.0.0.1:{port}");
        Ok(server)
    }

    /// A run against it.
    fn run(&self) -> Run {
        Run {
            target: Target::new(self.url.clone(), Server::Hocuspocus),
            server: Some(bench::process::Process::pid(self.child.id())),
            traffic: Arc::default(),
            hooks: Default::default(),
        }
    }
}

impl Drop for Hocuspocus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_war_room_on_hocuspocus_converges() -> anyhow::Result<()> {
    let server = Hocuspocus::start()?;
    let report = smoke::short_war_room(&server.run()).await?;
    assert_eq!(report.target, "hocuspocus");
    assert!(report.usage.server.is_some(), "the server was measured");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_join_storm_on_hocuspocus_gets_everyone_the_document() -> anyhow::Result<()> {
    let server = Hocuspocus::start()?;
    smoke::small_join_storm(&server.run()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_of_the_trace_on_hocuspocus_reaches_every_viewer() -> anyhow::Result<()> {
    let server = Hocuspocus::start()?;
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/automerge-paper.json.gz");
    let loaded = trace::Trace::load(&file)?;
    let report = trace::run(
        &server.run(),
        &loaded,
        trace::Settings {
            viewers: 3,
            limit: 3000,
            flush_ms: 20,
        },
    )
    .await?;
    assert_eq!(report.keystrokes, 3000);
    assert!(
        report.final_chars < 3000,
        "the trace's start deletes some of what it types"
    );
    assert!(report.latency.count > 0, "the viewers timed keystrokes");
    Ok(())
}
