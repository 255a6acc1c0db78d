//! The embedded default backend: one SQLite database file, `commandpost.db`, in the data directory.
//!
//! Writes go through one dedicated writer thread that owns the only writing connection. Callers queue
//! their write on a channel and await a reply; the thread takes everything queued (up to 256 writes),
//! runs it in one transaction and commits once, so a single fsync acknowledges the whole batch (group
//! commit). Each write runs inside its own savepoint: a write that fails (a conflict, say) is rolled
//! back and reported to its caller alone, while the rest of the batch commits. If the transaction
//! itself fails, every caller in the batch gets the error.
//!
//! Reads use a small pool of separate connections on tokio's blocking threads. In WAL mode a reader
//! sees the last committed state and never waits for the writer's open transaction.
//!
//! Durability: the database runs in WAL mode with `synchronous=FULL`, so every commit fsyncs the
//! write-ahead log before the writer replies; an acknowledged write survives a crash or power loss.
//! (`synchronous=NORMAL` would also keep the file consistent, but could lose the last acknowledged
//! writes on power loss, and the server tells clients their edits are saved.) Group commit is what
//! keeps this affordable: the cost of an fsync is shared by every write that queued up during the
//! previous one.
//!
//! SQLite maps the write-ahead log's index, `commandpost.db-shm`, into memory and writes to it on every transaction
//! (readers too, to mark what they read). Once that file cannot be written (made immutable, its file system remounted
//! read-only) a write to a mapped page is not an error SQLite could return but SIGBUS, which ends the process. So
//! each batch and each read first asks the kernel whether the file may still be written (`access(2)`, which opens
//! nothing: closing a descriptor of it would drop SQLite's locks) and is refused as [`StoreError::Unavailable`] if
//! not, without closing any connection (closing the last one checkpoints, which writes to the index too). Only a
//! fault that strikes between that check and the write, a window of microseconds, is still fatal.
//!
//! Failures do not latch: after a failed batch the writer drops its connection and reopens the
//! database for the next batch, so the store recovers by itself once the disk has space again or the
//! directory is writable again. Before each batch the writer also checks that the database file at
//! the configured path is still the file it has open; writes into a file that was moved or deleted
//! would succeed and then be lost, so they are refused as [`StoreError::Unavailable`] instead.

use std::fs;
#[cfg(unix)]
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use incident_doc::channel::{Channel, Network};
use incident_doc::schema::Status;
use rusqlite::types::{Type, Value};
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior, params,
};
use tokio::sync::{mpsc, oneshot};

use super::chat_log::{ChatLine, NewChatLine};
use super::lease;
use super::outbox::{
    Attempt, Carried, Delivery, DeliveryRecord, DeliveryState, NewDelivery, Sink, clip_error,
};
use super::replays::{ReplayRecord, ReplayState};
use super::{
    AuditEvent, AuditFilter, AuditRecord, ChunkId, IncidentSummary, ListFilter, SessionRecord,
    Store, StoreError, Stored, StoredTemplate, TEMPLATES_COUNTER, TokenRecord, audit_detail,
    status_from_column,
};
use crate::auth::Scope;
use wire::DocumentId;

/// The database file's name inside the data directory.
const DB_FILE: &str = "commandpost.db";

/// How long a connection waits for another process's lock before giving up with `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many writes may wait for the writer thread before callers are slowed down (backpressure).
const QUEUE_DEPTH: usize = 1024;

/// The most writes committed in one transaction, which bounds the latency a batch adds to its first
/// caller.
const MAX_BATCH: usize = 256;

/// How many idle read connections are kept for reuse.
const MAX_IDLE_READERS: usize = 4;

/// The schema migrations in order; `PRAGMA user_version` records how many have been applied. A
/// released migration is never edited: changes are new entries.
pub(super) const MIGRATIONS: &[&str] = &[
    // Version 1. Chunk ids come from AUTOINCREMENT so that they are never reused, even after the
    // newest chunk is deleted: compaction relies on an id meaning the same chunk forever. Timestamps
    // are microseconds since the Unix epoch. A token name is unique among unrevoked tokens only, so a
    // revoked token's record stays for audits while its name can be reused.
    "CREATE TABLE chunks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        doc TEXT NOT NULL,
        data BLOB NOT NULL
    );
    CREATE INDEX chunks_by_doc ON chunks (doc, id);
    CREATE TABLE incidents (
        id TEXT PRIMARY KEY NOT NULL,
        title TEXT NOT NULL,
        template TEXT NOT NULL,
        status TEXT NOT NULL,
        severity TEXT,
        number INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX incidents_by_created ON incidents (created_at);
    CREATE INDEX incidents_by_status ON incidents (status, created_at);
    CREATE TABLE counters (
        name TEXT PRIMARY KEY NOT NULL,
        value INTEGER NOT NULL
    );
    CREATE TABLE tokens (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        scope TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;",
    // Version 2: the webhook outbox (`store/outbox.rs`), one row per event and endpoint, kept as the
    // delivery log. Times in microseconds, as above.
    "CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint TEXT NOT NULL,
        event_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        doc TEXT NOT NULL,
        coalesce_key TEXT,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        last_attempt_at INTEGER,
        last_status INTEGER,
        last_error TEXT,
        delivered_at INTEGER,
        UNIQUE (endpoint, event_id)
    );
    CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
    CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint, id);",
    // Version 3: `/sync` tickets (`api/tickets.rs`), by the hash of the ticket; rows live for seconds.
    "CREATE TABLE tickets (
        hash TEXT PRIMARY KEY NOT NULL,
        token_hash TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX tickets_by_expiry ON tickets (expires_at);
    CREATE INDEX tickets_by_token ON tickets (token_hash);",
    // Version 4: the Incident Commander in the index, for the incident list; rows gain it on their next change.
    "ALTER TABLE incidents ADD COLUMN commander TEXT;",
    // Version 5: templates uploaded through the admin API (`server/src/templates.rs`); the `counters` row
    // `templates_revision` moves with every change, for nodes to poll.
    "CREATE TABLE templates (
        id TEXT PRIMARY KEY NOT NULL,
        source TEXT NOT NULL,
        updated_by TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );",
    // Version 6: the audit log (`crate::audit`), append-only; `detail` is a JSON object as text.
    "CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL,
        origin TEXT
    );
    CREATE INDEX audit_log_by_actor ON audit_log (actor, id);
    CREATE INDEX audit_log_by_target ON audit_log (target, id);",
    // Version 7: single sign-on (`sso.rs`): sessions by the hash of their secret, and sign-ins in progress by the
    // hash of their OAuth state (rows live for minutes). Times in microseconds, as above.
    "CREATE TABLE sessions (
        id TEXT PRIMARY KEY NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        scope TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        created_from TEXT,
        revoked_at INTEGER
    );
    CREATE INDEX sessions_by_expiry ON sessions (expires_at);
    CREATE TABLE logins (
        hash TEXT PRIMARY KEY NOT NULL,
        data TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX logins_by_expiry ON logins (expires_at);",
    // Version 8: restricted incidents (`IncidentSummary::restricted`, `members`): whether only members may see the incident,
    // and its members as a JSON array of names, so listings filter without loading documents. Rows stay open until
    // their incident next changes (an incident is restricted only by a change, which rewrites its row).
    "ALTER TABLE incidents ADD COLUMN restricted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE incidents ADD COLUMN members TEXT NOT NULL DEFAULT '[]';",
    // Version 9: who sends a delivery (`outbox::Sink`): the webhook deliverer, the mailer or a chat bot, each
    // claiming only its own rows (a chat network's rows only on the node holding its connection).
    "ALTER TABLE deliveries ADD COLUMN sink TEXT NOT NULL DEFAULT 'webhook';
    CREATE INDEX deliveries_due_by_sink ON deliveries (sink, state, next_attempt_at);",
    // Version 10: chat channels bound to incidents (`IncidentSummary::channel`, JSON, and `channel_key`, the
    // network and lowercased address a heard line is looked up by) and the channel log (`store::chat_log`): lines
    // with a network id are unique per incident and channel, so a repeated Slack event logs nothing twice.
    "ALTER TABLE incidents ADD COLUMN channel TEXT;
    ALTER TABLE incidents ADD COLUMN channel_key TEXT;
    CREATE INDEX incidents_by_channel ON incidents (channel_key);
    CREATE TABLE chat_lines (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        doc TEXT NOT NULL,
        network TEXT NOT NULL,
        channel TEXT NOT NULL,
        line_id TEXT,
        speaker TEXT NOT NULL,
        person TEXT,
        text TEXT NOT NULL,
        at INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX chat_lines_once ON chat_lines (doc, network, channel, line_id);
    CREATE INDEX chat_lines_by_doc ON chat_lines (doc, id);",
    // Version 11: leases (`store/lease.rs`), which node holds a cluster-wide role such as a
    // chat bot's one connection; `epoch` is the fencing token.
    "CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );",
    // Version 12: one incident's
    // deliveries of one sink in order, for its mail thread (`Store::deliveries_of`).
    "CREATE INDEX deliveries_by_doc ON deliveries (doc, sink, id);",
    // Version 13: replay drills (`store/replays.rs`): one row per drill, its steps as JSON, its clock and the next
    // step; `version` moves on with every update, which is made only at the version read.
    "CREATE TABLE replays (
        drill TEXT PRIMARY KEY NOT NULL,
        source TEXT NOT NULL,
        facilitator TEXT NOT NULL,
        speed_centi INTEGER NOT NULL,
        state TEXT NOT NULL,
        elapsed_ms INTEGER NOT NULL,
        since INTEGER NOT NULL,
        next_step INTEGER NOT NULL,
        total INTEGER NOT NULL,
        steps TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX replays_by_state ON replays (state);",
];

/// The SQLite backend of [`Store`]; see the module documentation for how it batches and syncs.
pub struct SqliteStore {
    /// Feeds the writer thread; `None` once closed. Every write clones the sender, so the thread stops
    /// only after the last queued write.
    queue: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    /// The writer thread, joined by [`Store::close`] so that shutdown waits for the queued writes.
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The read connections, shared with the blocking tasks that use them.
    readers: Arc<Readers>,
    /// Group-commit counters, updated by the writer thread.
    stats: Arc<Stats>,
}

/// Counters of the group commit, for metrics: how well writes share transactions and how often
/// transactions fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Transactions committed since the store was opened.
    pub transactions: u64,
    /// Writes carried by those transactions, including writes that failed on their own (a conflict)
    /// while the rest of their batch committed.
    pub operations: u64,
    /// Transactions that failed as a whole, each failing every write in it.
    pub failed_transactions: u64,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `dir`, creating `dir` too, and starts the writer
    /// thread. This blocks on file I/O, so call it before serving or from a blocking task.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let created = !dir.is_dir();
        fs::create_dir_all(dir)
            .map_err(|e| io_error(&format!("cannot create {}", dir.display()), &e))?;
        let path = Self::file(dir);
        let conn = open_writer(&path, true)?;
        let identity = file_identity(&path)?;
        // Make the new directory entries durable too, or a crash could forget the whole database.
        sync_dir(dir)?;
        if created {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            sync_dir(parent.unwrap_or(Path::new(".")))?;
        }

        let readers = Arc::new(Readers {
            path: path.clone(),
            generation: AtomicU64::new(0),
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        let stats = Arc::new(Stats::default());
        let writer = Writer {
            path,
            conn: Some((conn, identity)),
            readers: Arc::clone(&readers),
            stats: Arc::clone(&stats),
        };
        let (queue, receiver) = mpsc::channel(QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(|e| io_error("cannot start the SQLite writer thread", &e))?;
        Ok(Self {
            queue: Mutex::new(Some(queue)),
            writer: Mutex::new(Some(thread)),
            readers,
            stats,
        })
    }

    /// The database file of the store in `dir`, which [`SqliteStore::open`] creates if it is missing.
    pub fn file(dir: &Path) -> PathBuf {
        dir.join(DB_FILE)
    }

    /// Returns the group-commit counters so far.
    pub fn commit_stats(&self) -> CommitStats {
        CommitStats {
            transactions: self.stats.transactions.load(Ordering::Relaxed),
            operations: self.stats.operations.load(Ordering::Relaxed),
            failed_transactions: self.stats.failed_transactions.load(Ordering::Relaxed),
        }
    }

    /// Queues `work` for the writer thread and waits until the batch holding it has committed.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let queue = lock(&self.queue).clone().ok_or_else(closed)?;
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            work: Some(work),
            outcome: None,
            reply,
        });
        queue.send(job).await.map_err(|_| writer_stopped())?;
        answer.await.map_err(|_| writer_stopped())?
    }

    /// Runs `read` on a pooled read connection in a blocking task.
    async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.with(read))
            .await
            .map_err(|e| StoreError::Unavailable(format!("a read task failed: {e}")))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn append_with(
        &self,
        doc: DocumentId,
        chunk: Vec<u8>,
        summary: Option<IncidentSummary>,
        deliveries: Vec<NewDelivery>,
    ) -> Result<ChunkId, StoreError> {
        super::refuse_foreign_summary(doc, summary.as_ref())?;
        let doc = doc.to_string();
        self.write(move |conn| {
            let id = conn
                .prepare_cached("INSERT INTO chunks (doc, data) VALUES (?1, ?2)")
                .and_then(|mut insert| insert.insert(params![doc, chunk]))
                .map_err(db_error)?;
            if let Some(summary) = &summary {
                upsert_summary(conn, summary)?;
            }
            queue_deliveries(conn, &deliveries)?;
            Ok(ChunkId(id))
        })
        .await
    }

    async fn enqueue(&self, deliveries: Vec<NewDelivery>) -> Result<(), StoreError> {
        self.write(move |conn| queue_deliveries(conn, &deliveries))
            .await
    }

    async fn claim_deliveries(
        &self,
        sink: Sink,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |conn| {
            // One writer: the select and the update cannot interleave with another claim.
            let mut claim = conn
                .prepare_cached(
                    "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?2
                     WHERE id IN (SELECT id FROM deliveries WHERE sink = ?4 AND state = 'pending'
                                  AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id LIMIT ?3)
                     RETURNING id, endpoint, event_id, payload, attempts",
                )
                .map_err(db_error)?;
            let rows = claim
                .query_map(
                    params![
                        now.timestamp_micros(),
                        lease_until.timestamp_micros(),
                        limit,
                        sink.as_str()
                    ],
                    |row| {
                        Ok(Delivery {
                            id: row.get(0)?,
                            endpoint: row.get(1)?,
                            event_id: row.get(2)?,
                            payload: row.get(3)?,
                            attempts: row.get(4)?,
                        })
                    },
                )
                .map_err(db_error)?;
            let mut claimed = rows.collect::<Result<Vec<_>, _>>().map_err(db_error)?;
            claimed.sort_by_key(|d| d.id);
            Ok(claimed)
        })
        .await
    }

    async fn finish_delivery(&self, id: i64, attempt: &Attempt) -> Result<(), StoreError> {
        let attempt = attempt.clone();
        self.write(move |conn| {
            let at = attempt.at.timestamp_micros();
            let next = attempt.next_attempt_at().timestamp_micros();
            let delivered = attempt.delivered_at().map(|t| t.timestamp_micros());
            conn.prepare_cached(
                "UPDATE deliveries SET state = ?2, next_attempt_at = ?3, last_attempt_at = ?4,
                     last_status = ?5, last_error = ?6, delivered_at = ?7
                 WHERE id = ?1",
            )
            .and_then(|mut update| {
                update.execute(params![
                    id,
                    attempt.state().as_str(),
                    next,
                    at,
                    attempt.status,
                    attempt.error.as_deref().map(clip_error),
                    delivered,
                ])
            })
            .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn deliveries(
        &self,
        endpoint: &str,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let endpoint = endpoint.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT id, event_id, kind, doc, state, attempts, created_at, next_attempt_at,
                            last_attempt_at, last_status, last_error, delivered_at
                     FROM deliveries WHERE endpoint = ?1 ORDER BY id DESC LIMIT ?2",
                )
                .map_err(db_error)?;
            let rows = select
                .query_map(params![endpoint, limit], delivery_from_row)
                .map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
        .await
    }

    async fn deliveries_of(&self, doc: DocumentId, sink: Sink) -> Result<Vec<Carried>, StoreError> {
        let doc = doc.to_string();
        self.read(move |conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT id, event_id, kind, doc, state, attempts, created_at, next_attempt_at,
                            last_attempt_at, last_status, last_error, delivered_at, endpoint, payload
                     FROM deliveries WHERE doc = ?1 AND sink = ?2 ORDER BY id",
                )
                .map_err(db_error)?;
            let rows = select
                .query_map(params![doc, sink.as_str()], |row| {
                    Ok(Carried {
                        record: delivery_from_row(row)?,
                        endpoint: row.get(12)?,
                        payload: row.get(13)?,
                    })
                })
                .map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
        .await
    }

    async fn load_after(
        &self,
        doc: DocumentId,
        after: ChunkId,
    ) -> Result<Option<Stored>, StoreError> {
        let doc = doc.to_string();
        self.read(move |conn| {
            // One statement reads one consistent snapshot, so `upto` matches `chunks` exactly.
            let mut select = conn
                .prepare_cached(
                    "SELECT id, data FROM chunks WHERE doc = ?1 AND id > ?2 ORDER BY id",
                )
                .map_err(db_error)?;
            let rows = select
                .query_map(params![doc, after.0], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
                })
                .map_err(db_error)?;
            let mut chunks = Vec::new();
            let mut upto = None;
            for row in rows {
                let (id, data) = row.map_err(db_error)?;
                chunks.push(data);
                upto = Some(ChunkId(id));
            }
            Ok(upto.map(|upto| Stored { chunks, upto }))
        })
        .await
    }

    async fn compact(
        &self,
        doc: DocumentId,
        snapshot: Vec<u8>,
        upto: ChunkId,
    ) -> Result<(), StoreError> {
        let doc = doc.to_string();
        self.write(move |conn| {
            let newest_covered: Option<i64> = conn
                .prepare_cached("SELECT MAX(id) FROM chunks WHERE doc = ?1 AND id <= ?2")
                .and_then(|mut select| select.query_row(params![doc, upto.0], |row| row.get(0)))
                .map_err(db_error)?;
            // Nothing at or below `upto`: a compaction of a later load already replaced these chunks.
            let Some(keep) = newest_covered else {
                return Ok(());
            };
            // The snapshot takes the place of the newest chunk it covers, so it sorts before every
            // chunk appended after `upto` and keeps an id that belongs to this document.
            conn.prepare_cached("UPDATE chunks SET data = ?2 WHERE id = ?1")
                .and_then(|mut update| update.execute(params![keep, snapshot]))
                .map_err(db_error)?;
            conn.prepare_cached("DELETE FROM chunks WHERE doc = ?1 AND id < ?2")
                .and_then(|mut delete| delete.execute(params![doc, keep]))
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, doc: DocumentId) -> Result<bool, StoreError> {
        let doc = doc.to_string();
        self.write(move |conn| {
            let chunks = conn
                .execute("DELETE FROM chunks WHERE doc = ?1", [&doc])
                .map_err(db_error)?;
            let index = conn
                .execute("DELETE FROM incidents WHERE id = ?1", [&doc])
                .map_err(db_error)?;
            conn.execute("DELETE FROM chat_lines WHERE doc = ?1", [&doc])
                .map_err(db_error)?;
            Ok(chunks + index > 0)
        })
        .await
    }

    async fn summary(&self, doc: DocumentId) -> Result<Option<IncidentSummary>, StoreError> {
        let doc = doc.to_string();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT id, title, template, status, severity, number, created_at, updated_at, commander,
                        restricted, members, channel
                 FROM incidents WHERE id = ?1",
            )
            .and_then(|mut select| select.query_row([&doc], summary_from_row).optional())
            .map_err(db_error)
        })
        .await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<IncidentSummary>, StoreError> {
        let status = filter.status.map(Status::as_str);
        let severity = filter.severity.clone();
        let viewer = filter.viewer.clone();
        // SQLite reads a negative limit as "no limit".
        let limit = filter
            .limit
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        self.read(move |conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT id, title, template, status, severity, number, created_at, updated_at, commander,
                        restricted, members, channel
                     FROM incidents
                     WHERE (?1 IS NULL OR status = ?1) AND (?3 IS NULL OR severity = ?3)
                       AND (?4 IS NULL OR restricted = 0
                            OR EXISTS (SELECT 1 FROM json_each(members) WHERE value = ?4))
                     ORDER BY created_at DESC, id LIMIT ?2",
                )
                .map_err(db_error)?;
            let rows = select
                .query_map(params![status, limit, severity, viewer], summary_from_row)
                .map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
        .await
    }

    async fn next_incident_number(&self) -> Result<i64, StoreError> {
        self.write(|conn| {
            conn.query_row(
                "INSERT INTO counters (name, value) VALUES ('incident_number', 1)
                 ON CONFLICT (name) DO UPDATE SET value = value + 1
                 RETURNING value",
                [],
                |row| row.get(0),
            )
            .map_err(db_error)
        })
        .await
    }

    async fn create_token(&self, name: &str, scope: Scope, hash: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        let hash = hash.to_owned();
        self.write(move |conn| {
            let taken: bool = conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM tokens WHERE name = ?1 AND revoked_at IS NULL)",
                    [&name],
                    |row| row.get(0),
                )
                .map_err(db_error)?;
            if taken {
                return Err(StoreError::Conflict(format!(
                    "an unrevoked token named {name:?} already exists"
                )));
            }
            // A reused hash violates the UNIQUE constraint, which maps to `Conflict`.
            conn.execute(
                "INSERT INTO tokens (name, scope, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, scope.as_str(), hash, Utc::now().timestamp_micros()],
            )
            .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let hash = hash.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT name, scope, created_at, revoked_at FROM tokens WHERE hash = ?1",
            )
            .and_then(|mut select| select.query_row([&hash], token_from_row).optional())
            .map_err(db_error)
        })
        .await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.read(|conn| {
            let mut select = conn
                .prepare_cached("SELECT name, scope, created_at, revoked_at FROM tokens ORDER BY created_at, id")
                .map_err(db_error)?;
            let rows = select.query_map([], token_from_row).map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
        .await
    }

    async fn revoke_token(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write(move |conn| {
            let revoked = conn
                .execute(
                    "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                    params![name, Utc::now().timestamp_micros()],
                )
                .map_err(db_error)?;
            Ok(revoked > 0)
        })
        .await
    }

    async fn token_count(&self) -> Result<u64, StoreError> {
        let count: i64 = self
            .read(|conn| {
                conn.query_row(
                    "SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL",
                    [],
                    |row| row.get(0),
                )
                .map_err(db_error)
            })
            .await?;
        u64::try_from(count)
            .map_err(|_| StoreError::Corrupt(format!("negative token count {count}")))
    }

    async fn create_ticket(
        &self,
        hash: &str,
        token_hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        limit: usize,
    ) -> Result<bool, StoreError> {
        let hash = hash.to_owned();
        let token_hash = token_hash.to_owned();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM tickets WHERE expires_at <= ?1")
                .and_then(|mut purge| purge.execute([now.timestamp_micros()]))
                .map_err(db_error)?;
            let held: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM tickets WHERE token_hash = ?1")
                .and_then(|mut count| count.query_row([&token_hash], |row| row.get(0)))
                .map_err(db_error)?;
            if usize::try_from(held).unwrap_or(usize::MAX) >= limit {
                return Ok(false);
            }
            conn.prepare_cached(
                "INSERT INTO tickets (hash, token_hash, expires_at) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut insert| {
                insert.execute(params![hash, token_hash, expires_at.timestamp_micros()])
            })
            .map_err(db_error)?;
            Ok(true)
        })
        .await
    }

    async fn take_ticket(
        &self,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let hash = hash.to_owned();
        // A write, so that the writer thread's order makes each ticket one caller's.
        self.write(move |conn| {
            conn.prepare_cached(
                "DELETE FROM tickets WHERE hash = ?1 RETURNING token_hash, expires_at",
            )
            .and_then(|mut take| {
                take.query_row([&hash], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .optional()
            })
            .map(|taken| {
                taken
                    .filter(|(_, expires_at)| *expires_at > now.timestamp_micros())
                    .map(|(token_hash, _)| token_hash)
            })
            .map_err(db_error)
        })
        .await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let expires = now + ttl;
        // A write, so that the writer thread's order makes a free lease one caller's.
        self.write(move |conn| {
            conn.prepare_cached(&lease::acquire_statement("?1", "?2", "?3", "?4"))
                .and_then(|mut acquire| {
                    acquire
                        .query_row(
                            params![
                                name,
                                holder,
                                now.timestamp_micros(),
                                expires.timestamp_micros()
                            ],
                            |row| row.get::<_, i64>(0),
                        )
                        .optional()
                })
                .map_err(db_error)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |conn| {
            conn.prepare_cached("UPDATE leases SET expires_at = ?3 WHERE name = ?1 AND holder = ?2")
                .and_then(|mut release| {
                    release.execute(params![name, holder, lease::released().timestamp_micros()])
                })
                .map(drop)
                .map_err(db_error)
        })
        .await
    }

    async fn create_session(&self, hash: &str, session: &SessionRecord) -> Result<(), StoreError> {
        let hash = hash.to_owned();
        let session = session.clone();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM sessions WHERE expires_at <= ?1")
                .and_then(|mut purge| purge.execute([session.created_at.timestamp_micros()]))
                .map_err(db_error)?;
            conn.prepare_cached(
                "INSERT INTO sessions (id, hash, name, scope, created_at, last_used_at, expires_at, created_from)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut insert| {
                insert.execute(params![
                    session.id,
                    hash,
                    session.name,
                    session.scope.as_str(),
                    session.created_at.timestamp_micros(),
                    session.last_used_at.timestamp_micros(),
                    session.expires_at.timestamp_micros(),
                    session.created_from,
                ])
            })
            .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn session_by_hash(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let hash = hash.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE hash = ?1"
            ))
            .and_then(|mut select| select.query_row([&hash], session_from_row).optional())
            .map_err(db_error)
        })
        .await
    }

    async fn touch_session(&self, id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE sessions SET last_used_at = ?2 WHERE id = ?1 AND last_used_at < ?2",
            )
            .and_then(|mut touch| touch.execute(params![id, at.timestamp_micros()]))
            .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn list_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.read(|conn| {
            let mut select = conn
                .prepare_cached(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions ORDER BY created_at, id"
                ))
                .map_err(db_error)?;
            let rows = select.query_map([], session_from_row).map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
        .await
    }

    async fn revoke_session(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| {
            let revoked = conn
                .execute(
                    "UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    params![id, Utc::now().timestamp_micros()],
                )
                .map_err(db_error)?;
            Ok(revoked > 0)
        })
        .await
    }

    async fn create_login(
        &self,
        hash: &str,
        data: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (hash, data) = (hash.to_owned(), data.to_owned());
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM logins WHERE expires_at <= ?1")
                .and_then(|mut purge| purge.execute([now.timestamp_micros()]))
                .map_err(db_error)?;
            conn.prepare_cached("INSERT INTO logins (hash, data, expires_at) VALUES (?1, ?2, ?3)")
                .and_then(|mut insert| {
                    insert.execute(params![hash, data, expires_at.timestamp_micros()])
                })
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn take_login(
        &self,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let hash = hash.to_owned();
        // A write, so that the writer thread's order gives each sign-in to one caller.
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM logins WHERE hash = ?1 RETURNING data, expires_at")
                .and_then(|mut take| {
                    take.query_row([&hash], |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                    })
                    .optional()
                })
                .map(|taken| {
                    taken
                        .filter(|(_, expires_at)| *expires_at > now.timestamp_micros())
                        .map(|(data, _)| data)
                })
                .map_err(db_error)
        })
        .await
    }

    async fn put_template(&self, id: &str, source: &str, by: &str) -> Result<(), StoreError> {
        let (id, source, by) = (id.to_owned(), source.to_owned(), by.to_owned());
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO templates (id, source, updated_by, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET source = excluded.source, updated_by = excluded.updated_by,
                 updated_at = excluded.updated_at",
                params![id, source, by, Utc::now().timestamp_micros()],
            )
            .map_err(db_error)?;
            bump_templates_revision(conn)
        })
        .await
    }

    async fn delete_template(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| {
            let deleted = conn
                .execute("DELETE FROM templates WHERE id = ?1", [&id])
                .map_err(db_error)?;
            if deleted > 0 {
                bump_templates_revision(conn)?;
            }
            Ok(deleted > 0)
        })
        .await
    }

    async fn templates(&self) -> Result<Vec<StoredTemplate>, StoreError> {
        self.read(|conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT id, source, updated_by, updated_at FROM templates ORDER BY id",
                )
                .map_err(db_error)?;
            let rows = select
                .query_map([], |row| {
                    Ok(StoredTemplate {
                        id: row.get(0)?,
                        source: row.get(1)?,
                        updated_by: row.get(2)?,
                        updated_at: time_column(row, 3)?,
                    })
                })
                .map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
        .await
    }

    async fn templates_revision(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT value FROM counters WHERE name = ?1")
                .and_then(|mut select| {
                    select
                        .query_row([TEMPLATES_COUNTER], |row| row.get(0))
                        .optional()
                })
                .map(Option::unwrap_or_default)
                .map_err(db_error)
        })
        .await
    }

    async fn append_chat(&self, lines: Vec<NewChatLine>) -> Result<usize, StoreError> {
        if lines.is_empty() {
            return Ok(0);
        }
        self.write(move |conn| {
            let mut insert = conn
                .prepare_cached(
                    "INSERT INTO chat_lines (doc, network, channel, line_id, speaker, person, text, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (doc, network, channel, line_id) DO NOTHING",
                )
                .map_err(db_error)?;
            let mut added = 0;
            for line in &lines {
                added += insert
                    .execute(params![
                        line.doc.to_string(),
                        line.network.as_str(),
                        line.channel,
                        line.line_id,
                        line.speaker,
                        line.person,
                        line.text,
                        line.at.timestamp_micros(),
                    ])
                    .map_err(db_error)?;
            }
            Ok(added)
        })
        .await
    }

    async fn chat_log(
        &self,
        doc: DocumentId,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ChatLine>, StoreError> {
        let doc = doc.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT id, network, channel, speaker, person, text, at FROM chat_lines
                     WHERE doc = ?1 AND (?2 IS NULL OR id < ?2)
                     ORDER BY id DESC LIMIT ?3",
                )
                .map_err(db_error)?;
            let rows = select
                .query_map(params![doc, before, limit], chat_line_from_row)
                .map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
        .await
    }

    async fn chat_line(
        &self,
        doc: DocumentId,
        network: Network,
        channel: &str,
        line_id: &str,
    ) -> Result<Option<ChatLine>, StoreError> {
        let args = (
            doc.to_string(),
            network.as_str(),
            channel.to_owned(),
            line_id.to_owned(),
        );
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT id, network, channel, speaker, person, text, at FROM chat_lines
                 WHERE doc = ?1 AND network = ?2 AND channel = ?3 AND line_id = ?4",
            )
            .and_then(|mut select| {
                select
                    .query_row(params![args.0, args.1, args.2, args.3], chat_line_from_row)
                    .optional()
            })
            .map_err(db_error)
        })
        .await
    }

    async fn incident_by_channel(
        &self,
        network: Network,
        address: &str,
    ) -> Result<Option<IncidentSummary>, StoreError> {
        let key = super::chat_log::channel_key(network, address);
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT id, title, template, status, severity, number, created_at, updated_at, commander,
                        restricted, members, channel
                 FROM incidents WHERE channel_key = ?1 AND status <> 'closed'
                 ORDER BY created_at DESC LIMIT 1",
            )
            .and_then(|mut select| select.query_row([&key], summary_from_row).optional())
            .map_err(db_error)
        })
        .await
    }

    async fn bound_channels(&self, network: Network) -> Result<Vec<Channel>, StoreError> {
        let pattern = super::chat_log::network_pattern(network);
        let texts: Vec<Option<String>> = self
            .read(move |conn| {
                let mut select = conn
                    .prepare_cached(
                        "SELECT channel FROM incidents
                         WHERE channel_key LIKE ?1
                           AND (status <> 'closed'
                                OR EXISTS (SELECT 1 FROM deliveries WHERE doc = incidents.id AND sink = ?2
                                                                      AND state = 'pending'))
                         ORDER BY channel_key",
                    )
                    .map_err(db_error)?;
                let rows = select
                    .query_map(params![pattern, Sink::from(network).as_str()], |row| row.get(0))
                    .map_err(db_error)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
            })
            .await?;
        Ok(super::chat_log::distinct_channels(texts))
    }

    async fn record_audit(&self, event: &AuditEvent<'_>) -> Result<(), StoreError> {
        let row = (
            event.actor.to_owned(),
            event.action,
            event.target.to_owned(),
            audit_detail(&event.detail),
            event.from.clone(),
        );
        self.write(move |conn| {
            let (actor, action, target, detail, origin) = &row;
            conn.execute(
                "INSERT INTO audit_log (at, actor, action, target, detail, origin) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![Utc::now().timestamp_micros(), actor, action, target, detail, origin],
            )
            .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let filter = filter.clone();
        self.read(move |conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT id, at, actor, action, target, detail, origin FROM audit_log
                     WHERE (?1 IS NULL OR actor = ?1)
                       AND (?2 IS NULL OR action = ?2 OR (?3 AND substr(action, 1, length(?2)) = ?2))
                       AND (?4 IS NULL OR target = ?4)
                       AND (?5 IS NULL OR at >= ?5) AND (?6 IS NULL OR at < ?6)
                       AND (?7 IS NULL OR id < ?7)
                     ORDER BY id DESC LIMIT ?8",
                )
                .map_err(db_error)?;
            let rows = select
                .query_map(
                    params![
                        filter.actor,
                        filter.action,
                        filter.action_is_prefix(),
                        filter.target,
                        filter.since.map(|t| t.timestamp_micros()),
                        filter.until.map(|t| t.timestamp_micros()),
                        filter.before,
                        filter.limit,
                    ],
                    |row| {
                        let detail: String = row.get(5)?;
                        Ok(AuditRecord {
                            id: row.get(0)?,
                            at: time_column(row, 1)?,
                            actor: row.get(2)?,
                            action: row.get(3)?,
                            target: row.get(4)?,
                            detail: serde_json::from_str(&detail).map_err(|e| {
                                rusqlite::Error::FromSqlConversionFailure(5, Type::Text, Box::new(e))
                            })?,
                            from: row.get(6)?,
                        })
                    },
                )
                .map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
        .await
    }

    async fn create_replay(&self, replay: &ReplayRecord) -> Result<(), StoreError> {
        let replay = replay.clone();
        self.write(move |conn| {
            conn.prepare_cached(&format!(
                "INSERT INTO replays ({REPLAY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))
            .and_then(|mut insert| {
                insert.execute(params![
                    replay.drill.to_string(),
                    replay.source.to_string(),
                    replay.facilitator,
                    replay.speed_centi,
                    replay.state.as_str(),
                    replay.elapsed_ms,
                    replay.since.timestamp_micros(),
                    replay.next_step,
                    replay.total,
                    replay.steps,
                    replay.version,
                    replay.created_at.timestamp_micros(),
                ])
            })
            .map(drop)
            .map_err(db_error)
        })
        .await
    }

    async fn replay(&self, drill: DocumentId) -> Result<Option<ReplayRecord>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {REPLAY_COLUMNS} FROM replays WHERE drill = ?1"
            ))
            .and_then(|mut select| {
                select
                    .query_row([drill.to_string()], replay_from_row)
                    .optional()
            })
            .map_err(db_error)
        })
        .await
    }

    async fn running_replays(&self) -> Result<Vec<ReplayRecord>, StoreError> {
        self.read(|conn| {
            let mut select = conn
                .prepare_cached(&format!(
                    "SELECT {REPLAY_COLUMNS} FROM replays WHERE state = 'running' ORDER BY created_at"
                ))
                .map_err(db_error)?;
            let rows = select.query_map([], replay_from_row).map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
        .await
    }

    async fn update_replay(&self, replay: &ReplayRecord) -> Result<bool, StoreError> {
        let replay = replay.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE replays SET state = ?2, elapsed_ms = ?3, since = ?4, next_step = ?5, version = version + 1
                 WHERE drill = ?1 AND version = ?6",
            )
            .and_then(|mut update| {
                update.execute(params![
                    replay.drill.to_string(),
                    replay.state.as_str(),
                    replay.elapsed_ms,
                    replay.since.timestamp_micros(),
                    replay.next_step,
                    replay.version,
                ])
            })
            .map(|updated| updated == 1)
            .map_err(db_error)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Through the writer, and a real write: this proves the thread is alive, the queue moves, the database
        // file is still in place, and a commit reaches the disk. A read-only probe passes while the files are
        // unwritable (immutable, a read-only remount) and every append fails, so health would lie. It costs
        // one row update that shares its fsync with whatever else is queued.
        self.write(|conn| {
            conn.prepare_cached(
                "INSERT INTO counters (name, value) VALUES ('health_probe', 1)
                 ON CONFLICT (name) DO UPDATE SET value = value + 1",
            )
            .and_then(|mut probe| probe.execute([]))
            .map(|_| ())
            .map_err(db_error)
        })
        .await
    }

    async fn backup(&self, out: &Path) -> Result<(), StoreError> {
        let source = self.readers.path.clone();
        let out = out.to_owned();
        tokio::task::spawn_blocking(move || {
            let scratch = super::backup::scratch_for(&out);
            let result = vacuum_into(&source, &scratch)
                .and_then(|conn| super::backup::seal(conn, &scratch, &out));
            if result.is_err() {
                let _ = fs::remove_file(&scratch);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("the backup task failed: {e}")))?
    }

    async fn restore(&self, from: &Path, replace: bool) -> Result<(), StoreError> {
        let path = self.readers.path.clone();
        let from = from.to_owned();
        tokio::task::spawn_blocking(move || restore_into(&path, &from, replace))
            .await
            .map_err(|e| StoreError::Unavailable(format!("the restore task failed: {e}")))?
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.readers.close();
        // Dropping the last sender lets the writer finish what is queued and then stop.
        drop(lock(&self.queue).take());
        let Some(thread) = lock(&self.writer).take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("waiting for the writer thread failed: {e}"))
            })?
            .map_err(|_| StoreError::Unavailable("the writer thread panicked".to_owned()))
    }
}

/// One queued write, type-erased so that writes with different results share the queue.
trait Job: Send {
    /// Runs the write inside the batch's transaction and returns its error, if it failed, so the batch
    /// can roll back just this write.
    fn run(&mut self, conn: &Connection) -> Result<(), StoreError>;

    /// Replies to the caller once the batch's fate, `batch`, is known.
    fn finish(self: Box<Self>, batch: &Result<(), StoreError>);
}

/// A write and the channel to its caller.
struct Pending<T, F> {
    /// The write itself; taken when it runs.
    work: Option<F>,
    /// What the write returned, kept until the batch commits or fails; `None` if it never ran.
    outcome: Option<Result<T, StoreError>>,
    /// Where the caller waits for the result.
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let Some(work) = self.work.take() else {
            return Ok(());
        };
        let outcome = work(conn);
        let status = outcome.as_ref().map(|_| ()).map_err(StoreError::clone);
        self.outcome = Some(outcome);
        status
    }

    fn finish(self: Box<Self>, batch: &Result<(), StoreError>) {
        let result = match (self.outcome, batch) {
            // A write that failed on its own reports its own error, whatever happened to the batch.
            (Some(Err(own)), _) => Err(own),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(failed)) => Err(failed.clone()),
            // A batch commits only after running every write in it, so this does not happen.
            (None, Ok(())) => Err(StoreError::Unavailable(
                "the write was not attempted".to_owned(),
            )),
        };
        // The caller may have stopped waiting (its task was cancelled); nobody is left to tell.
        let _ = self.reply.send(result);
    }
}

/// The counters behind [`CommitStats`].
#[derive(Default)]
struct Stats {
    /// Transactions committed.
    transactions: AtomicU64,
    /// Writes in committed transactions.
    operations: AtomicU64,
    /// Transactions that failed as a whole.
    failed_transactions: AtomicU64,
}

/// The writer thread's state.
struct Writer {
    /// Where the database file must be; checked before every batch.
    path: PathBuf,
    /// The writing connection and the identity of the file it was opened on; `None` after a failed
    /// batch, until the next batch reopens the database.
    conn: Option<(Connection, FileId)>,
    /// The read pool, told to drop its connections whenever the writer drops its own.
    readers: Arc<Readers>,
    /// Counters for [`SqliteStore::commit_stats`].
    stats: Arc<Stats>,
}

impl Writer {
    /// Commits batches until every sender is gone and the queue is empty, then closes the database.
    fn run(mut self, mut queue: mpsc::Receiver<Box<dyn Job>>) {
        while let Some(first) = queue.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        // Closing checkpoints the write-ahead log into the database file.
        if let Some((conn, _)) = self.conn.take()
            && let Err((_, error)) = conn.close()
        {
            tracing::warn!(%error, "closing the SQLite writer connection failed");
        }
    }

    /// Runs one batch in one transaction and replies to every caller in it.
    fn commit(&mut self, mut batch: Vec<Box<dyn Job>>) {
        // An index that cannot be written is refused before the connection is touched, and is no reason to
        // reopen: closing the connection would write to the index as well (see the module documentation).
        let index = index_writable(&self.path);
        let outcome = index.clone().and_then(|()| self.execute(&mut batch));
        match &outcome {
            Ok(()) => {
                self.stats.transactions.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .operations
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(error) => {
                self.stats
                    .failed_transactions
                    .fetch_add(1, Ordering::Relaxed);
                if index.is_ok() {
                    tracing::warn!(%error, writes = batch.len(), "a SQLite write batch failed; reopening the database");
                    // Dropping the connection rolls back whatever is left of the transaction; the next batch
                    // starts from a fresh connection, and readers follow.
                    self.conn = None;
                    self.readers.invalidate();
                } else {
                    tracing::warn!(%error, writes = batch.len(), "a SQLite write batch refused");
                }
            }
        }
        for job in batch {
            job.finish(&outcome);
        }
    }

    /// Runs every write of `batch` in its own savepoint inside one transaction, then commits.
    fn execute(&mut self, batch: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
        let conn = self.connection()?;
        conn.execute_batch("BEGIN IMMEDIATE").map_err(db_error)?;
        for job in batch.iter_mut() {
            conn.execute_batch("SAVEPOINT item").map_err(db_error)?;
            match job.run(conn) {
                Ok(()) => conn.execute_batch("RELEASE item").map_err(db_error)?,
                // After some errors (disk full, I/O) SQLite has already rolled the whole transaction
                // back; then the batch is lost and every caller must hear so.
                Err(error) if conn.is_autocommit() => return Err(error),
                Err(_) => conn
                    .execute_batch("ROLLBACK TO item; RELEASE item")
                    .map_err(db_error)?,
            }
        }
        conn.execute_batch("COMMIT").map_err(db_error)
    }

    /// Returns the writing connection, reopening the database if the last batch failed, and refuses to
    /// write if the file at the path is no longer the file the connection has open.
    fn connection(&mut self) -> Result<&Connection, StoreError> {
        let current = match self.conn.take() {
            Some((conn, opened)) => {
                if file_identity(&self.path)? != opened {
                    return Err(StoreError::Unavailable(format!(
                        "{} was replaced while open; refusing writes that would be lost",
                        self.path.display()
                    )));
                }
                (conn, opened)
            }
            // Reopen without creating: a database that vanished must not silently start over empty.
            None => (open_writer(&self.path, false)?, file_identity(&self.path)?),
        };
        Ok(&self.conn.insert(current).0)
    }
}

/// A pool of read connections.
struct Readers {
    /// The database file.
    path: PathBuf,
    /// Bumped whenever the writer reopens the database, so readers on the old file are dropped too.
    generation: AtomicU64,
    /// Idle connections with the generation they were opened in.
    idle: Mutex<Vec<(u64, Connection)>>,
    /// Set by [`Store::close`]; reads then fail and connections are not kept.
    closed: AtomicBool,
}

impl Readers {
    /// Runs `read` on an idle connection, or a new one, and keeps the connection if it is still good.
    fn with<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        index_writable(&self.path)?;
        let generation = self.generation.load(Ordering::Acquire);
        let pooled = {
            let mut idle = lock(&self.idle);
            idle.retain(|(opened_in, _)| *opened_in == generation);
            idle.pop()
        };
        let conn = match pooled {
            Some((_, conn)) => conn,
            None => open_reader(&self.path)?,
        };
        let result = read(&conn);
        if !matches!(
            result,
            Err(StoreError::Unavailable(_) | StoreError::Corrupt(_))
        ) {
            let mut idle = lock(&self.idle);
            if !self.closed.load(Ordering::Acquire) && idle.len() < MAX_IDLE_READERS {
                idle.push((generation, conn));
            }
        }
        result
    }

    /// Drops every idle connection and makes busy ones be dropped when they come back.
    fn invalidate(&self) {
        let mut idle = lock(&self.idle);
        self.generation.fetch_add(1, Ordering::AcqRel);
        idle.clear();
    }

    /// Refuses further reads and releases the idle connections.
    fn close(&self) {
        let mut idle = lock(&self.idle);
        self.closed.store(true, Ordering::Release);
        idle.clear();
    }
}

/// Which file a path names, to notice that a database file was moved, replaced or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    /// The device holding the file.
    device: u64,
    /// The file's inode on that device.
    inode: u64,
}

/// Identifies the file at `path`; fails with `Unavailable` if there is none.
#[cfg(unix)]
fn file_identity(path: &Path) -> Result<FileId, StoreError> {
    use std::os::unix::fs::MetadataExt;
    let metadata =
        fs::metadata(path).map_err(|e| io_error(&format!("cannot find {}", path.display()), &e))?;
    Ok(FileId {
        device: metadata.dev(),
        inode: metadata.ino(),
    })
}

/// Checks that the file at `path` exists; without inode numbers a replaced file goes unnoticed.
#[cfg(not(unix))]
fn file_identity(path: &Path) -> Result<FileId, StoreError> {
    fs::metadata(path).map_err(|e| io_error(&format!("cannot find {}", path.display()), &e))?;
    Ok(FileId {
        device: 0,
        inode: 0,
    })
}

/// Refuses with `Unavailable` when the kernel would not let this process write the database's mapped index
/// (`<db>-shm`), where a write would end the process with SIGBUS (see the module documentation). No index yet (it
/// is created with the first connection) is fine.
#[cfg(unix)]
fn index_writable(db: &Path) -> Result<(), StoreError> {
    let mut index = db.as_os_str().to_owned();
    index.push("-shm");
    match rustix::fs::access(index.as_os_str(), rustix::fs::Access::WRITE_OK) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(errno) => Err(StoreError::Unavailable(format!(
            "{} cannot be written ({}); SQLite maps it, so the database is left alone until it can",
            Path::new(&index).display(),
            std::io::Error::from(errno)
        ))),
    }
}

/// Without `access(2)` nothing is checked; the platforms commandpost ships for are unix.
#[cfg(not(unix))]
fn index_writable(_db: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// Fsyncs a directory so that the entries created in it survive a crash.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(&format!("cannot sync {}", dir.display()), &e))
}

/// Does nothing: other platforms cannot open a directory to sync it, and their file systems journal
/// directory entries themselves.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// Opens the writing connection: WAL, `synchronous=FULL`, a busy timeout and an up-to-date schema.
fn open_writer(path: &Path, create: bool) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let mut conn = Connection::open_with_flags(path, flags).map_err(db_error)?;
    // SQLite quietly opens a file it may not write read-only. Such a writer would keep failing each write on its
    // own while its batches commit, so it would never be dropped and the store would not heal when the file
    // becomes writable again: refuse it, and the next batch tries again.
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(db_error)? {
        return Err(StoreError::Unavailable(format!(
            "{} can only be opened read-only (an unwritable file or directory, or a read-only file system)",
            path.display()
        )));
    }
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_error)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(db_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "{} cannot use write-ahead logging (journal mode stays {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_error)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Opens a read connection; `query_only` makes sure it never competes with the writer.
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(db_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_error)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(db_error)?;
    Ok(conn)
}

/// Applies the migrations the database lacks, in one transaction so that two processes opening the
/// same database cannot both apply them.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_error)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(db_error)?;
    let applied = usize::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("negative schema version {version}")))?;
    let Some(missing) = MIGRATIONS.get(applied..) else {
        return Err(StoreError::Unavailable(format!(
            "the database has schema version {version}, newer than the {} this commandpost knows; upgrade commandpost",
            MIGRATIONS.len()
        )));
    };
    if missing.is_empty() {
        return Ok(());
    }
    for migration in missing {
        tx.execute_batch(migration).map_err(db_error)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)
        .map_err(db_error)?;
    tx.commit().map_err(db_error)?;
    // Once per store and release, never on an ordinary start: an operator upgrading wants to see it happened.
    if applied > 0 {
        tracing::info!(
            from = applied,
            to = MIGRATIONS.len(),
            "upgraded the SQLite store's schema"
        );
    }
    Ok(())
}

/// Copies the database at `source` into a new file `scratch` with `VACUUM INTO`: one read transaction on a
/// connection of its own, which in WAL mode writers neither wait for nor disturb. Returns a connection to the copy.
fn vacuum_into(source: &Path, scratch: &Path) -> Result<Connection, StoreError> {
    let conn =
        Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(db_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_error)?;
    let target = scratch.to_str().ok_or_else(|| {
        StoreError::Unavailable(format!("{} is not a UTF-8 path", scratch.display()))
    })?;
    conn.execute("VACUUM INTO ?1", [target]).map_err(db_error)?;
    drop(conn);
    Connection::open(scratch).map_err(db_error)
}

/// Fills the store at `path` with the backup `from` in one transaction, on a connection of its own: refused with
/// `Conflict` if the store holds any row, unless `replace`, which empties it first.
fn restore_into(path: &Path, from: &Path, replace: bool) -> Result<(), StoreError> {
    let conn = open_writer(path, false)?;
    let name = from.to_str().ok_or_else(|| {
        StoreError::Unavailable(format!("{} is not a UTF-8 path", from.display()))
    })?;
    // Opened read-only first, so that a missing or foreign file is refused before SQLite would create one.
    drop(super::backup::open(from)?);
    conn.execute("ATTACH DATABASE ?1 AS backup", [name])
        .map_err(db_error)?;
    let result = (|| {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(db_error)?;
        let filled = fill(&conn, replace);
        match filled {
            Ok(()) => conn.execute_batch("COMMIT").map_err(db_error),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    })();
    let _ = conn.execute_batch("DETACH DATABASE backup");
    result
}

/// The body of [`restore_into`]'s transaction.
fn fill(conn: &Connection, replace: bool) -> Result<(), StoreError> {
    for table in super::backup::TABLES {
        if replace {
            conn.execute(&format!("DELETE FROM main.{}", table.name), [])
                .map_err(db_error)?;
        } else {
            let rows: bool = conn
                .query_row(
                    &format!("SELECT EXISTS (SELECT 1 FROM main.{})", table.name),
                    [],
                    |row| row.get(0),
                )
                .map_err(db_error)?;
            if rows {
                return Err(StoreError::Conflict(format!(
                    "the store is not empty (its {} table has rows)",
                    table.name
                )));
            }
        }
        let columns = table.column_list();
        conn.execute(
            &format!(
                "INSERT INTO main.{name} ({columns}) SELECT {columns} FROM backup.{name} ORDER BY rowid",
                name = table.name
            ),
            [],
        )
        .map_err(db_error)?;
    }
    Ok(())
}

/// The index rows of a backup (or store) by document id, for the integrity check.
pub(super) fn read_index(conn: &Connection) -> Result<super::backup::Index, StoreError> {
    let mut select = conn
        .prepare(
            "SELECT id, title, template, status, severity, number, created_at, updated_at, commander,
                        restricted, members, channel
             FROM incidents",
        )
        .map_err(db_error)?;
    let mut rows = select.query([]).map_err(db_error)?;
    let mut index = super::backup::Index::new();
    while let Some(row) = rows.next().map_err(db_error)? {
        let id: String = row.get(0).map_err(db_error)?;
        index.insert(id, summary_from_row(row).map_err(|e| e.to_string()));
    }
    Ok(index)
}

/// Reads back every row of the tables besides the documents and the index as the store would, and describes each
/// that cannot be.
pub(super) fn unreadable_rows(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();
    let mut each = |what: &str, sql: &str, read: &dyn Fn(&Row<'_>) -> rusqlite::Result<()>| {
        let mut select = conn.prepare(sql).map_err(db_error)?;
        let mut rows = select.query([]).map_err(db_error)?;
        while let Some(row) = rows.next().map_err(db_error)? {
            if let Err(e) = read(row) {
                let key = match row.get::<_, Value>(0) {
                    Ok(Value::Integer(n)) => n.to_string(),
                    Ok(Value::Text(text)) => text,
                    _ => "?".to_owned(),
                };
                problems.push(format!("{what} {key}: unreadable: {e}"));
            }
        }
        Ok::<(), StoreError>(())
    };
    each(
        "token",
        "SELECT name, scope, created_at, revoked_at FROM tokens",
        &|row| token_from_row(row).map(drop),
    )?;
    each(
        "delivery",
        "SELECT id, event_id, kind, doc, state, attempts, created_at, next_attempt_at,
                last_attempt_at, last_status, last_error, delivered_at
         FROM deliveries",
        &|row| delivery_from_row(row).map(drop),
    )?;
    each(
        "ticket",
        "SELECT hash, token_hash, expires_at FROM tickets",
        &|row| {
            let _: (String, String) = (row.get(0)?, row.get(1)?);
            time_column(row, 2).map(drop)
        },
    )?;
    each(
        "session",
        &format!("SELECT {SESSION_COLUMNS} FROM sessions"),
        &|row| session_from_row(row).map(drop),
    )?;
    each(
        "login",
        "SELECT hash, data, expires_at FROM logins",
        &|row| {
            let _: (String, String) = (row.get(0)?, row.get(1)?);
            time_column(row, 2).map(drop)
        },
    )?;
    each(
        "template",
        "SELECT id, source, updated_by, updated_at FROM templates",
        &|row| {
            let _: (String, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
            time_column(row, 3).map(drop)
        },
    )?;
    each("counter", "SELECT name, value FROM counters", &|row| {
        let _: (String, i64) = (row.get(0)?, row.get(1)?);
        Ok(())
    })?;
    Ok(problems)
}

/// Inserts or replaces an incident's index row.
fn upsert_summary(conn: &Connection, summary: &IncidentSummary) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO incidents
             (id, title, template, status, severity, number, created_at, updated_at, commander, restricted,
              members, channel, channel_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (id) DO UPDATE SET
             title = excluded.title, template = excluded.template, status = excluded.status,
             severity = excluded.severity, number = excluded.number,
             created_at = excluded.created_at, updated_at = excluded.updated_at,
             commander = excluded.commander, restricted = excluded.restricted, members = excluded.members,
             channel = excluded.channel, channel_key = excluded.channel_key",
    )
    .and_then(|mut upsert| {
        let (channel, channel_key) = super::chat_log::channel_column(summary.channel.as_ref());
        upsert.execute(params![
            summary.id.to_string(),
            summary.title,
            summary.template,
            summary.status_name(),
            summary.severity,
            summary.number,
            summary.created_at.timestamp_micros(),
            summary.updated_at.timestamp_micros(),
            summary.commander,
            summary.restricted,
            super::members_column(&summary.members),
            channel,
            channel_key,
        ])
    })
    .map_err(db_error)?;
    Ok(())
}

/// Queues deliveries inside the caller's transaction: a coalescing one first tries to take over an unattempted
/// row with its key; an event already queued for the endpoint is left alone.
fn queue_deliveries(conn: &Connection, deliveries: &[NewDelivery]) -> Result<(), StoreError> {
    let now = Utc::now().timestamp_micros();
    for d in deliveries {
        if let Some(key) = &d.coalesce {
            let merged = conn
                .prepare_cached(
                    "UPDATE deliveries SET event_id = ?3, payload = ?4, next_attempt_at = ?5
                     WHERE endpoint = ?1 AND coalesce_key = ?2 AND state = 'pending' AND attempts = 0",
                )
                .and_then(|mut update| {
                    update.execute(params![
                        d.endpoint,
                        key,
                        d.event_id,
                        d.payload,
                        d.not_before.timestamp_micros()
                    ])
                })
                .map_err(db_error)?;
            if merged > 0 {
                continue;
            }
        }
        conn.prepare_cached(
            "INSERT INTO deliveries (endpoint, event_id, kind, doc, coalesce_key, payload, created_at, next_attempt_at,
                                     sink)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (endpoint, event_id) DO NOTHING",
        )
        .and_then(|mut insert| {
            insert.execute(params![
                d.endpoint,
                d.event_id,
                d.kind,
                d.doc.to_string(),
                d.coalesce,
                d.payload,
                now,
                d.not_before.timestamp_micros(),
                d.sink.as_str()
            ])
        })
        .map_err(db_error)?;
    }
    Ok(())
}

/// Reads a delivery log row selected as `id, event_id, kind, doc, state, attempts, created_at, next_attempt_at,
/// last_attempt_at, last_status, last_error, delivered_at`.
fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    let state: String = row.get(4)?;
    let state = DeliveryState::parse(&state).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(4, Type::Text, format!("state {state:?}").into())
    })?;
    let time = |index: usize| -> rusqlite::Result<Option<DateTime<Utc>>> {
        row.get::<_, Option<i64>>(index)?
            .map(|micros| micros_to_time(index, micros))
            .transpose()
    };
    Ok(DeliveryRecord {
        id: row.get(0)?,
        event_id: row.get(1)?,
        kind: row.get(2)?,
        incident: id_column(row, 3)?,
        attempts: row.get(5)?,
        created_at: time_column(row, 6)?,
        next_attempt_at: time(7)?.filter(|_| state == DeliveryState::Pending),
        last_attempt_at: time(8)?,
        last_status: row.get(9)?,
        last_error: row.get(10)?,
        delivered_at: time(11)?,
        state,
    })
}

/// Reads an index row selected as `id, title, template, status, severity, number, created_at,
/// updated_at, commander, restricted, members, channel`.
fn summary_from_row(row: &Row<'_>) -> rusqlite::Result<IncidentSummary> {
    let members: String = row.get(10)?;
    Ok(IncidentSummary {
        channel: super::chat_log::channel_from_column(row.get(11)?),
        restricted: row.get(9)?,
        members: super::members_from_column(&members).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, e.into())
        })?,
        id: id_column(row, 0)?,
        title: row.get(1)?,
        template: row.get(2)?,
        status: status_from_column(&row.get::<_, String>(3)?),
        severity: row.get(4)?,
        commander: row.get(8)?,
        number: row.get(5)?,
        created_at: time_column(row, 6)?,
        updated_at: time_column(row, 7)?,
    })
}

/// Reads a chat line selected as `id, network, channel, speaker, person, text, at`.
/// The columns of `replays`, in [`replay_from_row`]'s order.
const REPLAY_COLUMNS: &str = "drill, source, facilitator, speed_centi, state, elapsed_ms, since, next_step, total, \
     steps, version, created_at";

fn replay_from_row(row: &Row<'_>) -> rusqlite::Result<ReplayRecord> {
    let state: String = row.get(4)?;
    Ok(ReplayRecord {
        drill: id_column(row, 0)?,
        source: id_column(row, 1)?,
        facilitator: row.get(2)?,
        speed_centi: row.get(3)?,
        state: ReplayState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                4,
                rusqlite::types::Type::Text,
                format!("unknown replay state {state:?}").into(),
            )
        })?,
        elapsed_ms: row.get(5)?,
        since: time_column(row, 6)?,
        next_step: row.get(7)?,
        total: row.get(8)?,
        steps: row.get(9)?,
        version: row.get(10)?,
        created_at: time_column(row, 11)?,
    })
}

fn chat_line_from_row(row: &Row<'_>) -> rusqlite::Result<ChatLine> {
    let network: String = row.get(1)?;
    Ok(ChatLine {
        id: row.get(0)?,
        network: network.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(1, Type::Text, e.into())
        })?,
        channel: row.get(2)?,
        speaker: row.get(3)?,
        person: row.get(4)?,
        text: row.get(5)?,
        at: time_column(row, 6)?,
    })
}

/// Reads a token selected as `name, scope, created_at, revoked_at`.
/// The columns [`session_from_row`] reads, in its order.
const SESSION_COLUMNS: &str =
    "id, name, scope, created_at, last_used_at, expires_at, created_from, revoked_at";

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    let scope: String = row.get(2)?;
    Ok(SessionRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        scope: scope
            .parse()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, Type::Text, Box::new(e)))?,
        created_at: time_column(row, 3)?,
        last_used_at: time_column(row, 4)?,
        expires_at: time_column(row, 5)?,
        created_from: row.get(6)?,
        revoked_at: row
            .get::<_, Option<i64>>(7)?
            .map(|micros| micros_to_time(7, micros))
            .transpose()?,
    })
}

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let scope: String = row.get(1)?;
    Ok(TokenRecord {
        name: row.get(0)?,
        scope: scope
            .parse()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, Type::Text, Box::new(e)))?,
        created_at: time_column(row, 2)?,
        revoked_at: row
            .get::<_, Option<i64>>(3)?
            .map(|micros| micros_to_time(3, micros))
            .transpose()?,
    })
}

/// Moves the templates' revision on, inside the write that changed them.
fn bump_templates_revision(conn: &Connection) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO counters (name, value) VALUES (?1, 1)
         ON CONFLICT (name) DO UPDATE SET value = value + 1",
        [TEMPLATES_COUNTER],
    )
    .map(|_| ())
    .map_err(db_error)
}

/// Reads a document id stored as its text; text that is no id means corruption.
fn id_column(row: &Row<'_>, index: usize) -> rusqlite::Result<DocumentId> {
    row.get::<_, String>(index)?
        .parse()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(e)))
}

/// Reads a timestamp stored as microseconds since the Unix epoch.
fn time_column(row: &Row<'_>, index: usize) -> rusqlite::Result<DateTime<Utc>> {
    micros_to_time(index, row.get(index)?)
}

/// Converts stored microseconds to a timestamp; values chrono cannot represent mean corruption.
fn micros_to_time(index: usize, micros: i64) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or(rusqlite::Error::IntegralValueOutOfRange(index, micros))
}

/// Classifies a SQLite error: constraint violations are conflicts, damaged files and unreadable values
/// are corruption, and everything else (I/O, full disk, locks, read-only files) is unavailability.
pub(super) fn db_error(error: rusqlite::Error) -> StoreError {
    let message = format!("sqlite: {error}");
    match &error {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::ConstraintViolation => StoreError::Conflict(message),
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreError::Corrupt(message),
            _ => StoreError::Unavailable(message),
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(message),
        _ => StoreError::Unavailable(message),
    }
}

/// Describes a failed file-system call.
fn io_error(context: &str, error: &std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{context}: {error}"))
}

/// The error for operations after [`Store::close`].
fn closed() -> StoreError {
    StoreError::Unavailable("the store is closed".to_owned())
}

/// The error for a writer thread that is gone, which happens only if it panicked.
fn writer_stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer thread has stopped".to_owned())
}

/// Locks a mutex, ignoring poisoning: the data behind these mutexes stays valid if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;

    use tempfile::TempDir;
    use tokio::task::JoinHandle as TaskHandle;
    use tokio::time::timeout;

    use super::*;
    use crate::store::conformance::doc_id;

    /// A fresh store in its own temporary directory, which must outlive it.
    fn fresh() -> (SqliteStore, TempDir) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(dir.path()).expect("a fresh store opens");
        (store, dir)
    }

    mod conformance {
        crate::store::conformance::conformance_suite!(super::fresh);
    }

    /// How many writes wait in the queue, not yet taken by the writer thread.
    fn queued(store: &SqliteStore) -> usize {
        lock(&store.queue)
            .as_ref()
            .map_or(0, |queue| QUEUE_DEPTH - queue.capacity())
    }

    /// Waits until `n` writes wait in the queue.
    async fn until_queued(store: &SqliteStore, n: usize) {
        timeout(Duration::from_secs(10), async {
            while queued(store) < n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the writes reach the queue");
    }

    /// Parks the writer thread inside a batch (holding its transaction open) until the returned sender
    /// is used or dropped, so that tests can line up writes behind it deterministically.
    async fn park_writer(
        store: &Arc<SqliteStore>,
    ) -> (std_mpsc::Sender<()>, TaskHandle<Result<(), StoreError>>) {
        let (release, gate) = std_mpsc::channel::<()>();
        let (parked, is_parked) = oneshot::channel();
        let parker = Arc::clone(store);
        let task = tokio::spawn(async move {
            parker
                .write(move |_| {
                    let _ = parked.send(());
                    // Either a message or the sender's drop releases the writer.
                    let _ = gate.recv();
                    Ok(())
                })
                .await
        });
        is_parked.await.expect("the writer runs the parking write");
        (release, task)
    }

    fn spawn_appends(
        store: &Arc<SqliteStore>,
        doc: DocumentId,
        n: usize,
    ) -> Vec<TaskHandle<Result<ChunkId, StoreError>>> {
        (0..n)
            .map(|i| {
                let store = Arc::clone(store);
                tokio::spawn(async move { store.append(doc, i.to_le_bytes().to_vec(), None).await })
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_transactions() {
        let (store, _dir) = fresh();
        let store = Arc::new(store);
        let before = store.commit_stats();

        let (release, parker) = park_writer(&store).await;
        let appends = spawn_appends(&store, doc_id("shared"), 300);
        until_queued(&store, 300).await;
        release.send(()).expect("the writer is parked");
        parker
            .await
            .expect("the parking task")
            .expect("the parking write commits");
        for append in appends {
            append
                .await
                .expect("an append task")
                .expect("every append commits");
        }

        let stats = store.commit_stats();
        // The parking write alone, then 300 queued writes in batches of at most MAX_BATCH: 256 + 44.
        assert_eq!(stats.transactions - before.transactions, 3);
        assert_eq!(stats.operations - before.operations, 301);
        assert_eq!(stats.failed_transactions, 0);
        assert_eq!(
            store
                .load(doc_id("shared"))
                .await
                .expect("load")
                .expect("stored")
                .chunks
                .len(),
            300
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_fails_alone_in_its_batch() {
        let (store, _dir) = fresh();
        let store = Arc::new(store);
        store
            .create_token("taken", Scope::Read, "aa")
            .await
            .expect("create");
        let before = store.commit_stats();

        let (release, parker) = park_writer(&store).await;
        let first = spawn_appends(&store, doc_id("doc"), 10);
        until_queued(&store, 10).await;
        let conflicting = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.create_token("taken", Scope::Admin, "bb").await })
        };
        until_queued(&store, 11).await;
        let second = spawn_appends(&store, doc_id("doc"), 10);
        until_queued(&store, 21).await;
        drop(release);
        parker
            .await
            .expect("the parking task")
            .expect("the parking write commits");

        let conflict = conflicting.await.expect("the token task");
        assert!(
            matches!(conflict, Err(StoreError::Conflict(_))),
            "got {conflict:?}"
        );
        for append in first.into_iter().chain(second) {
            append
                .await
                .expect("an append task")
                .expect("the rest of the batch commits");
        }
        let stats = store.commit_stats();
        assert_eq!(
            stats.transactions - before.transactions,
            2,
            "the parking write, then one batch"
        );
        assert_eq!(stats.operations - before.operations, 22);
        assert_eq!(
            store
                .load(doc_id("doc"))
                .await
                .expect("load")
                .expect("stored")
                .chunks
                .len(),
            20
        );
        assert_eq!(store.token_by_hash("bb").await, Ok(None));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_do_not_wait_for_the_writer() {
        let (store, _dir) = fresh();
        let store = Arc::new(store);
        store
            .append(doc_id("doc"), vec![1], None)
            .await
            .expect("append");
        let (release, parker) = park_writer(&store).await;
        let pending = spawn_appends(&store, doc_id("doc"), 1);
        until_queued(&store, 1).await;

        // The writer holds a write transaction open; reads still answer, with the committed state.
        let stored = timeout(Duration::from_secs(2), store.load(doc_id("doc")))
            .await
            .expect("a read does not wait for the writer")
            .expect("load")
            .expect("stored");
        assert_eq!(stored.chunks, vec![vec![1]]);

        drop(release);
        parker
            .await
            .expect("the parking task")
            .expect("the parking write commits");
        for append in pending {
            append
                .await
                .expect("an append task")
                .expect("the queued append commits");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_finishes_queued_writes() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(SqliteStore::open(dir.path()).expect("open"));
        let (release, parker) = park_writer(&store).await;
        let appends = spawn_appends(&store, doc_id("doc"), 50);
        until_queued(&store, 50).await;

        let closer = Arc::clone(&store);
        let closing = tokio::spawn(async move { closer.close().await });
        // Close stops new operations at once, while the queued writes still wait for the writer.
        timeout(Duration::from_secs(10), async {
            while lock(&store.queue).is_some() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("close takes effect");
        assert_eq!(
            store.append(doc_id("late"), vec![1], None).await,
            Err(closed())
        );
        assert!(!closing.is_finished(), "close waits for the queued writes");

        drop(release);
        parker
            .await
            .expect("the parking task")
            .expect("the parking write commits");
        for append in appends {
            append
                .await
                .expect("an append task")
                .expect("queued appends commit during close");
        }
        closing.await.expect("the closing task").expect("close");

        let reopened = SqliteStore::open(dir.path()).expect("reopen");
        assert_eq!(
            reopened
                .load(doc_id("doc"))
                .await
                .expect("load")
                .expect("stored")
                .chunks
                .len(),
            50
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_store_finishes_queued_writes() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(SqliteStore::open(dir.path()).expect("open"));
        let thread = lock(&store.writer).take().expect("the writer thread");
        let (release, parker) = park_writer(&store).await;
        // Its caller gives up waiting, but the write is queued and still happens.
        let abandoned = spawn_appends(&store, doc_id("doc"), 1);
        until_queued(&store, 1).await;
        for task in &abandoned {
            task.abort();
        }
        parker.abort();
        drop(store);

        drop(release);
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("the joining task")
            .expect("the writer thread ends cleanly");
        let reopened = SqliteStore::open(dir.path()).expect("reopen");
        assert_eq!(
            reopened
                .load(doc_id("doc"))
                .await
                .expect("load")
                .expect("stored")
                .chunks,
            vec![0usize.to_le_bytes().to_vec()]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let summary = IncidentSummary {
            id: doc_id("inc-1"),
            title: "Payments failing".into(),
            template: "outage".into(),
            status: Some(Status::Active),
            severity: Some("sev1".into()),
            commander: Some("alice".into()),
            number: Some(1),
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456)
                .expect("a valid time"),
            updated_at: DateTime::from_timestamp_micros(1_700_000_100_000_001)
                .expect("a valid time"),
            restricted: true,
            members: vec!["alice".into()],
            channel: None,
        };
        let stored = {
            let store = SqliteStore::open(dir.path()).expect("open");
            assert_eq!(store.next_incident_number().await, Ok(1));
            assert_eq!(store.next_incident_number().await, Ok(2));
            store
                .append(doc_id("inc-1"), vec![1, 2], Some(summary.clone()))
                .await
                .expect("append");
            let upto = store
                .append(doc_id("inc-1"), vec![3], None)
                .await
                .expect("append");
            store
                .append(doc_id("inc-1"), vec![4], None)
                .await
                .expect("append");
            store
                .compact(doc_id("inc-1"), vec![9, 9], upto)
                .await
                .expect("compact");
            store
                .create_token("ops", Scope::Admin, "abcd")
                .await
                .expect("create token");
            let stored = store
                .load(doc_id("inc-1"))
                .await
                .expect("load")
                .expect("stored");
            store.close().await.expect("close");
            stored
        };
        assert_eq!(stored.chunks, vec![vec![9, 9], vec![4]]);

        let store = SqliteStore::open(dir.path()).expect("reopen");
        assert_eq!(store.load(doc_id("inc-1")).await, Ok(Some(stored)));
        assert_eq!(store.summary(doc_id("inc-1")).await, Ok(Some(summary)));
        assert_eq!(store.next_incident_number().await, Ok(3));
        let token = store
            .token_by_hash("abcd")
            .await
            .expect("lookup")
            .expect("known");
        assert_eq!((token.name.as_str(), token.scope), ("ops", Scope::Admin));

        // Without a clean close: an acknowledged write is on disk the moment it is acknowledged.
        store
            .append(doc_id("inc-2"), vec![5], None)
            .await
            .expect("append");
        drop(store);
        let store = SqliteStore::open(dir.path()).expect("reopen after drop");
        assert_eq!(
            store
                .load(doc_id("inc-2"))
                .await
                .expect("load")
                .expect("stored")
                .chunks,
            vec![vec![5]]
        );
        assert_eq!(store.next_incident_number().await, Ok(4));
    }

    #[test]
    fn database_uses_wal_full_sync_and_a_versioned_schema() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join(DB_FILE);
        let conn = open_writer(&path, true).expect("open");
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .expect("journal_mode");
        assert_eq!(mode, "wal");
        let synchronous: i64 = conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .expect("synchronous");
        assert_eq!(synchronous, 2, "FULL");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("user_version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        drop(conn);
        // Opening again is idempotent.
        let again = open_writer(&path, false).expect("reopen");
        let tables: i64 = again
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = 'chunks'",
                [],
                |row| row.get(0),
            )
            .expect("schema query");
        assert_eq!(tables, 1);
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let (store, dir) = fresh();
        store.close().await.expect("close");
        let conn = Connection::open(dir.path().join(DB_FILE)).expect("raw connection");
        conn.pragma_update(None, "user_version", 99)
            .expect("set user_version");
        drop(conn);
        match SqliteStore::open(dir.path()) {
            Err(StoreError::Unavailable(message)) => {
                assert!(message.contains("newer"), "{message}")
            }
            other => panic!("expected Unavailable, got {:?}", other.map(|_| "a store")),
        }
    }

    #[test]
    fn garbage_file_is_corrupt() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        fs::write(dir.path().join(DB_FILE), [b'x'; 4096]).expect("write garbage");
        match SqliteStore::open(dir.path()) {
            Err(StoreError::Corrupt(_)) => {}
            other => panic!("expected Corrupt, got {:?}", other.map(|_| "a store")),
        }
    }

    #[test]
    fn open_fails_where_no_directory_can_be() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("file");
        fs::write(&file, b"in the way").expect("write a file");
        match SqliteStore::open(&file.join("data")) {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("expected Unavailable, got {:?}", other.map(|_| "a store")),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_fail_while_the_database_is_gone_and_recover() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let data = root.path().join("data");
        let parked = root.path().join("parked");
        let store = SqliteStore::open(&data).expect("open");
        store
            .append(doc_id("doc"), vec![1], None)
            .await
            .expect("append");
        assert_eq!(
            store
                .load(doc_id("doc"))
                .await
                .expect("load")
                .expect("stored")
                .chunks,
            vec![vec![1]]
        );

        // The data directory disappears and a plain file takes its place. The open connection could
        // still write into the moved file (even as root), and those writes would be lost.
        fs::rename(&data, &parked).expect("move the data directory away");
        fs::write(&data, b"not a directory").expect("put a file in its place");
        for attempt in 0..2 {
            let result = store.append(doc_id("doc"), vec![2], None).await;
            assert!(
                matches!(result, Err(StoreError::Unavailable(_))),
                "attempt {attempt}: {result:?}"
            );
        }
        assert!(matches!(
            store.next_incident_number().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.load(doc_id("doc")).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(store.commit_stats().failed_transactions >= 4);

        // The directory comes back: the same store works again without a restart.
        fs::remove_file(&data).expect("remove the file");
        fs::rename(&parked, &data).expect("restore the data directory");
        store.ping().await.expect("ping after recovery");
        store
            .append(doc_id("doc"), vec![3], None)
            .await
            .expect("append after recovery");
        assert_eq!(store.next_incident_number().await, Ok(1));
        assert_eq!(
            store
                .load(doc_id("doc"))
                .await
                .expect("load")
                .expect("stored")
                .chunks,
            vec![vec![1], vec![3]]
        );
        store.close().await.expect("close");

        let reopened = SqliteStore::open(&data).expect("reopen");
        assert_eq!(
            reopened
                .load(doc_id("doc"))
                .await
                .expect("load")
                .expect("stored")
                .chunks,
            vec![vec![1], vec![3]]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_database_is_not_recreated_behind_the_server() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(root.path()).expect("open");
        store
            .append(doc_id("doc"), vec![1], None)
            .await
            .expect("append");
        for suffix in ["", "-wal", "-shm"] {
            let path = root.path().join(format!("{DB_FILE}{suffix}"));
            fs::remove_file(&path).expect("delete a database file");
        }
        for attempt in 0..2 {
            let result = store.append(doc_id("doc"), vec![2], None).await;
            assert!(
                matches!(result, Err(StoreError::Unavailable(_))),
                "attempt {attempt}: {result:?}"
            );
        }
        assert!(
            !root.path().join(DB_FILE).exists(),
            "no empty database appears in its place"
        );
    }
}
