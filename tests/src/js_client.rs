//! [`JsClient`]: the stock JavaScript automerge-repo client (`@automerge/automerge-repo` with its
//! `WebSocketClientAdapter`, the versions pinned in `tests/js/package-lock.json`), run by Node from
//! `tests/js/client.mjs` and driven step by step, for interop tests and for attacks made with the client anyone can
//! install. It needs Node.js on `PATH` and `npm ci` run in `tests/js`; without them it fails and says so.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::SyncTarget;

/// The JS client's own deadline for everything it does (`--timeout-ms`): after it, it reports `timeout` and exits.
pub const JS_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the test waits for one line from the JS client: longer than [`JS_TIMEOUT`], so that a stuck client is
/// normally reported by the client itself, with what it was waiting for.
const LINE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the JS client may take to exit after its last event.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The name the JS client stamps its edits with.
pub const JS_AUTHOR: &str = "js-interop";

/// The directory of the JS client and its `node_modules`.
pub(crate) fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// The `node` executable on `PATH`.
pub(crate) fn node() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("node"))
        .find(|candidate| candidate.is_file())
        .context("node is not on PATH: the JavaScript interop tests need Node.js 20 or newer")
}

/// Fails unless `npm ci` has installed the pinned client in `tests/js/node_modules`.
pub(crate) fn require_node_modules() -> anyhow::Result<()> {
    let dir = js_dir();
    for package in [
        "@automerge/automerge-repo",
        "@automerge/automerge-repo-network-websocket",
    ] {
        ensure!(
            dir.join("node_modules")
                .join(package)
                .join("package.json")
                .is_file(),
            "{} has no {package}: run `npm ci` in tests/js first (scripts/test.sh and CI do)",
            dir.join("node_modules").display()
        );
    }
    Ok(())
}

/// A running `client.mjs` and everything it printed so far.
pub struct JsClient {
    /// The Node process, killed when the client is dropped.
    child: Child,
    /// One JSON event per line.
    stdout: Lines<BufReader<ChildStdout>>,
    /// Collects stderr until the process exits, for failure messages.
    stderr: JoinHandle<String>,
    /// Every event read so far, for failure messages.
    transcript: Vec<Value>,
}

impl JsClient {
    /// Starts the client on document `doc` (an `automerge:` URL) of the server at `target`, with `steps` to run
    /// once the document is ready (see the header of `tests/js/client.mjs`). With a token in `target`, the client
    /// asks the server for a ticket and connects with it, as a browser does; without one it opens `target.url` as
    /// it is.
    pub async fn spawn(target: &SyncTarget, doc: &str, steps: Value) -> anyhow::Result<JsClient> {
        require_node_modules()?;
        let mut command = Command::new(node()?);
        if let Some(token) = &target.bearer {
            // In the environment rather than the arguments, which every user of the machine can list.
            command.env("COMMANDPOST_TOKEN", token);
        }
        let mut child = command
            .current_dir(js_dir())
            .arg("client.mjs")
            .arg("--server")
            .arg(&target.url)
            .arg("--doc")
            .arg(doc)
            .arg("--timeout-ms")
            .arg(JS_TIMEOUT.as_millis().to_string())
            .arg("--author")
            .arg(JS_AUTHOR)
            .arg("--steps")
            .arg(steps.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting node tests/js/client.mjs")?;
        let stdout = child.stdout.take().context("node's stdout is piped")?;
        let mut stderr = child.stderr.take().context("node's stderr is piped")?;
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        Ok(JsClient {
            child,
            stdout: BufReader::new(stdout).lines(),
            stderr,
            transcript: Vec::new(),
        })
    }

    /// Reads the next event and fails unless it is `event`; returns the whole event object.
    pub async fn expect(&mut self, event: &str) -> anyhow::Result<Value> {
        self.next_event(event, false).await
    }

    /// Reads events until one is `event` (skipping the others, which stay in the transcript); returns it.
    pub async fn skip_to(&mut self, event: &str) -> anyhow::Result<Value> {
        self.next_event(event, true).await
    }

    async fn next_event(&mut self, event: &str, skip_others: bool) -> anyhow::Result<Value> {
        loop {
            let value = self.read_event(event).await?;
            if value["event"] == event {
                return Ok(value);
            }
            if !skip_others {
                return Err(self
                    .failure(&format!("expected {event:?}, got {value}"))
                    .await);
            }
        }
    }

    /// Reads one event line, whatever it is.
    async fn read_event(&mut self, event: &str) -> anyhow::Result<Value> {
        let line = match tokio::time::timeout(LINE_TIMEOUT, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => {
                return Err(self
                    .failure(&format!("expected {event:?}, but stdout closed"))
                    .await);
            }
            Ok(Err(e)) => {
                return Err(self
                    .failure(&format!("expected {event:?}, reading stdout failed: {e}"))
                    .await);
            }
            Err(_) => {
                return Err(self
                    .failure(&format!(
                        "expected {event:?}, nothing within {LINE_TIMEOUT:?}"
                    ))
                    .await);
            }
        };
        let value: Value = match serde_json::from_str(&line) {
            Ok(value) => value,
            Err(e) => {
                return Err(self
                    .failure(&format!(
                        "expected {event:?}, got a line that is not JSON ({e}): {line}"
                    ))
                    .await);
            }
        };
        self.transcript.push(value.clone());
        Ok(value)
    }

    /// Waits for the process to exit and returns its status; stdout must have nothing more to say.
    pub async fn exit(mut self) -> anyhow::Result<ExitStatus> {
        match tokio::time::timeout(EXIT_TIMEOUT, self.stdout.next_line()).await {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(line))) => {
                return Err(self
                    .failure(&format!("expected the end of output, got {line}"))
                    .await);
            }
            Ok(Err(e)) => return Err(self.failure(&format!("reading stdout failed: {e}")).await),
            Err(_) => {
                return Err(self
                    .failure(&format!(
                        "node did not exit within {EXIT_TIMEOUT:?} of its last event"
                    ))
                    .await);
            }
        }
        match tokio::time::timeout(EXIT_TIMEOUT, self.child.wait()).await {
            Ok(status) => status.context("waiting for node"),
            Err(_) => Err(self.failure("node closed stdout but did not exit").await),
        }
    }

    /// Kills the client and describes what went wrong, with everything it printed on stdout and stderr.
    pub async fn failure(&mut self, what: &str) -> anyhow::Error {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let stderr = tokio::time::timeout(Duration::from_secs(5), &mut self.stderr)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let transcript: Vec<String> = self.transcript.iter().map(Value::to_string).collect();
        anyhow::anyhow!(
            "JS client: {what}\nevents so far:\n  {}\nstderr:\n{stderr}",
            transcript.join("\n  ")
        )
    }
}
