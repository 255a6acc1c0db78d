//! [`TestServer`]: a real commandpost server on a loopback port the OS picks, with its own temporary data directory.
//!
//! Two ways to run it. [`TestServer::start`] calls [`server::run`] in this process: fast, and any
//! [`server::config::Config`] setting can be changed. [`TestServer::start_process`] runs the real command line as a
//! child process, which is what `kill -9` and restart tests need; it learns the bound address and the first-run
//! admin token from the process's stdout, exactly as an operator would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use automerge::ChangeHash;
use incident_doc::Incident;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use server::auth::{self, Scope};
use server::config::Config;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::SyncTarget;

/// How long a server may take to start, or to stop after being asked to.
const START_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The name of the test binary that runs the real command line (`tests/src/bin/commandpost-under-test.rs`).
const BINARY: &str = "commandpost-under-test";

/// A running server and what a test needs to talk to it.
pub struct TestServer {
    /// The address it listens on (127.0.0.1 and a port the OS chose).
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base_url: String,
    /// A token with admin scope: created in the store before serving (in process) or printed on first run (process).
    pub admin_token: String,
    /// One HTTP client for every request, so connections are reused as a browser would.
    http: reqwest::Client,
    /// Holds the data directory (and, for a process, its log and config) until the server is dropped.
    dir: tempfile::TempDir,
    /// How the server runs, and how to stop it.
    runner: Runner,
}

/// How a [`TestServer`] runs.
enum Runner {
    /// [`server::run`] on a task of the test's runtime.
    InProcess {
        /// Completing it starts the graceful shutdown; `None` once used.
        shutdown: Option<oneshot::Sender<()>>,
        /// The task running the server; `None` once awaited.
        task: Option<JoinHandle<anyhow::Result<()>>>,
    },
    /// The real command line in a child process.
    Process(Box<Process>),
}

/// A server running as a child process.
struct Process {
    /// The running child; `None` after it was killed or stopped and before a restart.
    child: Option<Child>,
    /// The process's stdout after the startup lines, kept open so that a late print never fails.
    stdout: Option<Lines<BufReader<ChildStdout>>>,
    /// The optional config file passed with `--config`.
    config: Option<PathBuf>,
}

/// The answer to `POST /api/incidents`: what a test needs to reach the new incident.
#[derive(Debug, Clone, Deserialize)]
pub struct DeclaredIncident {
    /// The document id (bs58check), as used in HTTP paths and sync messages.
    pub id: String,
    /// The `automerge:` URL the JavaScript client opens.
    pub url: String,
    /// The incident number the server allocated.
    #[serde(default)]
    pub number: Option<i64>,
}

impl TestServer {
    /// Starts a server in this process with the default configuration, on `127.0.0.1:0`, with a fresh data
    /// directory and an admin token created directly in the store before serving.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// Like [`TestServer::start`], after letting `configure` change the configuration (small frame or body limits,
    /// a short unload delay, …). The listen address and data directory are the harness's own.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        TestServer::start_on(listener, configure, None).await
    }

    /// Like [`TestServer::start_with`], on a `listener` the test bound already (so that settings elsewhere, such as
    /// an OpenID provider's redirect URLs, can name the server's address before it starts). With `admin_token`, the
    /// server is another node of a shared database whose admin token exists already, and none is created.
    pub async fn start_on(
        listener: TcpListener,
        configure: impl FnOnce(&mut Config),
        admin_token: Option<&str>,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("creating a temporary data directory");
        let addr = listener.local_addr().expect("reading the bound address");
        let mut config = Config::default();
        configure(&mut config);
        config.data_dir = dir.path().join("data");
        config.listen = addr;
        let store = server::open_store(&config).expect("opening the store");
        let admin_token = match admin_token {
            Some(token) => token.to_owned(),
            None => {
                let token = auth::new_token();
                store
                    .create_token("admin", Scope::Admin, &auth::hash_token(&token))
                    .await
                    .expect("creating the admin token");
                token
            }
        };
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(listener, store, config, async move {
            let _ = stop.await;
        }));
        TestServer {
            addr,
            base_url: format!("http://{addr}"),
            admin_token,
            http: http_client(),
            dir,
            runner: Runner::InProcess {
                shutdown: Some(shutdown),
                task: Some(task),
            },
        }
    }

    /// Starts the real command line (`commandpost serve --listen 127.0.0.1:0 --data-dir …`) in a child process, and
    /// reads the bound address and the first-run admin token from its stdout.
    pub async fn start_process() -> TestServer {
        TestServer::start_process_inner(None, None, None).await
    }

    /// The real command line on a copy of the store in `seed` (its `commandpost.db*` files: a fixture store written
    /// by an earlier release, say), whose admin token is `admin_token`; the copy is the server's, `seed` stays as
    /// it was.
    pub async fn start_process_on_copy(seed: &Path, admin_token: &str) -> TestServer {
        TestServer::start_process_inner(None, Some(admin_token.to_owned()), Some(seed)).await
    }

    /// Like [`TestServer::start_process`], with a TOML config file (kebab-case keys of [`Config`], such as
    /// `unload-after-secs = 1`) passed with `--config`.
    pub async fn start_process_with_config(toml: &str) -> TestServer {
        TestServer::start_process_inner(Some(toml), None, None).await
    }

    /// Another node of a cluster: like [`TestServer::start_process_with_config`] on a database the first node
    /// already set up, so no first-run token is printed; `admin_token` is the first node's.
    pub async fn start_node(toml: &str, admin_token: &str) -> TestServer {
        TestServer::start_process_inner(Some(toml), Some(admin_token.to_owned()), None).await
    }

    async fn start_process_inner(
        toml: Option<&str>,
        admin_token: Option<String>,
        seed: Option<&Path>,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("creating a temporary data directory");
        if let Some(seed) = seed {
            let data = dir.path().join("data");
            std::fs::create_dir(&data).expect("creating the data directory");
            for entry in std::fs::read_dir(seed).expect("reading the seed directory") {
                let path = entry.expect("a seed entry").path();
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                if name.is_some_and(|n| n.starts_with("commandpost.db")) {
                    std::fs::copy(&path, data.join(path.file_name().expect("a file name")))
                        .expect("copying the seed");
                }
            }
        }
        let config = toml.map(|text| {
            let path = dir.path().join("commandpost.toml");
            std::fs::write(&path, text).expect("writing the config file");
            path
        });
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut started =
            spawn_process(dir.path(), config.as_deref(), listen, admin_token.is_none())
                .await
                .expect("starting the server process");
        let admin_token = admin_token.unwrap_or_else(|| {
            started
                .first_run_token
                .take()
                .expect("a fresh data directory prints a first-run admin token")
        });
        TestServer {
            addr: started.addr,
            base_url: format!("http://{}", started.addr),
            admin_token,
            http: http_client(),
            dir,
            runner: Runner::Process(Box::new(Process {
                child: Some(started.child),
                stdout: Some(started.stdout),
                config,
            })),
        }
    }

    /// `/sync` as `token`, sent in the `Authorization` header (how clients other than browsers connect).
    pub fn ws_url(&self, token: &str) -> SyncTarget {
        SyncTarget {
            url: format!("ws://{}/sync", self.addr),
            bearer: Some(token.to_owned()),
        }
    }

    /// `/sync?ticket={ticket}`, without a header: how browsers connect.
    pub fn ticket_url(&self, ticket: &str) -> SyncTarget {
        SyncTarget {
            url: format!("ws://{}/sync?ticket={ticket}", self.addr),
            bearer: None,
        }
    }

    /// A ticket for `token` from `POST /api/sync-ticket`; panics unless the server answers 200 with one.
    pub async fn sync_ticket(&self, token: &str) -> String {
        let response = self
            .request(Method::POST, "/api/sync-ticket", Some(token))
            .send()
            .await
            .expect("POST /api/sync-ticket");
        let body = expect_status(response, StatusCode::OK, "asking for a sync ticket").await;
        body["ticket"]
            .as_str()
            .expect("the ticket is in the answer")
            .to_owned()
    }

    /// The full URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The shared HTTP client, for requests the helpers below do not cover.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A request to `path`, with `Authorization: Bearer {token}` when a token is given.
    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Creates a token through `POST /api/tokens` with the admin token, and returns it; panics unless the server
    /// answers 201.
    pub async fn token(&self, name: &str, scope: &str) -> String {
        let response = self
            .request(Method::POST, "/api/tokens", Some(&self.admin_token))
            .json(&json!({"name": name, "scope": scope}))
            .send()
            .await
            .expect("POST /api/tokens");
        let body = expect_status(response, StatusCode::CREATED, "creating a token").await;
        body["token"]
            .as_str()
            .expect("the created token is in the answer")
            .to_owned()
    }

    /// Revokes the token named `name` through `DELETE /api/tokens/{name}`; panics unless the server answers 204.
    pub async fn revoke(&self, name: &str) {
        let response = self
            .request(
                Method::DELETE,
                &format!("/api/tokens/{name}"),
                Some(&self.admin_token),
            )
            .send()
            .await
            .expect("DELETE /api/tokens/{name}");
        expect_status(response, StatusCode::NO_CONTENT, "revoking a token").await;
    }

    /// The value of one sample of `GET /metrics`, named with its labels if any
    /// (`commandpost_limit_rejections_total{limit="frame"}`); `Err` if there is no such line.
    pub async fn metric(&self, name: &str) -> anyhow::Result<u64> {
        let text = self
            .request(Method::GET, "/metrics", None)
            .send()
            .await?
            .text()
            .await?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no metric {name} in /metrics:\n{text}"))
    }

    /// Declares an incident through `POST /api/incidents` (default template); panics unless the server answers 201.
    pub async fn declare(&self, token: &str, title: &str) -> DeclaredIncident {
        let response = self
            .request(Method::POST, "/api/incidents", Some(token))
            .json(&json!({"title": title}))
            .send()
            .await
            .expect("POST /api/incidents");
        let body = expect_status(response, StatusCode::CREATED, "declaring an incident").await;
        serde_json::from_value(body).expect("the declaration answer has id and url")
    }

    /// An export of the incident (`GET /api/incidents/{id}/export?format=…`), byte for byte; panics unless 200.
    pub async fn export(&self, token: &str, id: &str, format: &str) -> Vec<u8> {
        let response = self
            .request(
                Method::GET,
                &format!("/api/incidents/{id}/export?format={format}"),
                Some(token),
            )
            .send()
            .await
            .expect("GET …/export");
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "exporting incident {id} as {format}"
        );
        response.bytes().await.expect("reading the export").to_vec()
    }

    /// The incident's Markdown export; panics unless 200.
    pub async fn markdown(&self, token: &str, id: &str) -> String {
        String::from_utf8(self.export(token, id, "markdown").await).expect("Markdown is UTF-8")
    }

    /// The incident as the JSON read model (`GET /api/incidents/{id}`); panics unless 200.
    pub async fn incident_json(&self, token: &str, id: &str) -> Value {
        let response = self
            .request(Method::GET, &format!("/api/incidents/{id}"), Some(token))
            .send()
            .await
            .expect("GET /api/incidents/{id}");
        expect_status(response, StatusCode::OK, "reading an incident").await
    }

    /// The server's copy of the whole document (`export?format=automerge`), loaded as an [`Incident`]: what tests
    /// compare heads and texts against.
    pub async fn document(&self, token: &str, id: &str) -> Incident {
        let response = self
            .request(
                Method::GET,
                &format!("/api/incidents/{id}/export?format=automerge"),
                Some(token),
            )
            .send()
            .await
            .expect("GET …/export?format=automerge");
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "exporting incident {id} as Automerge"
        );
        let bytes = response
            .bytes()
            .await
            .expect("reading the Automerge export");
        Incident::load(&bytes).expect("the Automerge export loads")
    }

    /// The heads of the server's copy of the document, sorted: equal heads mean equal documents.
    pub async fn heads(&self, token: &str, id: &str) -> Vec<ChangeHash> {
        let mut heads = self.document(token, id).await.doc_mut().get_heads();
        heads.sort();
        heads
    }

    /// Appends a timeline entry through `POST /api/incidents/{id}/timeline` and returns the entry's id; panics unless
    /// the server answers 201 (which promises the entry is durable).
    pub async fn append_timeline(&self, token: &str, id: &str, text: &str) -> String {
        let response = self
            .request(
                Method::POST,
                &format!("/api/incidents/{id}/timeline"),
                Some(token),
            )
            .json(&json!({"text": text}))
            .send()
            .await
            .expect("POST …/timeline");
        let body = expect_status(response, StatusCode::CREATED, "appending to the timeline").await;
        body["id"]
            .as_str()
            .expect("the new entry's id is in the answer")
            .to_owned()
    }

    /// Applies typed operations through `POST /api/incidents/{id}/operations` and returns the response, whatever
    /// its status, so tests can check refusals too.
    pub async fn operations(&self, token: &str, id: &str, operations: Value) -> reqwest::Response {
        self.request(
            Method::POST,
            &format!("/api/incidents/{id}/operations"),
            Some(token),
        )
        .json(&json!({ "operations": operations }))
        .send()
        .await
        .expect("POST …/operations")
    }

    /// Sends `method path` with `token` and an optional JSON `body`; returns the status and the JSON answer (`null`
    /// when the answer is not JSON), whatever the status, so tests can check refusals and their error bodies.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.request(method, path, token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("sending the request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `PUT /api/incidents/{id}/channel` with `channel` (`{"network", "name", "id"?}`) as `token`: the status and
    /// the answer, for the tests of the chat bots to bind and to be refused.
    pub async fn bind_channel(
        &self,
        token: &str,
        id: &str,
        channel: &Value,
    ) -> (StatusCode, Value) {
        self.call(
            Method::PUT,
            &format!("/api/incidents/{id}/channel"),
            Some(token),
            Some(channel),
        )
        .await
    }

    /// `GET /metrics`: the Prometheus text.
    pub async fn metrics(&self) -> String {
        let response = self
            .request(Method::GET, "/metrics", None)
            .send()
            .await
            .expect("GET /metrics");
        response.text().await.expect("reading the metrics")
    }

    /// `GET /healthz`: the status code and the JSON body.
    pub async fn healthz(&self) -> (StatusCode, Value) {
        let response = self
            .request(Method::GET, "/healthz", None)
            .send()
            .await
            .expect("GET /healthz");
        let status = response.status();
        let body = response.json().await.expect("/healthz answers JSON");
        (status, body)
    }

    /// The data directory, for tests that inspect or damage storage.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the server gracefully and waits for it: in process, the shutdown future completes and `run` must
    /// return `Ok`; as a process, SIGTERM and a zero exit status. Panics otherwise, since a server that cannot stop
    /// cleanly is a bug.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        match &mut self.runner {
            Runner::InProcess { shutdown, task } => {
                if let Some(shutdown) = shutdown.take() {
                    let _ = shutdown.send(());
                }
                if let Some(task) = task.take() {
                    tokio::time::timeout(START_STOP_TIMEOUT, task)
                        .await
                        .expect("the server stops within the deadline")
                        .expect("the server task does not panic")
                        .expect("the server stops cleanly");
                }
            }
            Runner::Process(process) => {
                let Process { child, stdout, .. } = process.as_mut();
                if let Some(mut child) = child.take() {
                    let status = terminate(&mut child).await.expect("stopping the server");
                    assert!(
                        status.success(),
                        "the server exits 0 on SIGTERM, not {status}"
                    );
                }
                *stdout = None;
            }
        }
    }

    /// Kills the server process with SIGKILL and reaps it: no shutdown code runs, as in a crash or an OOM kill.
    /// Process servers only.
    pub fn kill9(&mut self) {
        let Runner::Process(process) = &mut self.runner else {
            panic!("kill9 needs a server started with start_process");
        };
        let Process { child, stdout, .. } = process.as_mut();
        if let Some(mut child) = child.take() {
            child.start_kill().expect("sending SIGKILL");
            // Reaping it here keeps the restart from racing a dying process for the port and the database. SIGKILL
            // takes effect at once, so this blocks the runtime for milliseconds at most.
            let deadline = std::time::Instant::now() + START_STOP_TIMEOUT;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    other => panic!("the server process did not die after SIGKILL: {other:?}"),
                }
            }
        }
        *stdout = None;
    }

    /// Starts the server process again on the same data directory (after [`TestServer::kill9`] or a graceful stop
    /// through [`TestServer::stop_process`]): on the same port if it is free, else on a new one, updating `addr` and
    /// `base_url`. If the process is still running it is stopped gracefully first. Process servers only.
    pub async fn restart(&mut self) {
        let dir = self.dir.path().to_owned();
        let Runner::Process(process) = &mut self.runner else {
            panic!("restart needs a server started with start_process");
        };
        let Process {
            child,
            stdout,
            config,
        } = process.as_mut();
        if let Some(mut running) = child.take() {
            let status = terminate(&mut running).await.expect("stopping the server");
            assert!(
                status.success(),
                "the server exits 0 on SIGTERM, not {status}"
            );
        }
        let started = match spawn_process(&dir, config.as_deref(), self.addr, false).await {
            Ok(started) => started,
            // The port was taken meanwhile: any port will do, the test reads the new one.
            Err(_) => spawn_process(
                &dir,
                config.as_deref(),
                SocketAddr::from(([127, 0, 0, 1], 0)),
                false,
            )
            .await
            .expect("restarting the server process"),
        };
        *child = Some(started.child);
        *stdout = Some(started.stdout);
        self.addr = started.addr;
        self.base_url = format!("http://{}", started.addr);
        // Pooled connections to the old process are dead; a new client does not try them.
        self.http = http_client();
    }

    /// Stops the server process gracefully (SIGTERM) but keeps the data directory, so that
    /// [`TestServer::restart`] can start it again; panics unless it exits 0. Process servers only.
    pub async fn stop_process(&mut self) {
        assert!(
            matches!(self.runner, Runner::Process(_)),
            "stop_process needs a server started with start_process"
        );
        self.shutdown().await;
    }

    /// The server process's log (its stderr), for failure messages. Empty for in-process servers.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Runner::Process(process) = &mut self.runner
            && let Some(child) = &mut process.child
        {
            // A test that panicked must not leave a server running; the tempdir goes right after.
            let _ = child.start_kill();
        }
    }
}

/// A started server process and what it printed.
struct Started {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    addr: SocketAddr,
    first_run_token: Option<String>,
}

/// Runs `commandpost serve` on `dir/data`, and reads its startup lines (with the first-run token when `first_run`).
async fn spawn_process(
    dir: &Path,
    config: Option<&Path>,
    listen: SocketAddr,
    first_run: bool,
) -> anyhow::Result<Started> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .context("opening the server log")?;
    let mut command = Command::new(binary_path()?);
    command.arg("serve").arg("--listen").arg(listen.to_string());
    // The harness's data directory, unless the config names a database: the server refuses a store named twice.
    let database = match config {
        Some(config) => Config::from_file(config)?.database_url.is_some(),
        None => false,
    };
    if !database {
        command.arg("--data-dir").arg(dir.join("data"));
    }
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    for var in [
        "COMMANDPOST_LISTEN",
        "COMMANDPOST_CONFIG",
        "COMMANDPOST_DATA_DIR",
        "COMMANDPOST_DATABASE_URL",
    ] {
        command.env_remove(var);
    }
    command
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    let mut child = command.spawn().context("spawning the server binary")?;
    let stdout = child.stdout.take().context("the child's stdout is piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let startup =
        tokio::time::timeout(START_STOP_TIMEOUT, read_startup(&mut lines, first_run)).await;
    match startup {
        Ok(Ok((addr, first_run_token))) => Ok(Started {
            child,
            stdout: lines,
            addr,
            first_run_token,
        }),
        Ok(Err(e)) => {
            let status = child.wait().await;
            Err(e.context(format!(
                "the server exited with {status:?}; see {}",
                dir.join("server.log").display()
            )))
        }
        Err(_) => {
            let _ = child.start_kill();
            anyhow::bail!("the server printed no address within {START_STOP_TIMEOUT:?}")
        }
    }
}

/// Reads `commandpost listening on http://ADDR` and, on a first run, the token line that follows.
///
/// After a restart the server prints nothing more, so the token is read only when one is expected.
async fn read_startup(
    lines: &mut Lines<BufReader<ChildStdout>>,
    first_run: bool,
) -> anyhow::Result<(SocketAddr, Option<String>)> {
    let first = lines
        .next_line()
        .await?
        .context("the server closed stdout before printing its address")?;
    let addr: SocketAddr = first
        .strip_prefix("commandpost listening on http://")
        .with_context(|| format!("unexpected first line {first:?}"))?
        .trim()
        .parse()
        .with_context(|| format!("no address in {first:?}"))?;
    anyhow::ensure!(addr.port() != 0, "the server printed port 0: {first:?}");
    if !first_run {
        return Ok((addr, None));
    }
    let intro = lines
        .next_line()
        .await?
        .context("the server closed stdout before printing the first-run token")?;
    anyhow::ensure!(
        intro.starts_with("First run:"),
        "unexpected line after the address: {intro:?}"
    );
    let url = lines
        .next_line()
        .await?
        .context("the first-run message ends before the token")?;
    let (origin, token) = url
        .trim()
        .split_once("/#token=")
        .with_context(|| format!("no token in {url:?}"))?;
    anyhow::ensure!(
        origin == format!("http://{addr}"),
        "the first-run URL {origin:?} is not the address the server printed ({addr})"
    );
    Ok((addr, Some(token.to_owned())))
}

/// Where the `commandpost-under-test` binary is: `CARGO_BIN_EXE_commandpost-under-test` when cargo set it, else
/// next to the running test executable's directory (`target/…/deps/../`).
fn binary_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(format!("CARGO_BIN_EXE_{BINARY}")) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let mut dir = exe
        .parent()
        .context("the test executable has a directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps has a parent")?;
    }
    let path = dir.join(format!("{BINARY}{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        path.exists(),
        "{} not found: build it with `cargo build -p tests --bins` (cargo test -p tests does)",
        path.display()
    );
    Ok(path)
}

/// Sends SIGTERM and waits for the process to exit.
async fn terminate(child: &mut Child) -> anyhow::Result<ExitStatus> {
    let pid = child.id().context("the process has already been reaped")?;
    let sent = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .await
        .context("running kill -TERM")?;
    anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
    tokio::time::timeout(START_STOP_TIMEOUT, child.wait())
        .await
        .context("the server did not exit after SIGTERM")?
        .context("waiting for the server")
}

/// One HTTP client for a test server: no proxy (the server is on loopback) and a timeout, so a hung server fails the
/// test instead of hanging it.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(START_STOP_TIMEOUT)
        .build()
        .expect("building the HTTP client")
}

/// Panics unless `response` has status `expected`, showing the body; returns the body as JSON (`null` if empty).
async fn expect_status(response: reqwest::Response, expected: StatusCode, what: &str) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, expected, "{what}: unexpected status, body {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}
