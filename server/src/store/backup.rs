//! The portable backup format both backends write and restore, and the integrity check that reads it.
//!
//! A backup is one SQLite database file with the embedded store's schema (the tables of `sqlite.rs`'s migrations,
//! the same as `server/migrations/`), marked by `PRAGMA application_id` = [`APPLICATION_ID`] and carrying the schema
//! version in `PRAGMA user_version`. A SQLite file rather than a stream of records of our own: every table is kept
//! with its exact values (timestamps as microseconds since the Unix epoch, ids as stored), the file is readable with
//! any `sqlite3` shell, SQLite checks its own pages, and the embedded store takes one with `VACUUM INTO` (a single
//! read transaction that writers do not wait for). The PostgreSQL store fills the same tables from one REPEATABLE
//! READ transaction, so a backup of either restores into either. PostgreSQL's `chunks.created_at` is not kept (the
//! embedded store has no such column, and nothing reads it); restored chunks get the time of the restore.
//!
//! [`TABLES`] names every table and column once, with its type, for the backends' copies in both directions.
//! [`check`] reads a backup (of any backend) and reports what is wrong with it: `commandpost check` takes a backup
//! into a scratch file first, so it judges one consistent moment of a running store.

use std::collections::BTreeMap;
use std::path::Path;

use incident_doc::Incident;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

use super::StoreError;
use super::sqlite::{self, MIGRATIONS};

/// `PRAGMA application_id` of a backup file ("cmdb"), so a restore refuses some other SQLite file.
pub const APPLICATION_ID: i32 = 0x636d_6462;

/// How rows are read and written in batches while copying, bounding the memory a copy holds.
pub(super) const BATCH: usize = 512;

/// A column's type, which says how each backend reads and binds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// PostgreSQL `INTEGER`.
    Int4,
    /// PostgreSQL `BIGINT`.
    Int8,
    /// Text.
    Text,
    /// Bytes (PostgreSQL `BYTEA`).
    Blob,
    /// A time: microseconds since the Unix epoch in SQLite and the backup, `TIMESTAMPTZ` in PostgreSQL.
    Time,
}

/// One table of the store, as the backup holds it.
#[derive(Debug)]
pub(super) struct Table {
    /// The table's name, the same in both backends.
    pub name: &'static str,
    /// Its columns in order; the first is the key rows are copied in the order of.
    pub columns: &'static [(&'static str, Kind)],
    /// Whether the first column is PostgreSQL's identity column, whose sequence a restore moves past the ids.
    pub identity: bool,
}

impl Table {
    /// The column names, comma-separated, for statements.
    pub fn column_list(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(name, _)| *name).collect();
        names.join(", ")
    }
}

/// Every table of the store: a backup holds them all, a restore fills them all.
pub(super) const TABLES: &[Table] = &[
    Table {
        name: "chunks",
        columns: &[
            ("id", Kind::Int8),
            ("doc", Kind::Text),
            ("data", Kind::Blob),
        ],
        identity: true,
    },
    Table {
        name: "incidents",
        columns: &[
            ("id", Kind::Text),
            ("title", Kind::Text),
            ("template", Kind::Text),
            ("status", Kind::Text),
            ("severity", Kind::Text),
            ("number", Kind::Int8),
            ("created_at", Kind::Time),
            ("updated_at", Kind::Time),
            ("commander", Kind::Text),
            ("restricted", Kind::Int4),
            ("members", Kind::Text),
            ("channel", Kind::Text),
            ("channel_key", Kind::Text),
        ],
        identity: false,
    },
    Table {
        name: "counters",
        columns: &[("name", Kind::Text), ("value", Kind::Int8)],
        identity: false,
    },
    Table {
        name: "tokens",
        columns: &[
            ("id", Kind::Int8),
            ("name", Kind::Text),
            ("scope", Kind::Text),
            ("hash", Kind::Text),
            ("created_at", Kind::Time),
            ("revoked_at", Kind::Time),
        ],
        identity: true,
    },
    Table {
        name: "deliveries",
        columns: &[
            ("id", Kind::Int8),
            ("endpoint", Kind::Text),
            ("event_id", Kind::Text),
            ("kind", Kind::Text),
            ("doc", Kind::Text),
            ("coalesce_key", Kind::Text),
            ("payload", Kind::Text),
            ("state", Kind::Text),
            ("attempts", Kind::Int4),
            ("created_at", Kind::Time),
            ("next_attempt_at", Kind::Time),
            ("last_attempt_at", Kind::Time),
            ("last_status", Kind::Int4),
            ("last_error", Kind::Text),
            ("delivered_at", Kind::Time),
            ("sink", Kind::Text),
        ],
        identity: true,
    },
    Table {
        name: "leases",
        columns: &[
            ("name", Kind::Text),
            ("holder", Kind::Text),
            ("epoch", Kind::Int8),
            ("expires_at", Kind::Time),
        ],
        identity: false,
    },
    Table {
        name: "replays",
        columns: &[
            ("drill", Kind::Text),
            ("source", Kind::Text),
            ("facilitator", Kind::Text),
            ("speed_centi", Kind::Int8),
            ("state", Kind::Text),
            ("elapsed_ms", Kind::Int8),
            ("since", Kind::Time),
            ("next_step", Kind::Int8),
            ("total", Kind::Int8),
            ("steps", Kind::Text),
            ("version", Kind::Int8),
            ("created_at", Kind::Time),
        ],
        identity: false,
    },
    Table {
        name: "tickets",
        columns: &[
            ("hash", Kind::Text),
            ("token_hash", Kind::Text),
            ("expires_at", Kind::Time),
        ],
        identity: false,
    },
    Table {
        name: "sessions",
        columns: &[
            ("id", Kind::Text),
            ("hash", Kind::Text),
            ("name", Kind::Text),
            ("scope", Kind::Text),
            ("created_at", Kind::Time),
            ("last_used_at", Kind::Time),
            ("expires_at", Kind::Time),
            ("created_from", Kind::Text),
            ("revoked_at", Kind::Time),
        ],
        identity: false,
    },
    Table {
        name: "logins",
        columns: &[
            ("hash", Kind::Text),
            ("data", Kind::Text),
            ("expires_at", Kind::Time),
        ],
        identity: false,
    },
    Table {
        name: "templates",
        columns: &[
            ("id", Kind::Text),
            ("source", Kind::Text),
            ("updated_by", Kind::Text),
            ("updated_at", Kind::Time),
        ],
        identity: false,
    },
    Table {
        name: "audit_log",
        columns: &[
            ("id", Kind::Int8),
            ("at", Kind::Time),
            ("actor", Kind::Text),
            ("action", Kind::Text),
            ("target", Kind::Text),
            ("detail", Kind::Text),
            ("origin", Kind::Text),
        ],
        identity: true,
    },
    Table {
        name: "chat_lines",
        columns: &[
            ("id", Kind::Int8),
            ("doc", Kind::Text),
            ("network", Kind::Text),
            ("channel", Kind::Text),
            ("line_id", Kind::Text),
            ("speaker", Kind::Text),
            ("person", Kind::Text),
            ("text", Kind::Text),
            ("at", Kind::Time),
        ],
        identity: true,
    },
];

/// A new, empty backup file at `path` (which must not exist), with the schema and marks of the format.
pub(super) fn create(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
    let mut conn = Connection::open_with_flags(path, flags).map_err(sqlite::db_error)?;
    sqlite::migrate(&mut conn)?;
    Ok(conn)
}

/// Marks a finished backup file and makes it durable under `out`: the format's application id, a rollback journal
/// (a backup is one file, with no `-wal` beside it), then an fsync and an atomic rename, so `out` is either the
/// previous file or the whole new backup.
pub(super) fn seal(conn: Connection, scratch: &Path, out: &Path) -> Result<(), StoreError> {
    conn.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(sqlite::db_error)?;
    conn.pragma_update(None, "journal_mode", "DELETE")
        .map_err(sqlite::db_error)?;
    conn.close().map_err(|(_, e)| sqlite::db_error(e))?;
    let io = |what: &str, e: std::io::Error| StoreError::Unavailable(format!("{what}: {e}"));
    std::fs::File::open(scratch)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("syncing the backup", e))?;
    std::fs::rename(scratch, out).map_err(|e| io("moving the backup into place", e))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing the backup's directory", e))?;
    }
    Ok(())
}

/// The scratch file a backup to `out` is written as before it is renamed: beside it, so the rename is atomic.
pub(super) fn scratch_for(out: &Path) -> std::path::PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_owned();
    name.push(format!(".partial-{}", std::process::id()));
    out.with_file_name(name)
}

/// Opens a backup file to read, after checking that it is one and of the schema version this build writes.
pub(super) fn open(path: &Path) -> Result<Connection, StoreError> {
    if !path.is_file() {
        return Err(StoreError::Unavailable(format!(
            "{}: no such file",
            path.display()
        )));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY;
    let conn = Connection::open_with_flags(path, flags).map_err(sqlite::db_error)?;
    verify(&conn, "main", path)?;
    Ok(conn)
}

/// Checks that database `schema` of `conn` is a backup this build reads.
fn verify(conn: &Connection, schema: &str, path: &Path) -> Result<(), StoreError> {
    let pragma = |name: &str| -> Result<i64, StoreError> {
        conn.pragma_query_value(Some(schema), name, |row| row.get(0))
            .map_err(sqlite::db_error)
    };
    if pragma("application_id")? != i64::from(APPLICATION_ID) {
        return Err(StoreError::Corrupt(format!(
            "{} is not a commandpost backup",
            path.display()
        )));
    }
    let version = pragma("user_version")?;
    if version != MIGRATIONS.len() as i64 {
        return Err(StoreError::Unavailable(format!(
            "{} has schema version {version}; this commandpost reads backups of version {}",
            path.display(),
            MIGRATIONS.len()
        )));
    }
    Ok(())
}

/// Up to [`BATCH`] rows of `table` in database `schema` after rowid `after`, with the last rowid read.
pub(super) fn read_batch(
    conn: &Connection,
    schema: &str,
    table: &Table,
    after: i64,
) -> Result<(Vec<Vec<Value>>, i64), StoreError> {
    let sql = format!(
        "SELECT rowid, {} FROM {schema}.{} WHERE rowid > ?1 ORDER BY rowid LIMIT {BATCH}",
        table.column_list(),
        table.name
    );
    let mut statement = conn.prepare_cached(&sql).map_err(sqlite::db_error)?;
    let mut last = after;
    let rows = statement
        .query_map([after], |row| {
            let rowid: i64 = row.get(0)?;
            let values = (1..=table.columns.len())
                .map(|i| row.get::<_, Value>(i))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rowid, values))
        })
        .map_err(sqlite::db_error)?
        .map(|row| {
            row.map(|(rowid, values)| {
                last = rowid;
                values
            })
        })
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sqlite::db_error)?;
    Ok((rows, last))
}

/// Inserts `rows` (in [`Table::columns`] order) into `table`.
pub(super) fn insert(
    conn: &Connection,
    table: &Table,
    rows: &[Vec<Value>],
) -> Result<(), StoreError> {
    let marks: Vec<String> = (1..=table.columns.len()).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        table.name,
        table.column_list(),
        marks.join(", ")
    );
    let mut statement = conn.prepare_cached(&sql).map_err(sqlite::db_error)?;
    for row in rows {
        statement
            .execute(rusqlite::params_from_iter(row))
            .map_err(sqlite::db_error)?;
    }
    Ok(())
}

/// What [`check`] found: each problem in words, and how much it looked at.
#[derive(Debug, Default)]
pub struct Report {
    /// The documents read.
    pub documents: usize,
    /// The chunks read.
    pub chunks: usize,
    /// Everything wrong, one sentence each; empty when the store is whole.
    pub problems: Vec<String>,
}

/// Reads everything in the backup at `path` and reports what is wrong: a document that does not load (a chunk
/// whose checksum or contents are damaged; automerge checks every chunk's SHA-256 checksum as it parses it) or
/// that misses changes (a chunk gone: the later changes' dependencies are absent), an index row that disagrees with
/// its document or has no document, a document with no index row, and rows of the other tables that cannot be read
/// back (tokens, the webhook outbox, tickets, templates, counters).
pub fn check(path: &Path) -> Result<Report, StoreError> {
    let conn = open(path)?;
    let mut report = Report::default();
    let index = sqlite::read_index(&conn)?;
    let mut seen = std::collections::BTreeSet::new();
    let mut statement = conn
        .prepare("SELECT doc, id, data FROM chunks ORDER BY doc, id")
        .map_err(sqlite::db_error)?;
    let mut rows = statement.query([]).map_err(sqlite::db_error)?;
    let mut current: Option<(String, Vec<u8>)> = None;
    let mut finish = |report: &mut Report, doc: String, bytes: Vec<u8>| {
        report.documents += 1;
        check_document(report, &doc, &bytes, index.get(&doc));
        seen.insert(doc);
    };
    while let Some(row) = rows.next().map_err(sqlite::db_error)? {
        let doc: String = row.get(0).map_err(sqlite::db_error)?;
        report.chunks += 1;
        let data = match row.get(2).map_err(sqlite::db_error)? {
            Value::Blob(data) => data,
            other => {
                let id: i64 = row.get(1).map_err(sqlite::db_error)?;
                report.problems.push(format!(
                    "incident {doc}: chunk {id} holds {} instead of bytes",
                    other.data_type()
                ));
                Vec::new()
            }
        };
        match &mut current {
            Some((open, bytes)) if *open == doc => bytes.extend_from_slice(&data),
            _ => {
                if let Some((done, bytes)) = current.replace((doc, data)) {
                    finish(&mut report, done, bytes);
                }
            }
        }
    }
    if let Some((done, bytes)) = current.take() {
        finish(&mut report, done, bytes);
    }
    for id in index.keys().filter(|id| !seen.contains(*id)) {
        report.problems.push(format!(
            "incident {id}: an index row without a document (no chunks)"
        ));
    }
    report.problems.extend(sqlite::unreadable_rows(&conn)?);
    Ok(report)
}

/// Checks one document's joined chunks against its index row.
fn check_document(
    report: &mut Report,
    doc: &str,
    bytes: &[u8],
    row: Option<&Result<super::IncidentSummary, String>>,
) {
    let mut incident = match Incident::load(bytes) {
        Ok(incident) => incident,
        Err(e) => {
            report
                .problems
                .push(format!("incident {doc}: the document does not load: {e}"));
            return;
        }
    };
    let missing = incident.doc().clone().get_missing_deps(&[]);
    if !missing.is_empty() {
        report.problems.push(format!(
            "incident {doc}: changes are missing ({} dependencies absent): a chunk is gone",
            missing.len()
        ));
    }
    let row = match row {
        None => {
            report
                .problems
                .push(format!("incident {doc}: a document without an index row"));
            return;
        }
        Some(Err(e)) => {
            report
                .problems
                .push(format!("incident {doc}: the index row cannot be read: {e}"));
            return;
        }
        Some(Ok(row)) => row,
    };
    let headline = incident.headline();
    let commander = incident.commander();
    let mut differ = Vec::new();
    if row.title != headline.title {
        differ.push("title");
    }
    if row.template != headline.template {
        differ.push("template");
    }
    if row.status_name() != headline.status.as_deref().unwrap_or("") {
        differ.push("status");
    }
    if row.severity != headline.severity {
        differ.push("severity");
    }
    if row.number != headline.number {
        differ.push("number");
    }
    // Rows written before the index kept the commander have none until the incident next changes.
    if row.commander.is_some() && row.commander != commander {
        differ.push("commander");
    }
    // Rows written before the index kept access are open, as every incident then was.
    let access = incident.access();
    if row.restricted != access.restricted || (row.restricted && row.members != access.members) {
        differ.push("access");
    }
    if !differ.is_empty() {
        report.problems.push(format!(
            "incident {doc}: the index row disagrees with the document on {}",
            differ.join(", ")
        ));
    }
}

/// The index rows by document id, each read or the reason it cannot be.
pub(super) type Index = BTreeMap<String, Result<super::IncidentSummary, String>>;
