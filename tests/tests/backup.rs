//! `commandpost backup`, `restore` and `check`, run as the real binary against a real server's store: a backup taken
//! while writers append over HTTP and `/sync` holds every write acknowledged before it started; the same backup
//! format moves a store from SQLite to PostgreSQL and back with byte-identical exports; `check` finds damaged,
//! missing and orphaned data; `restore` refuses a store that already holds data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tests::{SyncClient, TestDatabase, TestServer};

/// The real command line, built by this crate.
const CLI: &str = env!("CARGO_BIN_EXE_commandpost-under-test");

/// Runs the command line with `args` and none of the caller's `COMMANDPOST_*` variables.
async fn commandpost(args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(CLI);
    command.stdin(Stdio::null()).args(args).kill_on_drop(true);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("COMMANDPOST_")) {
        command.env_remove(name);
    }
    command.output().await.expect("running the command line")
}

/// Runs a command that must succeed; returns its stdout.
async fn succeeds(args: &[&str]) -> String {
    let output = commandpost(args).await;
    assert!(
        output.status.success(),
        "commandpost {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Every incident of a store exported in every restorable and readable format, by file name.
async fn exports(store: &[&str], scratch: &Path) -> BTreeMap<String, Vec<u8>> {
    let out = scratch.join(format!("export-{}", rand::random::<u32>()));
    let mut args = vec![
        "export",
        "--all",
        "--format",
        "automerge,markdown,json",
        "--out",
        text(&out),
    ];
    args.extend_from_slice(store);
    succeeds(&args).await;
    std::fs::read_dir(&out)
        .expect("the export directory")
        .map(|entry| {
            let path = entry.expect("an entry").path();
            let name = path
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("an exported file"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sqlite_backup_taken_while_writers_append_holds_every_acknowledged_write()
-> anyhow::Result<()> {
    let server = TestServer::start().await;
    let data_dir = server.data_dir();
    backup_while_writing(server, &["--data-dir", text(&data_dir)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_backup_taken_while_writers_append_holds_every_acknowledged_write()
-> anyhow::Result<()> {
    let database = TestDatabase::create();
    let url = database.url();
    let server = TestServer::start_with(|config| config.database_url = Some(url.clone())).await;
    backup_while_writing(server, &["--database-url", url.as_str()]).await
}

/// Backs up the store `server` uses (`store`: the flags naming it) while one writer appends timeline entries over
/// HTTP and another types into the summary over `/sync`; restores the backup into a new SQLite store, checks it, and
/// finds there every write acknowledged before the backup started.
async fn backup_while_writing(server: TestServer, store: &[&str]) -> anyhow::Result<()> {
    let token = server.admin_token.clone();
    let by_http = server.declare(&token, "written over HTTP").await;
    let by_sync = server.declare(&token, "written over sync").await;
    let scratch = tempfile::tempdir()?;

    // Each writer records what the server acknowledged, with when, and counts it.
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let http_writer = {
        let (server_url, stop, counts) = (
            server.base_url.clone(),
            Arc::clone(&stop),
            Arc::clone(&counts),
        );
        let (id, token) = (by_http.id.clone(), token.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut acknowledged = Vec::new();
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let entry = format!("http entry {n:06}");
                let response = http
                    .post(format!("{server_url}/api/incidents/{id}/timeline"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"text": entry}))
                    .send()
                    .await
                    .expect("POST …/timeline");
                assert_eq!(response.status(), reqwest::StatusCode::CREATED);
                acknowledged.push((Instant::now(), entry));
                counts[0].fetch_add(1, Ordering::SeqCst);
            }
            acknowledged
        })
    };
    let sync_writer = {
        let (stop, counts) = (Arc::clone(&stop), Arc::clone(&counts));
        let mut client = SyncClient::connect(&server.ws_url(&token)).await?;
        client.open(&by_sync.id).await?;
        tokio::spawn(async move {
            let mut typed = String::new();
            let mut acknowledged = Vec::new();
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let word = format!("w{n} ");
                client
                    .splice("summary", typed.chars().count(), 0, &word)
                    .await
                    .expect("a splice the server acknowledges");
                typed.push_str(&word);
                acknowledged.push((Instant::now(), typed.clone()));
                counts[1].fetch_add(1, Ordering::SeqCst);
            }
            acknowledged
        })
    };

    // Both writers get going, then the backup runs while they keep writing.
    let written = || {
        [
            counts[0].load(Ordering::SeqCst),
            counts[1].load(Ordering::SeqCst),
        ]
    };
    tests::eventually("both writers writing", Duration::from_secs(60), || async {
        written().iter().all(|&n| n >= 3).then_some(())
    })
    .await?;
    let backup = scratch.path().join("store.backup");
    let started = Instant::now();
    let before = written();
    succeeds(&[&["backup", "--out", text(&backup)][..], store].concat()).await;
    tests::eventually(
        "both writers writing after the backup started",
        Duration::from_secs(60),
        || async {
            written()
                .iter()
                .zip(before)
                .all(|(&now, then)| now > then)
                .then_some(())
        },
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    let http_writes = http_writer.await?;
    let sync_writes = sync_writer.await?;
    assert!(
        http_writes.iter().any(|(at, _)| *at > started)
            && sync_writes.iter().any(|(at, _)| *at > started),
        "both writers kept writing during the backup"
    );

    let restored = scratch.path().join("restored");
    succeeds(&["restore", text(&backup), "--data-dir", text(&restored)]).await;
    succeeds(&["check", "--data-dir", text(&restored)]).await;
    let files = exports(&["--data-dir", text(&restored)], scratch.path()).await;
    let markdown = |id: &str| {
        let (_, bytes) = files
            .iter()
            .find(|(name, _)| name.contains(id) && name.ends_with(".md"))
            .unwrap_or_else(|| panic!("incident {id} is restored"));
        String::from_utf8_lossy(bytes).into_owned()
    };
    let http_markdown = markdown(&by_http.id);
    for (_, entry) in http_writes.iter().filter(|(at, _)| *at < started) {
        assert!(http_markdown.contains(entry), "{entry} is restored");
    }
    let sync_markdown = markdown(&by_sync.id);
    if let Some((_, typed)) = sync_writes.iter().rev().find(|(at, _)| *at < started) {
        assert!(
            sync_markdown.contains(typed.trim_end()),
            "the summary typed before the backup is restored"
        );
    }
    server.stop().await;
    Ok(())
}

/// A store with some history: incidents with several edits each (so several chunks), a token revoked, a template.
async fn populated() -> (TestServer, Vec<String>) {
    let server = TestServer::start().await;
    let token = server.admin_token.clone();
    let mut ids = Vec::new();
    for n in 0..4 {
        let incident = server.declare(&token, &format!("incident {n}")).await;
        for entry in 0..3 {
            server
                .append_timeline(
                    &token,
                    &incident.id,
                    &format!("entry {entry} of incident {n}"),
                )
                .await;
        }
        ids.push(incident.id);
    }
    server.token("someone", "write").await;
    server.revoke("someone").await;
    (server, ids)
}

#[tokio::test]
async fn sqlite_to_postgres_and_back_gives_identical_exports() {
    let (server, _) = populated().await;
    let scratch = tempfile::tempdir().expect("a directory");
    let original_dir = server.data_dir();
    let original = ["--data-dir", text(&original_dir)];
    let database = TestDatabase::create();
    let url = database.url();
    let postgres = ["--database-url", url.as_str()];
    let returned_dir = scratch.path().join("returned");
    let returned = ["--data-dir", text(&returned_dir)];

    let first = scratch.path().join("from-sqlite.backup");
    succeeds(&[&["backup", "--out", text(&first)][..], &original].concat()).await;
    succeeds(&[&["restore", text(&first)][..], &postgres].concat()).await;
    succeeds(&[&["check"][..], &postgres].concat()).await;
    let second = scratch.path().join("from-postgres.backup");
    succeeds(&[&["backup", "--out", text(&second)][..], &postgres].concat()).await;
    succeeds(&[&["restore", text(&second)][..], &returned].concat()).await;
    succeeds(&[&["check"][..], &returned].concat()).await;

    let before = exports(&original, scratch.path()).await;
    assert_eq!(before.len(), 4 * 3, "every incident in three formats");
    assert!(
        before == exports(&postgres, scratch.path()).await,
        "PostgreSQL serves the same exports"
    );
    assert!(
        before == exports(&returned, scratch.path()).await,
        "back in SQLite, the same exports"
    );
    let tokens = succeeds(&[&["token", "list"][..], &original].concat()).await;
    assert_eq!(
        tokens,
        succeeds(&[&["token", "list"][..], &postgres].concat()).await
    );
    assert_eq!(
        tokens,
        succeeds(&[&["token", "list"][..], &returned].concat()).await
    );
    server.stop().await;
}

#[tokio::test]
async fn check_finds_a_corrupted_chunk_a_missing_chunk_and_orphaned_rows() {
    let (server, ids) = populated().await;
    let scratch = tempfile::tempdir().expect("a directory");
    let backup = scratch.path().join("store.backup");
    succeeds(&[
        "backup",
        "--data-dir",
        text(&server.data_dir()),
        "--out",
        text(&backup),
    ])
    .await;
    server.stop().await;
    let damaged = scratch.path().join("damaged");
    succeeds(&["restore", text(&backup), "--data-dir", text(&damaged)]).await;
    succeeds(&["check", "--data-dir", text(&damaged)]).await;

    let db = rusqlite::Connection::open(damaged.join("commandpost.db")).expect("the store's file");
    let chunk = |doc: &str, nth: i64| -> i64 {
        db.query_row(
            "SELECT id FROM chunks WHERE doc = ?1 ORDER BY id LIMIT 1 OFFSET ?2",
            rusqlite::params![doc, nth],
            |row| row.get(0),
        )
        .expect("the document has that many chunks")
    };
    // One byte of a change's contents flipped, past its header: its checksum no longer matches.
    db.execute(
        "UPDATE chunks SET data = CAST(substr(data, 1, length(data) - 3) || x'ff' || substr(data, length(data) - 1) AS BLOB) WHERE id = ?1",
        [chunk(&ids[0], 1)],
    )
    .expect("corrupting a chunk");
    db.execute("DELETE FROM chunks WHERE id = ?1", [chunk(&ids[1], 1)])
        .expect("removing a chunk");
    db.execute("DELETE FROM chunks WHERE doc = ?1", [&ids[2]])
        .expect("removing a document");
    db.execute("DELETE FROM incidents WHERE id = ?1", [&ids[3]])
        .expect("removing an index row");
    db.execute(
        "UPDATE tokens SET scope = 'emperor' WHERE name = 'admin'",
        [],
    )
    .expect("damaging a token");
    drop(db);

    let output = commandpost(&["check", "--data-dir", text(&damaged)]).await;
    let report = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && err.contains("5 problems"),
        "check fails on a damaged store with 5 problems: {report}{err}"
    );
    for (id, problem) in [
        (&ids[0], "does not load"),
        (&ids[1], "missing"),
        (&ids[2], "an index row without a document"),
        (&ids[3], "a document without an index row"),
        (&"admin".to_owned(), "token admin: unreadable"),
    ] {
        assert!(
            report
                .lines()
                .any(|line| line.contains(id.as_str()) && line.contains(problem)),
            "the report names {id}: {problem}: {report}"
        );
    }
    assert_eq!(
        report.lines().count(),
        5,
        "nothing else is reported: {report}"
    );
}

#[tokio::test]
async fn restore_refuses_a_store_with_data_unless_forced() {
    let (server, _) = populated().await;
    let scratch = tempfile::tempdir().expect("a directory");
    let backup = scratch.path().join("store.backup");
    let source = server.data_dir();
    succeeds(&[
        "backup",
        "--data-dir",
        text(&source),
        "--out",
        text(&backup),
    ])
    .await;
    let target = scratch.path().join("target");
    succeeds(&[
        "token",
        "create",
        "--name",
        "bob",
        "--scope",
        "read",
        "--data-dir",
        text(&target),
    ])
    .await;

    let output = commandpost(&["restore", text(&backup), "--data-dir", text(&target)]).await;
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "restore into a store with data succeeded: {err}"
    );
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    let tokens = succeeds(&["token", "list", "--data-dir", text(&target)]).await;
    assert!(
        tokens.starts_with("bob\t") && tokens.lines().count() == 1,
        "nothing was restored: {tokens}"
    );

    succeeds(&[
        "restore",
        text(&backup),
        "--force",
        "--data-dir",
        text(&target),
    ])
    .await;
    assert_eq!(
        exports(&["--data-dir", text(&target)], scratch.path()).await,
        exports(&["--data-dir", text(&source)], scratch.path()).await
    );
    let tokens = succeeds(&["token", "list", "--data-dir", text(&target)]).await;
    assert!(
        !tokens.contains("bob\t"),
        "--force replaced the store: {tokens}"
    );
    server.stop().await;
}

#[tokio::test]
async fn restore_refuses_a_file_that_is_no_backup() {
    let scratch = tempfile::tempdir().expect("a directory");
    let file = scratch.path().join("notes.txt");
    std::fs::write(&file, "not a backup").expect("writing a file");
    let target = scratch.path().join("target");
    let output = commandpost(&["restore", text(&file), "--data-dir", text(&target)]).await;
    assert!(!output.status.success());
    let output = commandpost(&["check", "--backup", text(&file)]).await;
    assert!(!output.status.success());
}

/// The figures of BENCHMARKS.md's "Backups": 10,000 incidents (each declared and given a timeline entry over the
/// API), then the time and size of a backup of each store, a restore into PostgreSQL and a check. Ignored: it takes
/// minutes; run it with `cargo test -p tests --test backup -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: minutes of declaring incidents"]
async fn backup_figures_at_10000_incidents() {
    use futures_util::StreamExt;
    const INCIDENTS: usize = 10_000;
    let server = TestServer::start().await;
    let token = server.admin_token.clone();
    let started = Instant::now();
    futures_util::stream::iter(0..INCIDENTS)
        .for_each_concurrent(16, |n| {
            let (server, token) = (&server, &token);
            async move {
                let incident = server.declare(token, &format!("incident {n}")).await;
                server
                    .append_timeline(token, &incident.id, "paged the on-call engineer")
                    .await;
            }
        })
        .await;
    println!(
        "declared {INCIDENTS} incidents in {:.1?}",
        started.elapsed()
    );

    let scratch = tempfile::tempdir().expect("a directory");
    let data_dir = server.data_dir();
    let sqlite = ["--data-dir", text(&data_dir)];
    let database = TestDatabase::create();
    let url = database.url();
    let postgres = ["--database-url", url.as_str()];
    let store_size = std::fs::metadata(data_dir.join("commandpost.db")).map_or(0, |m| m.len());
    let timed = |what: &'static str, args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        succeeds(&args).await;
        println!("{what}: {:.2?}", started.elapsed());
    };
    let owned = |parts: &[&[&str]]| parts.concat().iter().map(|s| s.to_string()).collect();
    let from_sqlite = scratch.path().join("sqlite.backup");
    timed(
        "backup of the SQLite store",
        owned(&[&["backup", "--out", text(&from_sqlite)], &sqlite]),
    )
    .await;
    timed("check of the SQLite store", owned(&[&["check"], &sqlite])).await;
    timed(
        "restore into PostgreSQL",
        owned(&[&["restore", text(&from_sqlite)], &postgres]),
    )
    .await;
    let from_postgres = scratch.path().join("postgres.backup");
    timed(
        "backup of the PostgreSQL store",
        owned(&[&["backup", "--out", text(&from_postgres)], &postgres]),
    )
    .await;
    let size = |path: &Path| std::fs::metadata(path).expect("the backup").len();
    println!(
        "SQLite store file {store_size} bytes (plus its WAL); backups: {} bytes from SQLite, {} bytes from PostgreSQL",
        size(&from_sqlite),
        size(&from_postgres)
    );
    server.stop().await;
}

#[tokio::test]
async fn scheduled_backups_are_written_kept_and_shown_in_metrics() -> anyhow::Result<()> {
    let backups = tempfile::tempdir().expect("a directory");
    let dir = backups.path().join("scheduled");
    let server = TestServer::start_with(|config| {
        config.backup_dir = Some(dir.clone());
        config.backup_every = Some(Duration::from_millis(200));
        config.backup_keep = 2;
    })
    .await;
    let incident = server
        .declare(&server.admin_token, "backed up on schedule")
        .await;
    tests::eventually(
        "four scheduled backups",
        Duration::from_secs(60),
        || async {
            (server
                .metric("commandpost_backups_written_total")
                .await
                .ok()?
                >= 4)
                .then_some(())
        },
    )
    .await
    .expect("backups are written");
    assert_eq!(server.metric("commandpost_backups_failed_total").await?, 0);
    assert!(server.metric("commandpost_backup_size_bytes").await? > 0);
    let last = server
        .metric("commandpost_backup_last_success_timestamp_seconds")
        .await?;
    assert!(
        last.abs_diff(chrono::Utc::now().timestamp() as u64) < 60,
        "{last}"
    );
    // Stopping waits for a backup under way (and its pruning), so the directory holds what the schedule keeps.
    server.stop().await;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    assert_eq!(files.len(), 2, "only the newest two are kept: {files:?}");
    let newest = files.last().expect("a backup");
    succeeds(&["check", "--backup", text(newest)]).await;
    let restored = backups.path().join("restored");
    succeeds(&["restore", text(newest), "--data-dir", text(&restored)]).await;
    let exported = exports(&["--data-dir", text(&restored)], backups.path()).await;
    assert!(exported.keys().any(|name| name.contains(&incident.id)));
    Ok(())
}

#[tokio::test]
async fn serve_refuses_backup_every_without_a_directory() {
    let scratch = tempfile::tempdir().expect("a directory");
    let data = scratch.path().join("data");
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        text(&data),
        "--backup-every",
        "6h",
    ];
    let output = tokio::time::timeout(Duration::from_secs(60), commandpost(&args))
        .await
        .expect("serve refuses at once instead of serving");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{err}");
    assert!(err.contains("backup-dir"), "{err}");
}
