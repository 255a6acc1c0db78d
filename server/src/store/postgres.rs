//! The shared backend: every table in one PostgreSQL database, so that several server nodes can serve any
//! incident from the same data (`--database-url postgres://…`).
//!
//! The schema lives in `server/migrations/` and is applied by sqlx's migrator, compiled into the binary. The
//! store opens without touching the network ([`PostgresStore::open`] is synchronous and cheap), and the first
//! operation applies the migrations; the server's start-up check is such an operation, so a node migrates as
//! it starts. Several nodes starting at once are serialized by the migrator's advisory lock. Tables land in
//! the first schema of the connection's search path, which a URL chooses with
//! `?options=-c%20search_path%3Dname` (the tests give every run a schema of its own this way).
//!
//! Every operation is one short transaction on a pooled connection; PostgreSQL's own group commit shares WAL
//! flushes between concurrent commits, so the store needs no batching of its own (the SQLite backend's writer
//! thread exists because SQLite allows one writer). A commit returns once the WAL is flushed (with the default
//! `synchronous_commit = on`), so an acknowledged write survives a crash of the database server.
//!
//! Several nodes write the same document at once, and the [`Store`] contract asks that a reader never sees
//! a chunk without every earlier chunk of its document (see [`ChunkId`]). Ids come from a sequence, and
//! under READ COMMITTED two transactions can commit in the opposite order of the ids they drew. So every
//! write to a document (append, compaction, delete) first takes a transaction-scoped lock on the document
//! (`lock_doc`) and draws its id only then: writes to one document commit one after another, in id order,
//! while writes to different documents proceed in parallel. The comment on `compact` below explains why
//! this makes racing compactions safe.
//!
//! Nodes hear of each other's appends through `LISTEN`/`NOTIFY`: `append` sends `pg_notify` on
//! [`NOTIFY_CHANNEL`] inside its transaction (PostgreSQL delivers it at commit, so a notice never announces a
//! chunk that is not there yet), carrying the node, the chunk id and the document; [`Store::subscribe`] starts
//! one listening connection per node that turns other nodes' notices into [`ChunkNotice`]s. No extra service
//! is needed and the notice shares the commit's fate. Notices are lost while the listener is disconnected, so
//! after every (re)connection it sends [`ChunkNotice::Resync`], and readers always catch up from what they have
//! seen with [`Store::load_after`].
//!
//! Failures do not latch. The pool tests a connection before handing it out and replaces broken ones, so
//! after PostgreSQL restarts the next operation simply gets a new connection; while the database cannot be
//! reached, every operation fails with [`StoreError::Unavailable`] after at most [`ACQUIRE_TIMEOUT`]
//! (the API answers 503 and `/healthz` reports degraded), and nothing was written.

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use futures_util::TryStreamExt;
use incident_doc::channel::{Channel, Network};
use incident_doc::schema::Status;
use rusqlite::types::Value;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow,
};
use sqlx::query::Query;
use sqlx::{Connection, Postgres, Row, Transaction};

use tokio::sync::broadcast;

use super::backup::{self, Kind};
use super::chat_log::{ChatLine, NewChatLine};
use super::lease;
use super::outbox::{
    Attempt, Carried, Delivery, DeliveryRecord, DeliveryState, NewDelivery, Sink, clip_error,
};
use super::replays::{ReplayRecord, ReplayState};
use super::{
    AuditEvent, AuditFilter, AuditRecord, ChunkId, ChunkNotice, IncidentSummary, ListFilter,
    SessionRecord, Store, StoreError, Stored, StoredTemplate, TEMPLATES_COUNTER, TokenRecord,
    audit_detail, status_from_column,
};
use crate::auth::Scope;
use wire::DocumentId;

/// The schema migrations of `server/migrations/`, embedded at compile time so the binary needs no files.
static MIGRATOR: Migrator = sqlx::migrate!();

/// How long an operation waits for a connection (including connecting to a database that refuses
/// connections) before failing with `Unavailable`: long enough to ride out a brief restart, short enough
/// that a caller hears "unavailable" instead of hanging.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The most connections one node keeps open. Each operation holds one only for its short transaction, and
/// appends to one document wait for each other anyway; a few nodes times this stays far below PostgreSQL's
/// default limit of 100.
const MAX_CONNECTIONS: u32 = 10;

/// The first key of the advisory locks that serialize writes to one document (the second key is a hash
/// of the document id). Two-key advisory locks live apart from the one-key locks that sqlx's migrator takes.
const DOC_LOCK_CLASS: i32 = 0x636d_6470; // "cmdp"

/// The channel of append notices between nodes; the payload is `<node> <chunk id> <document>`.
pub const NOTIFY_CHANNEL: &str = "commandpost_chunks";

/// Notices buffered per subscriber; one that falls further behind gets a [`ChunkNotice::Resync`] instead.
const NOTICE_BUFFER: usize = 4096;

/// How long the listener waits before reconnecting after PostgreSQL refused it.
const LISTEN_RETRY: Duration = Duration::from_millis(500);

/// The row of `counters` that holds the last incident number handed out.
const INCIDENT_COUNTER: &str = "incident_number";

/// The PostgreSQL backend of [`Store`]; see the module documentation for how it stays consistent across
/// nodes.
pub struct PostgresStore {
    /// The connection pool; it reconnects by itself, and closing it closes the store.
    pool: PgPool,
    /// This node's name in notices, so the listener can skip its own appends (the actor already has them).
    node: String,
    /// Set once the migrations have been applied; until then operations apply them first.
    migrated: AtomicBool,
    /// How many migration attempts have finished, so that a caller who waited for another's attempt
    /// takes its outcome instead of trying again.
    attempts: AtomicU64,
    /// Held during a migration attempt; holds the last attempt's failure.
    migrating: tokio::sync::Mutex<Option<StoreError>>,
}

impl PostgresStore {
    /// Prepares a store for the database at `url` without connecting: connections are opened on demand,
    /// and the first operation applies the schema migrations. Fails only if `url` cannot be parsed, or if
    /// called outside a tokio runtime (the pool runs its maintenance as tokio tasks).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        // sqlx reads a URL of any scheme as PostgreSQL's: `mysql://…` would be dialled as a PostgreSQL server.
        if !is_postgres(url) {
            return Err(StoreError::Unavailable(
                "the database URL is not a PostgreSQL one: it must start with postgres:// or postgresql://"
                    .into(),
            ));
        }
        // The URL is not repeated in errors: it may carry a password.
        let mut options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Unavailable(format!("the PostgreSQL URL is not valid: {e}"))
        })?;
        if options.get_application_name().is_none() {
            // Names this server's sessions in pg_stat_activity, unless the URL names them itself.
            options = options.application_name("commandpost");
        }
        tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError::Unavailable(
                "the PostgreSQL store must be opened inside a tokio runtime".into(),
            )
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // Checks an idle connection before reuse, so one that died with a restart is replaced
            // instead of failing the operation that drew it.
            .test_before_acquire(true)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            node: hex::encode(rand::random::<[u8; 8]>()),
            migrated: AtomicBool::new(false),
            attempts: AtomicU64::new(0),
            migrating: tokio::sync::Mutex::new(None),
        })
    }

    /// Whether commandpost's tables exist in the schema the URL chooses, asked without applying the migrations
    /// (which every other operation does first): a command that only reads must not create an empty store.
    pub async fn is_set_up(&self) -> Result<bool, StoreError> {
        sqlx::query_scalar("SELECT to_regclass('incidents') IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)
    }

    /// Returns the pool once the schema is up to date, applying the migrations on first use.
    async fn pool(&self) -> Result<&PgPool, StoreError> {
        if !self.migrated.load(Ordering::Acquire) {
            self.migrate_once().await?;
        }
        Ok(&self.pool)
    }

    /// Makes one migration attempt at a time and shares its outcome with the callers that waited for it:
    /// a burst of first operations opens one connection, not one each, and while the database is away
    /// they all fail after one [`ACQUIRE_TIMEOUT`] instead of one after another.
    async fn migrate_once(&self) -> Result<(), StoreError> {
        let before = self.attempts.load(Ordering::Acquire);
        let mut last_failure = self.migrating.lock().await;
        if self.migrated.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(failure) = last_failure.as_ref()
            && self.attempts.load(Ordering::Acquire) != before
        {
            return Err(failure.clone());
        }
        let outcome = self.migrate().await;
        match &outcome {
            Ok(()) => self.migrated.store(true, Ordering::Release),
            Err(failure) => *last_failure = Some(failure.clone()),
        }
        self.attempts.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    /// Applies the migrations the database lacks on a connection taken out of the pool and closed after.
    ///
    /// sqlx's migrator holds a session-level advisory lock while it runs and, when it fails (a database
    /// migrated by a newer commandpost, say), returns without releasing it. On a pooled connection the
    /// lock would outlive the attempt and block every later attempt, here and on other nodes; closing the
    /// connection releases it in every case.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?.detach();
        // No schema of the search path exists: PostgreSQL would only say "no schema has been selected to create
        // in" at some line of a migration.
        let schema: Result<Option<String>, StoreError> =
            sqlx::query_scalar("SELECT current_schema()")
                .fetch_one(&mut conn)
                .await
                .map_err(db_error);
        let outcome = match schema {
            Ok(Some(_)) => run_migrations(&mut conn).await,
            Ok(None) => Err(StoreError::Unavailable(
                "postgres: no schema of the search path exists, so there is nowhere to create the tables: \
                 create the schema (CREATE SCHEMA …) or name an existing one with \
                 ?options=-c%20search_path%3Dname"
                    .into(),
            )),
            Err(e) => Err(e),
        };
        if let Err(error) = conn.close().await {
            tracing::debug!(%error, "closing the PostgreSQL migration connection failed");
        }
        outcome
    }

    /// Begins a transaction holding `doc`'s write lock until it commits or rolls back.
    ///
    /// Everything that writes a document's chunks starts here, before drawing a chunk id, so the writes to
    /// one document commit in the order of their ids (see the module documentation).
    async fn lock_doc(
        &self,
        doc: DocumentId,
    ) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool().await?.begin().await.map_err(db_error)?;
        // A hash collision between two documents only makes their writes wait for each other.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(DOC_LOCK_CLASS)
            .bind(doc.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        Ok(tx)
    }

    /// Copies every table, read in one REPEATABLE READ transaction (one snapshot, which writers do not wait
    /// for), into a new backup file at `scratch`, and returns the file's connection.
    async fn copy_out(&self, scratch: &Path) -> Result<rusqlite::Connection, StoreError> {
        let mut tx = self.pool().await?.begin().await.map_err(db_error)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let path = scratch.to_owned();
        let mut sink = blocking(move || {
            let conn = backup::create(&path)?;
            conn.execute_batch("BEGIN").map_err(sqlite_error)?;
            Ok(conn)
        })
        .await?;
        for table in backup::TABLES {
            let sql = format!(
                "SELECT {} FROM {} ORDER BY {}",
                table.column_list(),
                table.name,
                table.columns[0].0
            );
            let mut rows = sqlx::query(table_sql(sql)).fetch(&mut *tx);
            let mut batch = Vec::with_capacity(backup::BATCH);
            loop {
                let row = rows.try_next().await.map_err(db_error)?;
                if let Some(row) = &row {
                    let values = table
                        .columns
                        .iter()
                        .enumerate()
                        .map(|(i, (_, kind))| read_value(row, i, *kind))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(db_error)?;
                    batch.push(values);
                }
                if batch.len() == backup::BATCH || (row.is_none() && !batch.is_empty()) {
                    let rows = std::mem::take(&mut batch);
                    sink = blocking(move || backup::insert(&sink, table, &rows).map(|()| sink))
                        .await?;
                }
                if row.is_none() {
                    break;
                }
            }
        }
        tx.commit().await.map_err(db_error)?;
        blocking(move || {
            sink.execute_batch("COMMIT").map_err(sqlite_error)?;
            Ok(sink)
        })
        .await
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn append_with(
        &self,
        doc: DocumentId,
        chunk: Vec<u8>,
        summary: Option<IncidentSummary>,
        deliveries: Vec<NewDelivery>,
    ) -> Result<ChunkId, StoreError> {
        super::refuse_foreign_summary(doc, summary.as_ref())?;
        let mut tx = self.lock_doc(doc).await?;
        let id: i64 =
            sqlx::query_scalar("INSERT INTO chunks (doc, data) VALUES ($1, $2) RETURNING id")
                .bind(doc.to_string())
                .bind(chunk)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
        if let Some(summary) = &summary {
            upsert_summary(&mut tx, summary).await?;
        }
        queue_deliveries(&mut tx, &deliveries).await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(format!("{} {id} {doc}", self.node))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(ChunkId(id))
    }

    async fn enqueue(&self, deliveries: Vec<NewDelivery>) -> Result<(), StoreError> {
        let mut tx = self.pool().await?.begin().await.map_err(db_error)?;
        queue_deliveries(&mut tx, &deliveries).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn claim_deliveries(
        &self,
        sink: Sink,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        // SKIP LOCKED: nodes claiming at the same moment take different rows instead of waiting for each other.
        let rows = sqlx::query(
            "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = $2
             WHERE id IN (SELECT id FROM deliveries WHERE sink = $4 AND state = 'pending'
                          AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING id, endpoint, event_id, payload, attempts",
        )
        .bind(to_micros(now))
        .bind(to_micros(lease_until))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(sink.as_str())
        .fetch_all(self.pool().await?)
        .await
        .map_err(db_error)?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                let attempts: i32 = row.try_get(4)?;
                Ok(Delivery {
                    id: row.try_get(0)?,
                    endpoint: row.try_get(1)?,
                    event_id: row.try_get(2)?,
                    payload: row.try_get(3)?,
                    attempts: u32::try_from(attempts).unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(db_error)?;
        claimed.sort_by_key(|d| d.id);
        Ok(claimed)
    }

    async fn finish_delivery(&self, id: i64, attempt: &Attempt) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deliveries SET state = $2, next_attempt_at = $3, last_attempt_at = $4,
                 last_status = $5, last_error = $6, delivered_at = $7
             WHERE id = $1",
        )
        .bind(id)
        .bind(attempt.state().as_str())
        .bind(to_micros(attempt.next_attempt_at()))
        .bind(to_micros(attempt.at))
        .bind(attempt.status.map(i32::from))
        .bind(attempt.error.as_deref().map(clip_error))
        .bind(attempt.delivered_at().map(to_micros))
        .execute(self.pool().await?)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn deliveries(
        &self,
        endpoint: &str,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, event_id, kind, doc, state, attempts, created_at, next_attempt_at,
                    last_attempt_at, last_status, last_error, delivered_at
             FROM deliveries WHERE endpoint = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(endpoint)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool().await?)
        .await
        .map_err(db_error)?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn deliveries_of(&self, doc: DocumentId, sink: Sink) -> Result<Vec<Carried>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, event_id, kind, doc, state, attempts, created_at, next_attempt_at,
                    last_attempt_at, last_status, last_error, delivered_at, endpoint, payload
             FROM deliveries WHERE doc = $1 AND sink = $2 ORDER BY id",
        )
        .bind(doc.to_string())
        .bind(sink.as_str())
        .fetch_all(self.pool().await?)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(Carried {
                    record: delivery_from_row(row)?,
                    endpoint: row.try_get(12).map_err(db_error)?,
                    payload: row.try_get(13).map_err(db_error)?,
                })
            })
            .collect()
    }

    async fn load_after(
        &self,
        doc: DocumentId,
        after: ChunkId,
    ) -> Result<Option<Stored>, StoreError> {
        // One statement reads one snapshot, so `upto` matches `chunks` exactly; and since writes to a
        // document commit in id order, the snapshot holds a prefix of the document's chunks above `after`.
        let rows: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT id, data FROM chunks WHERE doc = $1 AND id > $2 ORDER BY id")
                .bind(doc.to_string())
                .bind(after.0)
                .fetch_all(self.pool().await?)
                .await
                .map_err(db_error)?;
        let upto = rows.last().map(|(id, _)| ChunkId(*id));
        Ok(upto.map(|upto| Stored {
            chunks: rows.into_iter().map(|(_, data)| data).collect(),
            upto,
        }))
    }

    /// Replaces the chunks with id ≤ `upto` exactly as the SQLite store does: the snapshot takes over the
    /// id of the newest chunk it covers and the older ones are deleted.
    ///
    /// Why racing compactions (on one node or several) never lose a change, under READ COMMITTED:
    /// - The document lock makes compactions and appends of one document run one at a time, and under
    ///   READ COMMITTED each statement takes a fresh snapshot, so the statements after the lock see every
    ///   write committed before it was granted: each compaction works on the latest state, as with
    ///   SQLite's single writer.
    /// - Appends draw their ids under the same lock, so a node that loaded up to `upto` has seen every
    ///   chunk with an id ≤ `upto` that will ever exist: nothing at or below `upto` can commit later.
    ///   Deleting only ids ≤ `upto` thus deletes only changes the snapshot contains.
    /// - A compaction of an earlier load that runs after one of a later load finds nothing at or below
    ///   its `upto` (the later snapshot sits at a larger id) and does nothing; in the other order, the
    ///   later snapshot replaces the earlier one, which it covers.
    async fn compact(
        &self,
        doc: DocumentId,
        snapshot: Vec<u8>,
        upto: ChunkId,
    ) -> Result<(), StoreError> {
        let mut tx = self.lock_doc(doc).await?;
        let newest_covered: Option<i64> =
            sqlx::query_scalar("SELECT MAX(id) FROM chunks WHERE doc = $1 AND id <= $2")
                .bind(doc.to_string())
                .bind(upto.0)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
        // Nothing at or below `upto`: a compaction of a later load already replaced these chunks. The
        // transaction rolls back when dropped, releasing the lock.
        let Some(keep) = newest_covered else {
            return Ok(());
        };
        sqlx::query("UPDATE chunks SET data = $2 WHERE id = $1")
            .bind(keep)
            .bind(snapshot)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query("DELETE FROM chunks WHERE doc = $1 AND id < $2")
            .bind(doc.to_string())
            .bind(keep)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn delete(&self, doc: DocumentId) -> Result<bool, StoreError> {
        let mut tx = self.lock_doc(doc).await?;
        let chunks = sqlx::query("DELETE FROM chunks WHERE doc = $1")
            .bind(doc.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        let index = sqlx::query("DELETE FROM incidents WHERE id = $1")
            .bind(doc.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        sqlx::query("DELETE FROM chat_lines WHERE doc = $1")
            .bind(doc.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(chunks + index > 0)
    }

    async fn summary(&self, doc: DocumentId) -> Result<Option<IncidentSummary>, StoreError> {
        sqlx::query(
            "SELECT id, title, template, status, severity, number, created_at, updated_at, commander,
                    restricted, members, channel
             FROM incidents WHERE id = $1",
        )
        .bind(doc.to_string())
        .fetch_optional(self.pool().await?)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(summary_from_row)
        .transpose()
        .map_err(db_error)
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<IncidentSummary>, StoreError> {
        // PostgreSQL reads `LIMIT NULL` as "no limit".
        let limit = filter.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let rows = sqlx::query(
            "SELECT id, title, template, status, severity, number, created_at, updated_at, commander,
                    restricted, members, channel
             FROM incidents
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR severity = $2)
               AND ($4::text IS NULL OR restricted = 0 OR members::jsonb ? $4)
             ORDER BY created_at DESC, id LIMIT $3",
        )
        .bind(filter.status.map(Status::as_str))
        .bind(&filter.severity)
        .bind(limit)
        .bind(&filter.viewer)
        .fetch_all(self.pool().await?)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(summary_from_row)
            .collect::<Result<_, _>>()
            .map_err(db_error)
    }

    async fn next_incident_number(&self) -> Result<i64, StoreError> {
        // The upsert locks the counter row, so concurrent callers on every node take turns, each seeing
        // the value the previous one committed.
        sqlx::query_scalar(
            "INSERT INTO counters (name, value) VALUES ($1, 1)
             ON CONFLICT (name) DO UPDATE SET value = counters.value + 1
             RETURNING value",
        )
        .bind(INCIDENT_COUNTER)
        .fetch_one(self.pool().await?)
        .await
        .map_err(db_error)
    }

    async fn create_token(&self, name: &str, scope: Scope, hash: &str) -> Result<(), StoreError> {
        // The unique constraints decide, atomically across nodes; say which one in words.
        let inserted = sqlx::query("INSERT INTO tokens (name, scope, hash) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(scope.as_str())
            .bind(hash)
            .execute(self.pool().await?)
            .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.constraint() == Some("tokens_live_name") => Err(
                StoreError::Conflict(format!("an unrevoked token named {name:?} already exists")),
            ),
            Err(sqlx::Error::Database(e)) if e.constraint() == Some("tokens_hash_unique") => Err(
                StoreError::Conflict("a token with this hash already exists".to_owned()),
            ),
            Err(other) => Err(db_error(other)),
        }
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        sqlx::query("SELECT name, scope, created_at, revoked_at FROM tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(self.pool().await?)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        sqlx::query(
            "SELECT name, scope, created_at, revoked_at FROM tokens ORDER BY created_at, id",
        )
        .fetch_all(self.pool().await?)
        .await
        .map_err(db_error)?
        .iter()
        .map(token_from_row)
        .collect()
    }

    async fn revoke_token(&self, name: &str) -> Result<bool, StoreError> {
        let revoked = sqlx::query(
            "UPDATE tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
        )
        .bind(name)
        .execute(self.pool().await?)
        .await
        .map_err(db_error)?;
        Ok(revoked.rows_affected() > 0)
    }

    async fn token_count(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL")
            .fetch_one(self.pool().await?)
            .await
            .map_err(db_error)?;
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
        // One statement: the purge, the count (of unexpired tickets, since the purge's deletions are not visible
        // to it) and the insert, so nothing is written past the limit.
        let inserted = sqlx::query(
            "WITH purged AS (DELETE FROM tickets WHERE expires_at <= $3)
             INSERT INTO tickets (hash, token_hash, expires_at)
             SELECT $1, $2, $4
             WHERE (SELECT COUNT(*) FROM tickets WHERE token_hash = $2 AND expires_at > $3) < $5",
        )
        .bind(hash)
        .bind(token_hash)
        .bind(now)
        .bind(expires_at)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .execute(self.pool().await?)
        .await
        .map_err(db_error)?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn take_ticket(
        &self,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        // One DELETE … RETURNING: of nodes racing for the same row, exactly one deletes it.
        let taken: Option<(String, DateTime<Utc>)> =
            sqlx::query_as("DELETE FROM tickets WHERE hash = $1 RETURNING token_hash, expires_at")
                .bind(hash)
                .fetch_optional(self.pool().await?)
                .await
                .map_err(db_error)?;
        Ok(taken
            .filter(|(_, expires_at)| *expires_at > now)
            .map(|(token_hash, _)| token_hash))
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        // One upsert: racing inserts conflict on the key, and the update's condition is judged on the row as the
        // winner left it, so exactly one caller gets a free lease.
        sqlx::query_scalar(sqlx::AssertSqlSafe(lease::acquire_statement(
            "$1", "$2", "$3", "$4",
        )))
        .bind(name)
        .bind(holder)
        .bind(now)
        .bind(now + ttl)
        .fetch_optional(self.pool().await?)
        .await
        .map_err(db_error)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE leases SET expires_at = $3 WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .bind(lease::released())
            .execute(self.pool().await?)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn create_session(&self, hash: &str, session: &SessionRecord) -> Result<(), StoreError> {
        sqlx::query(
            "WITH purged AS (DELETE FROM sessions WHERE expires_at <= $5)
             INSERT INTO sessions (id, hash, name, scope, created_at, last_used_at, expires_at, created_from)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&session.id)
        .bind(hash)
        .bind(&session.name)
        .bind(session.scope.as_str())
        .bind(session.created_at)
        .bind(session.last_used_at)
        .bind(session.expires_at)
        .bind(&session.created_from)
        .execute(self.pool().await?)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn session_by_hash(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE hash = $1"
        )))
        .bind(hash)
        .fetch_optional(self.pool().await?)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(session_from_row)
        .transpose()
    }

    async fn touch_session(&self, id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET last_used_at = $2 WHERE id = $1 AND last_used_at < $2")
            .bind(id)
            .bind(at)
            .execute(self.pool().await?)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn list_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions ORDER BY created_at, id"
        )))
        .fetch_all(self.pool().await?)
        .await
        .map_err(db_error)?
        .iter()
        .map(session_from_row)
        .collect()
    }

    async fn revoke_session(&self, id: &str) -> Result<bool, StoreError> {
        let revoked = sqlx::query(
            "UPDATE sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .execute(self.pool().await?)
        .await
        .map_err(db_error)?;
        Ok(revoked.rows_affected() > 0)
    }

    async fn create_login(
        &self,
        hash: &str,
        data: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "WITH purged AS (DELETE FROM logins WHERE expires_at <= $3)
             INSERT INTO logins (hash, data, expires_at) VALUES ($1, $2, $4)",
        )
        .bind(hash)
        .bind(data)
        .bind(now)
        .bind(expires_at)
        .execute(self.pool().await?)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn take_login(
        &self,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        // One DELETE … RETURNING: of nodes racing for the same row, exactly one deletes it.
        let taken: Option<(String, DateTime<Utc>)> =
            sqlx::query_as("DELETE FROM logins WHERE hash = $1 RETURNING data, expires_at")
                .bind(hash)
                .fetch_optional(self.pool().await?)
                .await
                .map_err(db_error)?;
        Ok(taken
            .filter(|(_, expires_at)| *expires_at > now)
            .map(|(data, _)| data))
    }

    async fn put_template(&self, id: &str, source: &str, by: &str) -> Result<(), StoreError> {
        // One statement, so the template and the revision other nodes poll change together.
        sqlx::query(
            "WITH put AS (
                 INSERT INTO templates (id, source, updated_by) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET source = excluded.source, updated_by = excluded.updated_by,
                 updated_at = now()
             )
             INSERT INTO counters (name, value) VALUES ($4, 1)
             ON CONFLICT (name) DO UPDATE SET value = counters.value + 1",
        )
        .bind(id)
        .bind(source)
        .bind(by)
        .bind(TEMPLATES_COUNTER)
        .execute(self.pool().await?)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn delete_template(&self, id: &str) -> Result<bool, StoreError> {
        let deleted: Option<i64> = sqlx::query_scalar(
            "WITH deleted AS (DELETE FROM templates WHERE id = $1 RETURNING id)
             INSERT INTO counters (name, value) SELECT $2, 1 FROM deleted
             ON CONFLICT (name) DO UPDATE SET value = counters.value + 1
             RETURNING value",
        )
        .bind(id)
        .bind(TEMPLATES_COUNTER)
        .fetch_optional(self.pool().await?)
        .await
        .map_err(db_error)?;
        Ok(deleted.is_some())
    }

    async fn templates(&self) -> Result<Vec<StoredTemplate>, StoreError> {
        let rows: Vec<(String, String, String, DateTime<Utc>)> =
            sqlx::query_as("SELECT id, source, updated_by, updated_at FROM templates ORDER BY id")
                .fetch_all(self.pool().await?)
                .await
                .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|(id, source, updated_by, updated_at)| StoredTemplate {
                id,
                source,
                updated_by,
                updated_at,
            })
            .collect())
    }

    async fn templates_revision(&self) -> Result<i64, StoreError> {
        let value: Option<i64> = sqlx::query_scalar("SELECT value FROM counters WHERE name = $1")
            .bind(TEMPLATES_COUNTER)
            .fetch_optional(self.pool().await?)
            .await
            .map_err(db_error)?;
        Ok(value.unwrap_or_default())
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<ChunkNotice>> {
        let (sender, receiver) = broadcast::channel(NOTICE_BUFFER);
        tokio::spawn(listen(self.pool.clone(), self.node.clone(), sender));
        Some(receiver)
    }

    async fn append_chat(&self, lines: Vec<NewChatLine>) -> Result<usize, StoreError> {
        if lines.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool().await?.begin().await.map_err(db_error)?;
        let mut added = 0;
        for line in &lines {
            added += sqlx::query(
                "INSERT INTO chat_lines (doc, network, channel, line_id, speaker, person, text, at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (doc, network, channel, line_id) DO NOTHING",
            )
            .bind(line.doc.to_string())
            .bind(line.network.as_str())
            .bind(&line.channel)
            .bind(&line.line_id)
            .bind(&line.speaker)
            .bind(&line.person)
            .bind(&line.text)
            .bind(to_micros(line.at))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        }
        tx.commit().await.map_err(db_error)?;
        Ok(usize::try_from(added).unwrap_or(usize::MAX))
    }

    async fn chat_log(
        &self,
        doc: DocumentId,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ChatLine>, StoreError> {
        let rows: Vec<ChatRow> = sqlx::query_as(
            "SELECT id, network, channel, speaker, person, text, at FROM chat_lines
             WHERE doc = $1 AND ($2::bigint IS NULL OR id < $2)
             ORDER BY id DESC LIMIT $3",
        )
        .bind(doc.to_string())
        .bind(before)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool().await?)
        .await
        .map_err(db_error)?;
        rows.into_iter().map(chat_line).collect()
    }

    async fn chat_line(
        &self,
        doc: DocumentId,
        network: Network,
        channel: &str,
        line_id: &str,
    ) -> Result<Option<ChatLine>, StoreError> {
        let row: Option<ChatRow> = sqlx::query_as(
            "SELECT id, network, channel, speaker, person, text, at FROM chat_lines
             WHERE doc = $1 AND network = $2 AND channel = $3 AND line_id = $4",
        )
        .bind(doc.to_string())
        .bind(Sink::from(network).as_str())
        .bind(channel)
        .bind(line_id)
        .fetch_optional(self.pool().await?)
        .await
        .map_err(db_error)?;
        row.map(chat_line).transpose()
    }

    async fn incident_by_channel(
        &self,
        network: Network,
        address: &str,
    ) -> Result<Option<IncidentSummary>, StoreError> {
        sqlx::query(
            "SELECT id, title, template, status, severity, number, created_at, updated_at, commander,
                    restricted, members, channel
             FROM incidents WHERE channel_key = $1 AND status <> 'closed'
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(super::chat_log::channel_key(network, address))
        .fetch_optional(self.pool().await?)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(summary_from_row)
        .transpose()
        .map_err(db_error)
    }

    async fn bound_channels(&self, network: Network) -> Result<Vec<Channel>, StoreError> {
        let texts: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT channel FROM incidents
             WHERE channel_key LIKE $1
               AND (status <> 'closed'
                    OR EXISTS (SELECT 1 FROM deliveries WHERE doc = incidents.id AND sink = $2
                                                          AND state = 'pending'))
             ORDER BY channel_key",
        )
        .bind(super::chat_log::network_pattern(network))
        .bind(Sink::from(network).as_str())
        .fetch_all(self.pool().await?)
        .await
        .map_err(db_error)?;
        Ok(super::chat_log::distinct_channels(texts))
    }

    async fn record_audit(&self, event: &AuditEvent<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (actor, action, target, detail, origin) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(event.actor)
        .bind(event.action)
        .bind(event.target)
        .bind(audit_detail(&event.detail))
        .bind(event.from.as_deref())
        .execute(self.pool().await?)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        type Row = (
            i64,
            DateTime<Utc>,
            String,
            String,
            String,
            String,
            Option<String>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, at, actor, action, target, detail, origin FROM audit_log
             WHERE ($1::text IS NULL OR actor = $1)
               AND ($2::text IS NULL OR action = $2 OR ($3 AND left(action, length($2)) = $2))
               AND ($4::text IS NULL OR target = $4)
               AND ($5::timestamptz IS NULL OR at >= $5) AND ($6::timestamptz IS NULL OR at < $6)
               AND ($7::bigint IS NULL OR id < $7)
             ORDER BY id DESC LIMIT $8",
        )
        .bind(filter.actor.as_deref())
        .bind(filter.action.as_deref())
        .bind(filter.action_is_prefix())
        .bind(filter.target.as_deref())
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.before)
        .bind(i64::from(filter.limit))
        .fetch_all(self.pool().await?)
        .await
        .map_err(db_error)?;
        rows.into_iter()
            .map(|(id, at, actor, action, target, detail, from)| {
                Ok(AuditRecord {
                    id,
                    at,
                    actor,
                    action,
                    target,
                    detail: serde_json::from_str(&detail).map_err(|e| {
                        StoreError::Corrupt(format!(
                            "audit log entry {id}: detail is not JSON: {e}"
                        ))
                    })?,
                    from,
                })
            })
            .collect()
    }

    async fn create_replay(&self, replay: &ReplayRecord) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO replays ({REPLAY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        )))
        .bind(replay.drill.to_string())
        .bind(replay.source.to_string())
        .bind(&replay.facilitator)
        .bind(replay.speed_centi)
        .bind(replay.state.as_str())
        .bind(replay.elapsed_ms)
        .bind(replay.since)
        .bind(replay.next_step)
        .bind(replay.total)
        .bind(&replay.steps)
        .bind(replay.version)
        .bind(replay.created_at)
        .execute(self.pool().await?)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn replay(&self, drill: DocumentId) -> Result<Option<ReplayRecord>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REPLAY_COLUMNS} FROM replays WHERE drill = $1"
        )))
        .bind(drill.to_string())
        .fetch_optional(self.pool().await?)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(replay_from_row)
        .transpose()
        .map_err(db_error)
    }

    async fn running_replays(&self) -> Result<Vec<ReplayRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REPLAY_COLUMNS} FROM replays WHERE state = 'running' ORDER BY created_at"
        )))
        .fetch_all(self.pool().await?)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(replay_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)
    }

    async fn update_replay(&self, replay: &ReplayRecord) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE replays SET state = $2, elapsed_ms = $3, since = $4, next_step = $5, version = version + 1
             WHERE drill = $1 AND version = $6",
        )
        .bind(replay.drill.to_string())
        .bind(replay.state.as_str())
        .bind(replay.elapsed_ms)
        .bind(replay.since)
        .bind(replay.next_step)
        .bind(replay.version)
        .execute(self.pool().await?)
        .await
        .map_err(db_error)?;
        Ok(updated.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Taking a connection proves the database answers (and the schema is current); the query that
        // the connection is still usable.
        sqlx::query("SELECT 1")
            .execute(self.pool().await?)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn backup(&self, out: &Path) -> Result<(), StoreError> {
        let scratch = backup::scratch_for(out);
        let result = self.copy_out(&scratch).await;
        let result = match result {
            Ok(conn) => {
                let (scratch, out) = (scratch.clone(), out.to_owned());
                blocking(move || backup::seal(conn, &scratch, &out)).await
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = std::fs::remove_file(&scratch);
        }
        result
    }

    async fn restore(&self, from: &Path, replace: bool) -> Result<(), StoreError> {
        let from = from.to_owned();
        let mut source = Some(blocking(move || backup::open(&from)).await?);
        let mut tx = self.pool().await?.begin().await.map_err(db_error)?;
        // No writer may slip a row in between the emptiness check and the copy.
        let names: Vec<&str> = backup::TABLES.iter().map(|t| t.name).collect();
        let names = names.join(", ");
        sqlx::query(table_sql(format!(
            "LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE"
        )))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if replace {
            sqlx::query(table_sql(format!("TRUNCATE {names}")))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        for table in backup::TABLES {
            let filled: bool = sqlx::query_scalar(table_sql(format!(
                "SELECT EXISTS (SELECT 1 FROM {})",
                table.name
            )))
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            if filled {
                return Err(StoreError::Conflict(format!(
                    "the store is not empty (its {} table has rows)",
                    table.name
                )));
            }
            let overriding = if table.identity {
                "OVERRIDING SYSTEM VALUE"
            } else {
                ""
            };
            let marks: Vec<String> = (1..=table.columns.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "INSERT INTO {} ({}) {overriding} VALUES ({})",
                table.name,
                table.column_list(),
                marks.join(", ")
            );
            let mut after = i64::MIN;
            loop {
                let conn = source
                    .take()
                    .expect("the backup connection is returned after each batch");
                let ((rows, last), conn) = blocking(move || {
                    let batch = backup::read_batch(&conn, "main", table, after);
                    batch.map(|batch| (batch, conn))
                })
                .await?;
                source = Some(conn);
                if rows.is_empty() {
                    break;
                }
                after = last;
                for row in rows {
                    let mut query = sqlx::query(table_sql(sql.clone()));
                    for (value, (_, kind)) in row.into_iter().zip(table.columns) {
                        query = bind(query, value, *kind)?;
                    }
                    query.execute(&mut *tx).await.map_err(db_error)?;
                }
            }
            if table.identity {
                let first = table.columns[0].0;
                sqlx::query(table_sql(format!(
                    "SELECT setval(pg_get_serial_sequence('{name}', '{first}'), \
                     COALESCE(MAX({first}), 0) + 1, false) FROM {name}",
                    name = table.name
                )))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            }
        }
        tx.commit().await.map_err(db_error)
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Waits for the connections in use, so the operations under way finish; later ones fail with
        // `PoolClosed`, which maps to `Unavailable`. Closing a closed pool returns at once.
        self.pool.close().await;
        Ok(())
    }
}

/// Whether `url` names a PostgreSQL database by its scheme.
fn is_postgres(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql")
    })
}

/// Where `url` points, in words for messages: the database, host, port and schema (the first of the search path
/// the URL sets, where the tables are), never the user's password.
pub fn location(url: &str) -> String {
    if !is_postgres(url) {
        return match url.split_once("://") {
            Some((scheme, _)) => {
                format!("the database URL {scheme}://…, which is not PostgreSQL's")
            }
            None => "a database URL that is not PostgreSQL's".to_owned(),
        };
    }
    let Ok(options) = PgConnectOptions::from_str(url) else {
        return "PostgreSQL (the URL is not valid)".to_owned();
    };
    let schema = options
        .get_options()
        .and_then(|o| o.split_once("search_path=")?.1.split([' ', ',']).next())
        .filter(|s| !s.is_empty())
        .map_or_else(
            || "the user's default schema".to_owned(),
            |s| format!("schema {s}"),
        );
    format!(
        "PostgreSQL database {} on {}:{}, {schema}",
        options.get_database().unwrap_or(options.get_username()),
        options.get_host(),
        options.get_port()
    )
}

/// Listens for other nodes' appends until the store closes or nobody subscribes any more; reconnects by itself
/// and says [`ChunkNotice::Resync`] after each connection, since notices sent meanwhile are lost.
async fn listen(pool: PgPool, node: String, notices: broadcast::Sender<ChunkNotice>) {
    while !pool.is_closed() && notices.receiver_count() > 0 {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::debug!(%error, "cannot listen for other nodes' appends yet");
                tokio::time::sleep(LISTEN_RETRY).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(NOTIFY_CHANNEL).await {
            tracing::debug!(%error, "LISTEN failed");
            tokio::time::sleep(LISTEN_RETRY).await;
            continue;
        }
        if notices.send(ChunkNotice::Resync).is_err() {
            return;
        }
        loop {
            let notice = match listener.try_recv().await {
                // The connection dropped and was re-established: whatever was sent meanwhile is lost.
                Ok(None) => ChunkNotice::Resync,
                Ok(Some(notification)) => match parse_notice(notification.payload(), &node) {
                    Some(notice) => notice,
                    None => continue,
                },
                Err(error) => {
                    tracing::debug!(%error, "listening for other nodes' appends failed; reconnecting");
                    break;
                }
            };
            if notices.send(notice).is_err() {
                return;
            }
        }
    }
}

/// An append notice from another node; `None` for our own appends and for payloads we do not understand.
fn parse_notice(payload: &str, own_node: &str) -> Option<ChunkNotice> {
    let mut parts = payload.splitn(3, ' ');
    let (node, id, doc) = (parts.next()?, parts.next()?, parts.next()?);
    if node == own_node {
        return None;
    }
    Some(ChunkNotice::Appended {
        doc: doc.parse().ok()?,
        id: ChunkId(id.parse().ok()?),
    })
}

/// Inserts or replaces an incident's index row inside the append's transaction.
async fn upsert_summary(
    tx: &mut Transaction<'static, Postgres>,
    summary: &IncidentSummary,
) -> Result<(), StoreError> {
    let (channel, channel_key) = super::chat_log::channel_column(summary.channel.as_ref());
    sqlx::query(
        "INSERT INTO incidents
             (id, title, template, status, severity, number, created_at, updated_at, commander, restricted,
              members, channel, channel_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (id) DO UPDATE SET
             title = excluded.title, template = excluded.template, status = excluded.status,
             severity = excluded.severity, number = excluded.number,
             created_at = excluded.created_at, updated_at = excluded.updated_at,
             commander = excluded.commander, restricted = excluded.restricted, members = excluded.members,
             channel = excluded.channel, channel_key = excluded.channel_key",
    )
    .bind(summary.id.to_string())
    .bind(&summary.title)
    .bind(&summary.template)
    .bind(summary.status_name())
    .bind(&summary.severity)
    .bind(summary.number)
    .bind(to_micros(summary.created_at))
    .bind(to_micros(summary.updated_at))
    .bind(&summary.commander)
    .bind(i32::from(summary.restricted))
    .bind(super::members_column(&summary.members))
    .bind(channel)
    .bind(channel_key)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Queues deliveries inside the caller's transaction, as the SQLite store does: a coalescing one first tries to
/// take over an unattempted row with its key (a row being claimed is locked, and once claimed no longer matches);
/// an event already queued for the endpoint is left alone.
async fn queue_deliveries(
    tx: &mut Transaction<'static, Postgres>,
    deliveries: &[NewDelivery],
) -> Result<(), StoreError> {
    for d in deliveries {
        if let Some(key) = &d.coalesce {
            let merged = sqlx::query(
                "UPDATE deliveries SET event_id = $3, payload = $4, next_attempt_at = $5
                 WHERE endpoint = $1 AND coalesce_key = $2 AND state = 'pending' AND attempts = 0",
            )
            .bind(&d.endpoint)
            .bind(key)
            .bind(&d.event_id)
            .bind(&d.payload)
            .bind(to_micros(d.not_before))
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
            if merged.rows_affected() > 0 {
                continue;
            }
        }
        sqlx::query(
            "INSERT INTO deliveries (endpoint, event_id, kind, doc, coalesce_key, payload, next_attempt_at, sink)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (endpoint, event_id) DO NOTHING",
        )
        .bind(&d.endpoint)
        .bind(&d.event_id)
        .bind(&d.kind)
        .bind(d.doc.to_string())
        .bind(&d.coalesce)
        .bind(&d.payload)
        .bind(to_micros(d.not_before))
        .bind(d.sink.as_str())
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    }
    Ok(())
}

/// Reads a delivery log row selected as `id, event_id, kind, doc, state, attempts, created_at, next_attempt_at,
/// last_attempt_at, last_status, last_error, delivered_at`.
fn delivery_from_row(row: &PgRow) -> Result<DeliveryRecord, StoreError> {
    let state: String = row.try_get(4).map_err(db_error)?;
    let state = DeliveryState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("postgres: delivery state {state:?}")))?;
    let attempts: i32 = row.try_get(5).map_err(db_error)?;
    let status: Option<i32> = row.try_get(9).map_err(db_error)?;
    let next: Option<DateTime<Utc>> = row.try_get(7).map_err(db_error)?;
    Ok(DeliveryRecord {
        id: row.try_get(0).map_err(db_error)?,
        event_id: row.try_get(1).map_err(db_error)?,
        kind: row.try_get(2).map_err(db_error)?,
        incident: id_column(row, 3).map_err(db_error)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        created_at: row.try_get(6).map_err(db_error)?,
        next_attempt_at: next.filter(|_| state == DeliveryState::Pending),
        last_attempt_at: row.try_get(8).map_err(db_error)?,
        last_status: status.and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get(10).map_err(db_error)?,
        delivered_at: row.try_get(11).map_err(db_error)?,
        state,
    })
}

/// A chat line as selected: `id, network, channel, speaker, person, text, at`.
type ChatRow = (
    i64,
    String,
    String,
    String,
    Option<String>,
    String,
    DateTime<Utc>,
);

fn chat_line(
    (id, network, channel, speaker, person, text, at): ChatRow,
) -> Result<ChatLine, StoreError> {
    Ok(ChatLine {
        id,
        network: network
            .parse()
            .map_err(|e: String| StoreError::Corrupt(format!("chat line {id}: {e}")))?,
        channel,
        speaker,
        person,
        text,
        at,
    })
}

/// Drops sub-microsecond digits the way the SQLite store does (towards the past), rather than leaving it
/// to the driver, which rounds times before 2000 towards 2000.
fn to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    time.trunc_subsecs(6)
}

/// Reads an index row selected as `id, title, template, status, severity, number, created_at,
/// updated_at, commander, restricted, members, channel`.
fn summary_from_row(row: &PgRow) -> Result<IncidentSummary, sqlx::Error> {
    let members: String = row.try_get(10)?;
    Ok(IncidentSummary {
        channel: super::chat_log::channel_from_column(row.try_get(11)?),
        restricted: row.try_get::<i32, _>(9)? != 0,
        members: super::members_from_column(&members).map_err(|e| sqlx::Error::ColumnDecode {
            index: "members".into(),
            source: e.into(),
        })?,
        id: id_column(row, 0)?,
        title: row.try_get(1)?,
        template: row.try_get(2)?,
        status: status_from_column(row.try_get(3)?),
        severity: row.try_get(4)?,
        commander: row.try_get(8)?,
        number: row.try_get(5)?,
        created_at: row.try_get(6)?,
        updated_at: row.try_get(7)?,
    })
}

/// The columns of `replays`, in [`replay_from_row`]'s order.
const REPLAY_COLUMNS: &str = "drill, source, facilitator, speed_centi, state, elapsed_ms, since, next_step, total, \
     steps, version, created_at";

fn replay_from_row(row: &PgRow) -> Result<ReplayRecord, sqlx::Error> {
    let state: String = row.try_get(4)?;
    Ok(ReplayRecord {
        drill: id_column(row, 0)?,
        source: id_column(row, 1)?,
        facilitator: row.try_get(2)?,
        speed_centi: row.try_get(3)?,
        state: ReplayState::parse(&state).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "state".into(),
            source: format!("unknown replay state {state:?}").into(),
        })?,
        elapsed_ms: row.try_get(5)?,
        since: row.try_get(6)?,
        next_step: row.try_get(7)?,
        total: row.try_get(8)?,
        steps: row.try_get(9)?,
        version: row.try_get(10)?,
        created_at: row.try_get(11)?,
    })
}

/// Reads a document id stored as its text; text that is no id means corruption.
fn id_column(row: &PgRow, index: usize) -> Result<DocumentId, sqlx::Error> {
    let text: String = row.try_get(index)?;
    text.parse().map_err(|e| sqlx::Error::ColumnDecode {
        index: index.to_string(),
        source: Box::new(e),
    })
}

/// Reads a token selected as `name, scope, created_at, revoked_at`.
/// The columns [`session_from_row`] reads, in its order.
const SESSION_COLUMNS: &str =
    "id, name, scope, created_at, last_used_at, expires_at, created_from, revoked_at";

fn session_from_row(row: &PgRow) -> Result<SessionRecord, StoreError> {
    let scope: String = row.try_get(2).map_err(db_error)?;
    Ok(SessionRecord {
        id: row.try_get(0).map_err(db_error)?,
        name: row.try_get(1).map_err(db_error)?,
        scope: scope
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("postgres: session scope: {e}")))?,
        created_at: row.try_get(3).map_err(db_error)?,
        last_used_at: row.try_get(4).map_err(db_error)?,
        expires_at: row.try_get(5).map_err(db_error)?,
        created_from: row.try_get(6).map_err(db_error)?,
        revoked_at: row.try_get(7).map_err(db_error)?,
    })
}

fn token_from_row(row: &PgRow) -> Result<TokenRecord, StoreError> {
    let scope: String = row.try_get(1).map_err(db_error)?;
    Ok(TokenRecord {
        name: row.try_get(0).map_err(db_error)?,
        scope: scope
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("postgres: token scope: {e}")))?,
        created_at: row.try_get(2).map_err(db_error)?,
        revoked_at: row.try_get(3).map_err(db_error)?,
    })
}

/// A statement of a backup or restore, built only from the constant table and column names of
/// [`backup::TABLES`], never from input.
fn table_sql(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

/// Runs file and SQLite work of a backup or restore on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Unavailable(format!("a backup task failed: {e}")))?
}

/// An error of the backup file's SQLite.
fn sqlite_error(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("the backup file: {error}"))
}

/// Column `index` of `row`, of type `kind`, as the backup file holds it.
fn read_value(row: &PgRow, index: usize, kind: Kind) -> Result<Value, sqlx::Error> {
    Ok(match kind {
        Kind::Int4 => row
            .try_get::<Option<i32>, _>(index)?
            .map_or(Value::Null, |v| Value::Integer(v.into())),
        Kind::Int8 => row
            .try_get::<Option<i64>, _>(index)?
            .map_or(Value::Null, Value::Integer),
        Kind::Text => row
            .try_get::<Option<String>, _>(index)?
            .map_or(Value::Null, Value::Text),
        Kind::Blob => row
            .try_get::<Option<Vec<u8>>, _>(index)?
            .map_or(Value::Null, Value::Blob),
        Kind::Time => row
            .try_get::<Option<DateTime<Utc>>, _>(index)?
            .map_or(Value::Null, |t| Value::Integer(t.timestamp_micros())),
    })
}

/// Binds a backup file's value to a column of type `kind`; a value of another type means a damaged backup.
fn bind<'q>(
    query: Query<'q, Postgres, PgArguments>,
    value: Value,
    kind: Kind,
) -> Result<Query<'q, Postgres, PgArguments>, StoreError> {
    let wrong = |value: &Value| {
        StoreError::Corrupt(format!(
            "the backup holds {value:?} where a {kind:?} belongs"
        ))
    };
    Ok(match (kind, value) {
        (Kind::Int4, Value::Null) => query.bind(None::<i32>),
        (Kind::Int8, Value::Null) => query.bind(None::<i64>),
        (Kind::Text, Value::Null) => query.bind(None::<String>),
        (Kind::Blob, Value::Null) => query.bind(None::<Vec<u8>>),
        (Kind::Time, Value::Null) => query.bind(None::<DateTime<Utc>>),
        (Kind::Int4, Value::Integer(v)) => {
            query.bind(i32::try_from(v).map_err(|_| wrong(&Value::Integer(v)))?)
        }
        (Kind::Int8, Value::Integer(v)) => query.bind(v),
        (Kind::Text, Value::Text(v)) => query.bind(v),
        (Kind::Blob, Value::Blob(v)) => query.bind(v),
        (Kind::Time, Value::Integer(v)) => query.bind(
            DateTime::<Utc>::from_timestamp_micros(v).ok_or_else(|| wrong(&Value::Integer(v)))?,
        ),
        (_, value) => return Err(wrong(&value)),
    })
}

/// Classifies a PostgreSQL error: constraint violations are conflicts, damaged data and unreadable
/// values are corruption, and everything else (no connection, timeouts, a restart, a missing schema,
/// the store closed) is unavailability.
fn db_error(error: sqlx::Error) -> StoreError {
    let message = format!("postgres: {error}");
    match &error {
        sqlx::Error::Database(e) => match e.code().as_deref().unwrap_or_default() {
            // Class 23, integrity constraint violation: a unique name or hash already taken.
            code if code.starts_with("23") => StoreError::Conflict(message),
            // Class 22, data exception: a value PostgreSQL cannot store (a NUL character in text, an
            // out-of-range time). Retrying the same request fails the same way.
            code if code.starts_with("22") => StoreError::Conflict(message),
            // data_corrupted, index_corrupted.
            "XX001" | "XX002" => StoreError::Corrupt(message),
            _ => StoreError::Unavailable(message),
        },
        sqlx::Error::Decode(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(message),
        _ => StoreError::Unavailable(message),
    }
}

/// Applies the missing migrations on `conn` and says so when it upgraded an existing schema (never on an ordinary
/// start: an operator upgrading wants to see it happened, and nobody wants it every time).
async fn run_migrations(conn: &mut PgConnection) -> Result<(), StoreError> {
    // sqlx's `CREATE TABLE IF NOT EXISTS _sqlx_migrations` draws a NOTICE ("already exists, skipping") that sqlx
    // logs at INFO on every start; only warnings say something here.
    sqlx::query("SET client_min_messages TO warning")
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    // Two statements: PostgreSQL resolves every table a statement names before running it, so one query could not
    // read the migrations table only when it exists.
    let existing: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
    let before: Option<i64> = if existing {
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?
    } else {
        None
    };
    // `run_direct` is `Migrator::run` without the generic `Acquire`, whose future the compiler cannot prove `Send`
    // inside an `async_trait` method (sqlx exposes it for exactly this).
    MIGRATOR
        .run_direct(None, &mut *conn, false)
        .await
        .map_err(migrate_error)?;
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(from) = before.filter(|&from| from < latest) {
        tracing::info!(from, to = latest, "upgraded the PostgreSQL schema");
    }
    Ok(())
}

/// Classifies a migration failure. A database migrated by a newer commandpost is refused like the SQLite
/// store refuses a newer file: nothing is touched, and upgrading commandpost fixes it.
fn migrate_error(error: MigrateError) -> StoreError {
    match error {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => db_error(e),
        MigrateError::VersionMissing(version) => StoreError::Unavailable(format!(
            "postgres: the database has schema migration {version}, newer than this commandpost \
             knows; upgrade commandpost"
        )),
        // An applied migration whose text changed, or one that stopped half way: needs an operator.
        e @ (MigrateError::VersionMismatch(_) | MigrateError::Dirty(_)) => {
            StoreError::Corrupt(format!("postgres migrations: {e}"))
        }
        other => StoreError::Unavailable(format!("postgres migrations: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::time::Instant;

    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ROOT, ReadDoc};
    use futures_util::future::join_all;
    use sqlx::AssertSqlSafe;

    use super::*;
    use crate::store::conformance::doc_id;

    /// The database the tests use unless `COMMANDPOST_TEST_DATABASE_URL` names another: the local
    /// PostgreSQL of the development machines and CI, with trust authentication.
    const DEFAULT_TEST_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    fn test_url() -> String {
        std::env::var("COMMANDPOST_TEST_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_TEST_URL.to_owned())
    }

    /// A schema of its own in the test database, so that concurrent tests and runs never meet; dropped
    /// with everything in it when the guard goes.
    struct TestSchema {
        name: String,
    }

    impl TestSchema {
        /// Creates the schema, failing the test with instructions if PostgreSQL cannot be reached: these
        /// tests are never skipped.
        fn create() -> Self {
            let name = format!("commandpost_test_{:016x}", rand::random::<u64>());
            if let Err(e) = admin(format!("CREATE SCHEMA {name}")) {
                panic!(
                    "the PostgreSQL store tests need PostgreSQL at {} (database `test`, trust auth; \
                     set COMMANDPOST_TEST_DATABASE_URL to use another): {e}",
                    test_url()
                );
            }
            TestSchema { name }
        }

        /// The test database's URL with this schema first on the search path, and the schema's name as
        /// the application name so a test can find its own sessions.
        fn url(&self) -> String {
            let base = test_url();
            let separator = if base.contains('?') { '&' } else { '?' };
            format!(
                "{base}{separator}options=-c%20search_path%3D{name}&application_name={name}",
                name = self.name
            )
        }

        /// Another node's store on the same schema: a pool of its own.
        fn open(&self) -> PostgresStore {
            PostgresStore::open(&self.url()).expect("the store opens")
        }
    }

    impl Drop for TestSchema {
        fn drop(&mut self) {
            if let Err(e) = admin(format!("DROP SCHEMA {} CASCADE", self.name)) {
                eprintln!("dropping the test schema {} failed: {e}", self.name);
            }
        }
    }

    /// Runs one statement on a connection of its own, from a thread of its own, so that it works in
    /// synchronous code (the conformance suite's `fresh`, `Drop`) whatever runtime is around.
    fn admin(sql: String) -> Result<(), String> {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&test_url())
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.close().await.map_err(|e| e.to_string())
            })
        })
        .join()
        .map_err(|_| "the admin thread panicked".to_owned())?
    }

    /// A fresh, empty store in a schema of its own, which must outlive it.
    fn fresh() -> (PostgresStore, TestSchema) {
        let schema = TestSchema::create();
        (schema.open(), schema)
    }

    mod conformance {
        crate::store::conformance::conformance_suite!(super::fresh);
    }

    /// Sets a root field and returns the incremental chunk holding just that change.
    fn change(doc: &mut AutoCommit, key: &str, value: &str) -> Vec<u8> {
        doc.put(ROOT, key, value).expect("setting a root field");
        doc.save_incremental()
    }

    fn rebuild(stored: &Stored) -> AutoCommit {
        AutoCommit::load(&stored.chunks.concat()).expect("stored chunks load")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tables_live_in_the_schema_of_the_url() {
        let (store, schema) = fresh();
        store.ping().await.expect("ping applies the migrations");
        let current: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&store.pool)
            .await
            .expect("current_schema");
        assert_eq!(current, schema.name);
        let tables: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables
             WHERE table_schema = $1 AND table_name IN ('chunks', 'incidents', 'counters', 'tokens', 'tickets')",
        )
        .bind(&schema.name)
        .fetch_one(&store.pool)
        .await
        .expect("count tables");
        assert_eq!(tables, 5);
        // A second node finds the schema migrated and applies nothing.
        let other = schema.open();
        other.ping().await.expect("ping");
        store.close().await.expect("close");
        other.close().await.expect("close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn incident_numbers_are_unique_across_nodes() {
        let (a, schema) = fresh();
        let b = schema.open();
        let (from_a, from_b) = tokio::join!(
            join_all((0..50).map(|_| a.next_incident_number())),
            join_all((0..50).map(|_| b.next_incident_number())),
        );
        let numbers: Vec<i64> = from_a
            .into_iter()
            .chain(from_b)
            .map(|n| n.expect("a number"))
            .collect();
        let distinct: BTreeSet<i64> = numbers.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            100,
            "no number handed out twice: {numbers:?}"
        );
        assert_eq!(distinct, (1..=100).collect::<BTreeSet<i64>>());
        a.close().await.expect("close");
        b.close().await.expect("close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loads_see_a_prefix_of_appends_from_two_nodes() {
        // Without the document lock this fails in most runs: a load sees a chunk whose smaller-id
        // neighbour, drawn earlier by the other node, has not committed yet.
        const ROUNDS: usize = 3;
        const PER_NODE: u8 = 100;
        let (a, schema) = fresh();
        let (a, b) = (Arc::new(a), Arc::new(schema.open()));
        for round in 0..ROUNDS {
            let doc = doc_id(&format!("doc-{round}"));
            let done = Arc::new(AtomicBool::new(false));
            let reader = {
                let (a, done) = (Arc::clone(&a), Arc::clone(&done));
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while !done.load(Ordering::Acquire) {
                        if let Some(stored) = a.load(doc).await.expect("load") {
                            seen.push(stored);
                        }
                    }
                    seen
                })
            };
            let writes = |store: &Arc<PostgresStore>, node: u8| {
                join_all((0..PER_NODE).map(|i| {
                    let store = Arc::clone(store);
                    async move { store.append(doc, vec![node, i], None).await }
                }))
            };
            let (from_a, from_b) = tokio::join!(writes(&a, 0), writes(&b, 1));
            done.store(true, Ordering::Release);
            for id in from_a.into_iter().chain(from_b) {
                id.expect("append");
            }
            let seen = reader.await.expect("the reader task");
            let last = a.load(doc).await.expect("load").expect("stored");
            assert_eq!(last.chunks.len(), 2 * usize::from(PER_NODE));
            assert!(!seen.is_empty());
            // Every load saw the chunks that come first in the final order, with no gap: within a
            // document, ids are handed out in commit order.
            for stored in &seen {
                assert_eq!(
                    stored.chunks[..],
                    last.chunks[..stored.chunks.len()],
                    "round {round}: a load up to {:?} missed an earlier chunk",
                    stored.upto
                );
            }
        }
        a.close().await.expect("close");
        b.close().await.expect("close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_compacting_while_appending_lose_nothing() {
        const CHANGES: usize = 60;
        let (a, schema) = fresh();
        let (a, b) = (Arc::new(a), Arc::new(schema.open()));
        let mut doc = AutoCommit::new();
        a.append(doc_id("doc"), change(&mut doc, "title", "race"), None)
            .await
            .expect("append");
        let done = Arc::new(AtomicBool::new(false));
        // Each node compacts the document over and over, from whatever it loads, like two servers whose
        // compaction thresholds fire together.
        let compactor = |store: Arc<PostgresStore>| {
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut rounds = 0;
                while !done.load(Ordering::Acquire) || rounds == 0 {
                    let stored = store
                        .load(doc_id("doc"))
                        .await
                        .expect("load")
                        .expect("stored");
                    let snapshot = rebuild(&stored).save();
                    store
                        .compact(doc_id("doc"), snapshot, stored.upto)
                        .await
                        .expect("compact");
                    rounds += 1;
                }
                rounds
            })
        };
        let compactors = [compactor(Arc::clone(&a)), compactor(Arc::clone(&b))];
        for i in 0..CHANGES {
            let node = if i % 2 == 0 { &a } else { &b };
            node.append(doc_id("doc"), change(&mut doc, &format!("k{i}"), "v"), None)
                .await
                .expect("append");
        }
        done.store(true, Ordering::Release);
        for task in compactors {
            assert!(task.await.expect("a compactor") > 0);
        }
        let stored = a.load(doc_id("doc")).await.expect("load").expect("stored");
        let mut loaded = rebuild(&stored);
        for i in 0..CHANGES {
            assert!(
                loaded.get(ROOT, format!("k{i}")).expect("read").is_some(),
                "change {i} survived the compactions"
            );
        }
        assert_eq!(loaded.get_heads(), doc.get_heads());
        a.close().await.expect("close");
        b.close().await.expect("close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_database_is_unavailable_promptly() {
        // Nothing listens on port 1: connecting is refused, and retried until the acquire timeout.
        let store = PostgresStore::open("postgres://postgres@127.0.0.1:1/test").expect("open");
        let started = Instant::now();
        let (ping, append) = tokio::join!(store.ping(), store.append(doc_id("doc"), vec![1], None));
        let elapsed = started.elapsed();
        assert!(matches!(ping, Err(StoreError::Unavailable(_))), "{ping:?}");
        assert!(
            matches!(append, Err(StoreError::Unavailable(_))),
            "{append:?}"
        );
        assert!(
            elapsed < ACQUIRE_TIMEOUT + Duration::from_secs(2),
            "took {elapsed:?}"
        );
        store.close().await.expect("close");

        // A closed store answers at once.
        let (store, _schema) = fresh();
        store.ping().await.expect("ping");
        store.close().await.expect("close");
        let started = Instant::now();
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_bad_url_is_refused_without_the_url() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let _inside = runtime.enter();
        match PostgresStore::open("postgres://user:secret@127.0.0.1:notaport/test") {
            Err(StoreError::Unavailable(message)) => {
                assert!(!message.contains("secret"), "{message}")
            }
            other => panic!("expected Unavailable, got {:?}", other.map(|_| "a store")),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_killed_by_a_restart_are_replaced() {
        let (store, schema) = fresh();
        store
            .append(doc_id("doc"), vec![1], None)
            .await
            .expect("append");
        // The connection goes back to the pool in the background.
        tokio::time::timeout(Duration::from_secs(5), async {
            while store.pool.num_idle() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("a connection waits in the pool");
        // What a PostgreSQL restart does to this node's sessions, without restarting the shared server;
        // the timeout makes it wait until they are gone.
        admin(format!(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
             WHERE application_name = '{}'",
            schema.name
        ))
        .expect("terminate the store's sessions");
        store.ping().await.expect("ping on a new connection");
        store
            .append(doc_id("doc"), vec![2], None)
            .await
            .expect("append");
        assert_eq!(
            store
                .load(doc_id("doc"))
                .await
                .expect("load")
                .expect("stored")
                .chunks,
            vec![vec![1], vec![2]]
        );
        store.close().await.expect("close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn newer_schema_is_refused() {
        let (store, schema) = fresh();
        store.ping().await.expect("ping applies the migrations");
        store.close().await.expect("close");
        admin(format!(
            "INSERT INTO {}._sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (9999, 'from a newer commandpost', true, '\\x00', 0)",
            schema.name
        ))
        .expect("record a newer migration");
        let newer = schema.open();
        // Twice: a failed attempt must not leave the migration lock behind and hang the next one.
        for attempt in 0..2 {
            let result = tokio::time::timeout(Duration::from_secs(10), newer.ping())
                .await
                .expect("a refused migration does not hang");
            match result {
                Err(StoreError::Unavailable(message)) => {
                    assert!(message.contains("newer"), "attempt {attempt}: {message}")
                }
                other => panic!("attempt {attempt}: expected Unavailable, got {other:?}"),
            }
        }
        newer.close().await.expect("close");
    }
}
