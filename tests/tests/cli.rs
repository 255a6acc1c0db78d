//! The command line as an operator meets it, run as the real binary: every subcommand finds the store the way
//! `serve` does (`--config`, `COMMANDPOST_CONFIG`, `--data-dir`, `--database-url` and their variables) and says on
//! stderr which store it used; a command that reads or changes what is stored refuses to create a store where
//! there is none, instead of reporting on an empty one. `serve` checks its whole configuration and its storage before
//! it binds or prints anything, and names the PostgreSQL host and schema it could not use. Its logs are plain text
//! when nobody reads them at a terminal, and a normal start says nothing about storage at INFO.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use server::config::Config;
use tests::TestDatabase;

/// The real command line, built by this crate.
const CLI: &str = env!("CARGO_BIN_EXE_commandpost-under-test");

/// The command line in `cwd`, with none of the caller's `COMMANDPOST_*` variables and nothing on stdin.
fn command(cwd: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(CLI);
    command.current_dir(cwd).stdin(Stdio::null());
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("COMMANDPOST_")) {
        command.env_remove(name);
    }
    command
}

/// Runs the command line in `cwd` with `env` and `args`.
async fn commandpost(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    command(cwd)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("running the command line")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a command that must succeed; returns its stdout and stderr.
async fn succeeds(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> (String, String) {
    let output = commandpost(cwd, env, args).await;
    assert!(
        output.status.success(),
        "commandpost {args:?} failed: {}",
        stderr(&output)
    );
    (stdout(&output), stderr(&output))
}

#[tokio::test]
async fn reading_commands_refuse_to_create_a_store_and_name_the_one_they_looked_for() {
    let cwd = tempfile::tempdir().expect("a directory");
    let expected = cwd.path().join("data").join("commandpost.db");
    for args in [
        &["token", "list"][..],
        &["token", "revoke", "alice"],
        &["export", "--out", "exported", "--all"],
    ] {
        let output = commandpost(cwd.path(), &[], args).await;
        let err = stderr(&output);
        assert!(!output.status.success(), "{args:?} succeeded: {err}");
        assert!(
            err.contains(&format!("{}: no store there", expected.display())),
            "{args:?} names the store it looked for: {err}"
        );
        assert_eq!(stdout(&output), "", "{args:?} printed a result");
        let created: Vec<_> = std::fs::read_dir(cwd.path())
            .expect("the directory")
            .map(|e| e.expect("an entry").file_name())
            .collect();
        assert!(created.is_empty(), "{args:?} created {created:?}");
    }
}

#[tokio::test]
async fn every_command_reads_the_config_file_and_says_which_store_it_used() {
    let cwd = tempfile::tempdir().expect("a directory");
    let store = cwd.path().join("elsewhere");
    let config = cwd.path().join("commandpost.toml");
    std::fs::write(
        &config,
        format!("data-dir = {:?}\n", store.display().to_string()),
    )
    .expect("writing the config");
    let config = config.to_str().expect("utf-8");
    let file = store.join("commandpost.db").display().to_string();

    // The variable `serve` honours, then the flag: the token goes where the config says, and is listed there.
    let (token, created) = succeeds(
        cwd.path(),
        &[("COMMANDPOST_CONFIG", config)],
        &["token", "create", "--name", "alice", "--scope", "write"],
    )
    .await;
    assert!(!token.trim().is_empty());
    assert!(
        created.contains("creating a new store") && created.contains(&file),
        "{created}"
    );
    let (listed, used) = succeeds(cwd.path(), &[], &["token", "list", "--config", config]).await;
    assert!(listed.starts_with("alice\twrite\t"), "{listed}");
    assert!(
        used.contains(&format!("using the embedded store {file}")),
        "{used}"
    );
    let (_, exported) = succeeds(
        cwd.path(),
        &[("COMMANDPOST_CONFIG", config)],
        &["export", "--out", "exported", "--all"],
    )
    .await;
    assert!(exported.contains(&file), "{exported}");
    succeeds(
        cwd.path(),
        &[("COMMANDPOST_CONFIG", config)],
        &["token", "revoke", "alice"],
    )
    .await;
    assert!(
        !cwd.path().join("data").exists(),
        "nothing used the default ./data"
    );

    // What the server itself opens with that config holds the token.
    let settings = Config::from_file(Path::new(config)).expect("the config");
    let opened = server::open_store(&settings).expect("the store");
    let tokens = opened.list_tokens().await.expect("tokens");
    opened.close().await.expect("close");
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].name, "alice");
    assert!(tokens[0].revoked_at.is_some(), "revoked in the same store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_reading_command_creates_no_tables_and_names_the_schema() {
    let database = TestDatabase::create();
    let cwd = tempfile::tempdir().expect("a directory");
    let config = cwd.path().join("pg.toml");
    std::fs::write(&config, format!("database-url = {:?}\n", database.url()))
        .expect("writing the config");
    let config = config.to_str().expect("utf-8");
    let env = [("COMMANDPOST_CONFIG", config)];

    let refused = commandpost(cwd.path(), &env, &["token", "list"]).await;
    let err = stderr(&refused);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("PostgreSQL database test on 127.0.0.1:5432, schema cp_cluster_")
            && err.contains("no store there"),
        "{err}"
    );
    assert_eq!(
        database.tables(),
        Vec::<String>::new(),
        "nothing was created"
    );

    succeeds(
        cwd.path(),
        &env,
        &["token", "create", "--name", "bob", "--scope", "read"],
    )
    .await;
    let (listed, used) = succeeds(cwd.path(), &env, &["token", "list"]).await;
    assert!(listed.starts_with("bob\tread\t"), "{listed}");
    assert!(used.contains("using PostgreSQL database test"), "{used}");
    assert!(
        !cwd.path().join("data").exists(),
        "no embedded store either"
    );
}

/// `serve` on a loopback port in `cwd` with `args`, its output piped (as under systemd or in a container) and the
/// default log filter, killed if the test ends first.
fn spawn_serve(cwd: &Path, args: &[&str]) -> tokio::process::Child {
    command(cwd)
        .env_remove("RUST_LOG")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting serve")
}

/// Runs `serve` on a loopback port in `cwd` and waits for it to exit: every case here must refuse to start. A
/// server that started anyway is killed after a while and the case fails on what it printed.
async fn serve_refused(cwd: &Path, args: &[&str]) -> String {
    let child = spawn_serve(cwd, args);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("serve {args:?} kept running"))
        .expect("waiting for serve");
    let err = stderr(&output);
    assert!(!output.status.success(), "serve {args:?} exited 0: {err}");
    assert_eq!(
        stdout(&output),
        "",
        "serve {args:?} announced itself before refusing: {err}"
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_checks_its_configuration_and_storage_before_it_announces_itself() {
    let database = TestDatabase::create();
    let cwd = tempfile::tempdir().expect("a directory");
    let dir = |name: &str| cwd.path().join(name).display().to_string();
    let write = |name: &str, toml: String| {
        let path = cwd.path().join(name);
        std::fs::write(&path, toml).expect("writing a config");
        path.display().to_string()
    };

    // A webhook the deliverer could never send to: refused before the store is even opened.
    let webhooks = write(
        "webhooks.toml",
        format!(
            "data-dir = {:?}\n[[webhooks]]\nname = \"chat\"\nurl = \"ftp://chat.example/hook\"\n",
            dir("hooked")
        ),
    );
    let err = serve_refused(cwd.path(), &["--config", &webhooks]).await;
    assert!(err.contains("webhook") && err.contains("chat"), "{err}");
    assert!(!cwd.path().join("hooked").exists(), "no store was created");

    // Not PostgreSQL, and never dialled as if it were.
    let err = serve_refused(cwd.path(), &["--database-url", "mysql://root@127.0.0.1/x"]).await;
    assert!(err.contains("not a PostgreSQL"), "{err}");

    // Two stores named at once, by flags or in the file: neither is chosen silently.
    let err = serve_refused(
        cwd.path(),
        &[
            "--data-dir",
            &dir("flagged"),
            "--database-url",
            &database.url(),
        ],
    )
    .await;
    assert!(
        err.contains("--data-dir") && err.contains("--database-url"),
        "{err}"
    );
    assert!(!cwd.path().join("flagged").exists(), "no store was created");
    let both = write(
        "both.toml",
        format!(
            "data-dir = {:?}\ndatabase-url = {:?}\n",
            dir("filed"),
            database.url()
        ),
    );
    let err = serve_refused(cwd.path(), &["--config", &both]).await;
    assert!(
        err.contains("data-dir") && err.contains("database-url"),
        "{err}"
    );
    assert!(!cwd.path().join("filed").exists(), "no store was created");
    let url_only = write("url.toml", format!("database-url = {:?}\n", database.url()));
    let err = serve_refused(
        cwd.path(),
        &["--config", &url_only, "--data-dir", &dir("mixed")],
    )
    .await;
    assert!(err.contains("named twice"), "{err}");
    assert!(!cwd.path().join("mixed").exists(), "no store was created");

    // A schema that does not exist, and a database that does not answer: named with host and schema.
    let missing = database
        .url()
        .replace("search_path%3D", "search_path%3Dnowhere_");
    let err = serve_refused(cwd.path(), &["--database-url", &missing]).await;
    assert!(
        err.contains("on 127.0.0.1:5432, schema nowhere_cp_cluster_") && err.contains("schema"),
        "{err}"
    );
    let away = database
        .url()
        .replace("postgres@127.0.0.1:5432", "postgres:hunter2@127.0.0.1:1");
    let err = serve_refused(cwd.path(), &["--database-url", &away]).await;
    assert!(err.contains("on 127.0.0.1:1, schema cp_cluster_"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the password is never shown: {err}"
    );
    assert_eq!(
        database.tables(),
        Vec::<String>::new(),
        "nothing was created"
    );
}

/// Starts `serve` on a loopback port with `args`, waits until it says it listens, stops it with SIGTERM, and returns
/// everything it wrote to stderr.
async fn serve_and_stop(cwd: &Path, args: &[&str]) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    let mut child = spawn_serve(cwd, args);
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut stderr = child.stderr.take().expect("stderr");
    let listening = tokio::time::timeout(Duration::from_secs(60), stdout.next_line())
        .await
        .expect("serve announced itself")
        .expect("reading stdout")
        .expect("a line");
    assert!(listening.contains("listening on"), "{listening}");
    let pid = child.id().expect("running").to_string();
    let signal = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(signal.success());
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("serve stopped on SIGTERM")
        .expect("waiting for serve");
    assert!(status.success(), "serve exited with {status}");
    let mut err = String::new();
    stderr
        .read_to_string(&mut err)
        .await
        .expect("reading stderr");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_plain_text_without_storage_chatter_on_every_start() {
    let database = TestDatabase::create();
    let cwd = tempfile::tempdir().expect("a directory");
    let url = database.url();
    for store in [["--data-dir", "data"], ["--database-url", url.as_str()]] {
        // The first start creates the store; the second finds it and must have nothing to say about it.
        let _ = serve_and_stop(cwd.path(), &store).await;
        let err = serve_and_stop(cwd.path(), &store).await;
        assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err:?}");
        let noise: Vec<&str> = err
            .lines()
            .filter(|line| line.contains("INFO") && !line.contains("shutting down"))
            .collect();
        assert!(
            noise.is_empty(),
            "{store:?}: INFO lines on a normal start: {noise:#?}"
        );
        assert!(err.contains("using "), "it names the store it used: {err}");
    }
}
