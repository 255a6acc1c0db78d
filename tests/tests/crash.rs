//! The crash harness: the real `commandpost` binary is killed with SIGKILL at random moments while several writers
//! are busy (HTTP timeline appends and `/sync` edits from several clients, on two incidents), restarted on the same
//! data (the same data directory, or the same PostgreSQL schema), and after every restart each change acknowledged
//! before any kill so far must be there and every document must load.
//!
//! *Acknowledged* is defined in ARCHITECTURE.md (Invariants): a `201 Created` for a timeline append, or a sync message
//! from the server whose heads cover the change (the `SyncClient` tracks this; it is what `acknowledged()` means).
//! A request the kill cut off may or may not have landed; it is neither required nor forbidden afterwards.
//!
//! The moments of the kills come from a seeded RNG; the seed is printed, and `COMMANDPOST_CRASH_SEED=…` replays a
//! run's schedule (the writers' timing still varies). `COMMANDPOST_CRASH_KILLS=…` raises the number of kills for
//! longer local runs; CI runs the default, [`DEFAULT_KILLS`] per store.
//!
//! The same writers run against a graceful stop too: SIGTERM in the middle of the load, the process exits 0 within
//! [`SHUTDOWN_WITHIN`], the write-ahead log has been checkpointed into the database file, and after a restart every
//! acknowledged change on every incident is there.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use automerge::ChangeHash;
use incident_doc::FieldValue;
use incident_doc::schema::FieldKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tests::{DEADLINE, SyncClient, SyncTarget, TestDatabase, TestServer, append_until_refused};
use tokio::task::JoinHandle;

/// Kills per run unless `COMMANDPOST_CRASH_KILLS` says otherwise: the issue asks for at least 20, and 20 keep one
/// store's run under a minute on a loaded two-core machine.
const DEFAULT_KILLS: usize = 20;

/// HTTP writers per incident, each appending timeline entries as fast as the server answers.
const HTTP_WRITERS: usize = 2;

/// Sync writers per incident, each typing into the summary and waiting for every edit's acknowledgement.
const SYNC_WRITERS: usize = 2;

/// Incidents written at once, so a kill can fall in the middle of a group commit spanning documents.
const INCIDENTS: usize = 2;

/// The window in which a kill falls after the writers start, in milliseconds. Its short end catches the server
/// while clients are still joining and documents loading; its long end lets writes pile up in group commits.
const KILL_WINDOW_MS: std::ops::RangeInclusive<u64> = 5..=800;

/// What the writers were promised, per incident: every check after a restart looks for all of it.
#[derive(Default)]
struct Ledger {
    /// Timeline entry ids answered with 201.
    entries: HashSet<String>,
    /// Sync changes whose acknowledgement the client saw.
    changes: HashSet<ChangeHash>,
}

/// What one writer task got acknowledged before the kill ended it.
enum Promised {
    Entries(usize, Vec<(String, String)>),
    Changes(usize, Vec<ChangeHash>),
}

/// Figures of one run, printed at the end (and kept in docs/reliability.md).
#[derive(Default)]
struct Figures {
    kills: usize,
    checks: usize,
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Types into the summary, one change at a time, until the connection dies (the kill); returns the hashes of the
/// changes the server acknowledged. After a local change its hash is the document's only head.
async fn sync_writer(ws_url: SyncTarget, incident: String, tag: String) -> Vec<ChangeHash> {
    let mut promised = Vec::new();
    let Ok(mut client) = SyncClient::connect(&ws_url).await else {
        return promised;
    };
    client.set_author(&tag);
    if client.open(&incident).await.is_err() {
        return promised;
    }
    for n in 0.. {
        if client
            .splice_local("summary", 0, 0, &format!("[{tag} {n}]"))
            .is_err()
        {
            break;
        }
        let mine = client.heads();
        assert_eq!(mine.len(), 1, "a local change is the only head");
        if client.flush().await.is_err() || client.sync_until_acknowledged(DEADLINE).await.is_err()
        {
            break;
        }
        promised.push(mine[0]);
    }
    promised
}

/// Starts every writer against `server`: [`HTTP_WRITERS`] and [`SYNC_WRITERS`] per incident.
fn spawn_writers(
    server: &TestServer,
    token: &str,
    incidents: &[String],
    tag: &str,
) -> Vec<JoinHandle<Promised>> {
    let mut writers = Vec::new();
    for (i, id) in incidents.iter().enumerate() {
        for w in 0..HTTP_WRITERS {
            let task = append_until_refused(
                server.http().clone(),
                server.url(&format!("/api/incidents/{id}/timeline")),
                token.to_owned(),
                format!("{tag} http {w}"),
                Arc::new(AtomicUsize::new(0)),
            );
            writers.push(tokio::spawn(
                async move { Promised::Entries(i, task.await) },
            ));
        }
        for w in 0..SYNC_WRITERS {
            let task = sync_writer(server.ws_url(token), id.clone(), format!("{tag} sync {w}"));
            writers.push(tokio::spawn(
                async move { Promised::Changes(i, task.await) },
            ));
        }
    }
    writers
}

/// Waits for the writers (which end when the server goes away) and adds what they were promised to the ledgers.
async fn collect(writers: Vec<JoinHandle<Promised>>, ledgers: &mut [Ledger]) -> anyhow::Result<()> {
    for writer in writers {
        match writer.await.context("a writer panicked")? {
            Promised::Entries(i, entries) => ledgers[i]
                .entries
                .extend(entries.into_iter().map(|(id, _)| id)),
            Promised::Changes(i, hashes) => ledgers[i].changes.extend(hashes),
        }
    }
    Ok(())
}

/// Checks that the server holds everything in the ledgers and that every document loads; returns how many
/// promises it checked.
async fn check(
    server: &TestServer,
    token: &str,
    incidents: &[String],
    ledgers: &[Ledger],
) -> anyhow::Result<usize> {
    let mut checked = 0;
    for (id, ledger) in incidents.iter().zip(ledgers) {
        // The Automerge export loads the document through its actor, from storage, and it must load as a file.
        let mut document = server.document(token, id).await;
        let lost: Vec<_> = ledger
            .changes
            .iter()
            .filter(|h| document.doc_mut().get_change_by_hash(h).is_none())
            .collect();
        ensure!(
            lost.is_empty(),
            "incident {id}: {} of {} acknowledged sync changes lost: {lost:?}",
            lost.len(),
            ledger.changes.len()
        );
        let view = document.view();
        let entries: HashSet<&str> = match view.field_of_kind(FieldKind::Timeline).map(|f| &f.value)
        {
            Some(FieldValue::Timeline(entries)) => entries.iter().map(|e| e.id.as_str()).collect(),
            other => anyhow::bail!("incident {id} has no timeline: {other:?}"),
        };
        let lost: Vec<_> = ledger
            .entries
            .iter()
            .filter(|e| !entries.contains(e.as_str()))
            .collect();
        ensure!(
            lost.is_empty(),
            "incident {id}: {} of {} acknowledged timeline entries lost: {lost:?}",
            lost.len(),
            ledger.entries.len()
        );
        // And it renders: the Markdown export reads the whole view.
        server.markdown(token, id).await;
        checked += ledger.changes.len() + ledger.entries.len();
    }
    Ok(checked)
}

/// Runs the harness against a server started with `start` (which decides the store), for `kills` kills.
async fn kill_repeatedly(store: &str, mut server: TestServer) -> anyhow::Result<()> {
    let kills = env_number("COMMANDPOST_CRASH_KILLS").map_or(DEFAULT_KILLS, |n| n as usize);
    let seed = env_number("COMMANDPOST_CRASH_SEED").unwrap_or_else(rand::random);
    println!(
        "crash harness ({store}): seed {seed} (COMMANDPOST_CRASH_SEED={seed} replays it), {kills} kills"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();

    let token = server.token("writer", "write").await;
    let mut incidents = Vec::new();
    for n in 0..INCIDENTS {
        incidents.push(server.declare(&token, &format!("Crash drill {n}")).await.id);
    }
    let mut ledgers: Vec<Ledger> = (0..INCIDENTS).map(|_| Ledger::default()).collect();
    let mut figures = Figures::default();

    for round in 0..kills {
        let writers = spawn_writers(&server, &token, &incidents, &format!("round {round}"));
        let delay = rng.random_range(KILL_WINDOW_MS);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill9();
        figures.kills += 1;
        collect(writers, &mut ledgers).await?;
        server.restart().await;
        figures.checks += check(&server, &token, &incidents, &ledgers)
            .await
            .with_context(|| {
                format!(
                    "after kill {} of {kills} ({delay} ms into the round), seed {seed}",
                    round + 1
                )
            })?;
    }

    let entries: usize = ledgers.iter().map(|l| l.entries.len()).sum();
    let changes: usize = ledgers.iter().map(|l| l.changes.len()).sum();
    ensure!(
        entries > 0 && changes > 0,
        "the writers got nothing acknowledged ({entries} entries, {changes} sync changes): the harness tested nothing"
    );
    println!(
        "crash harness ({store}): {} kills survived in {:.1} s; {entries} acknowledged timeline entries and \
         {changes} acknowledged sync changes, {} presence checks after restarts, nothing lost",
        figures.kills,
        started.elapsed().as_secs_f64(),
        figures.checks,
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_write_load_loses_nothing_acknowledged_embedded() -> anyhow::Result<()> {
    kill_repeatedly("embedded SQLite", TestServer::start_process().await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_write_load_loses_nothing_acknowledged_postgres() -> anyhow::Result<()> {
    let db = TestDatabase::create();
    let config = format!("database-url = \"{}\"\n", db.url());
    let server = TestServer::start_process_with_config(&config).await;
    let result = kill_repeatedly("PostgreSQL", server).await;
    drop(db);
    result
}

/// How long a graceful stop under load may take: the server stops accepting, finishes the batches in hand and
/// closes the store. It takes well under a second; the bound leaves room for a loaded CI machine.
const SHUTDOWN_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_write_load_flushes_every_document_and_exits_0() -> anyhow::Result<()> {
    let mut server = TestServer::start_process().await;
    let token = server.token("writer", "write").await;
    let mut incidents = Vec::new();
    for n in 0..3 {
        incidents.push(
            server
                .declare(&token, &format!("Shutdown drill {n}"))
                .await
                .id,
        );
    }
    let mut ledgers: Vec<Ledger> = incidents.iter().map(|_| Ledger::default()).collect();
    let writers = spawn_writers(&server, &token, &incidents, "before SIGTERM");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    // SIGTERM while every writer is busy; panics unless the process exits 0.
    server.stop_process().await;
    let took = started.elapsed();
    ensure!(took < SHUTDOWN_WITHIN, "the graceful stop took {took:?}");
    collect(writers, &mut ledgers).await?;

    // Flushed: closing the store checkpointed the write-ahead log into the database file and removed it.
    let wal = server.data_dir().join("commandpost.db-wal");
    let left = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    ensure!(
        left == 0,
        "{} still holds {left} bytes after the graceful stop",
        wal.display()
    );

    server.restart().await;
    let checked = check(&server, &token, &incidents, &ledgers).await?;
    ensure!(
        checked > 0,
        "the writers got nothing acknowledged before SIGTERM"
    );
    println!(
        "SIGTERM under load: exited 0 after {:.0} ms; {checked} acknowledged changes on {} incidents all present after the restart",
        took.as_secs_f64() * 1000.0,
        incidents.len()
    );
    server.stop().await;
    Ok(())
}

/// Regression: the signal handlers used to be installed only when the server first polled its shutdown future,
/// after printing its address, so a SIGTERM right after startup killed it (exit by signal, no graceful stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_startup_is_a_graceful_stop() {
    for _ in 0..5 {
        // `stop` sends SIGTERM as soon as the address is printed and panics unless the process exits 0.
        TestServer::start_process().await.stop().await;
    }
}
