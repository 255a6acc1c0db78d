//! Durable storage for incident documents, their index and API tokens.
//!
//! The server keeps every live incident as an Automerge document. Storage is append-only: each time a
//! document changes, the server appends the incremental chunk that Automerge produced (`save_after`), and
//! once in a while it replaces the accumulated chunks with one compact snapshot. Next to the chunks each
//! backend keeps a small index row per incident ([`IncidentSummary`]) so that listing incidents does not
//! require loading every document, a counter for human-friendly incident numbers, hashed API tokens, and the hashed
//! `/sync` tickets that stand for a token for a few seconds (`api/tickets.rs`).
//!
//! [`Store`] is the backend-neutral interface, used as `Arc<dyn Store>`. [`sqlite::SqliteStore`] is the
//! embedded default; [`postgres::PostgresStore`], shared by several server nodes, implements the same
//! trait, which is why the contracts below are phrased so that they hold for several writers at once.

pub mod backup;
pub mod chat_log;
pub mod lease;
pub mod outbox;
pub mod postgres;
pub mod replays;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use incident_doc::schema::Status;
use incident_doc::{Incident, LoadError};
use serde::{Deserialize, Serialize};

use crate::auth::Scope;
use chat_log::{ChatLine, NewChatLine};
use incident_doc::channel::{Channel, Network};
use outbox::{Attempt, Carried, Delivery, DeliveryRecord, NewDelivery, Sink};
use replays::ReplayRecord;
use wire::DocumentId;

/// Identifies one stored chunk, so that a compaction can say exactly which chunks its snapshot covers.
///
/// Backends hand out ids that only grow and are never reused, and a reader never sees a document's chunk
/// without also seeing all of that document's chunks with smaller ids. Compaction relies on both: "every
/// chunk with id ≤ `upto`" must mean "exactly the chunks that the compacting node had loaded".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChunkId(pub i64);

/// News from [`Store::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkNotice {
    /// Another node appended chunk `id` to document `doc`.
    Appended {
        /// The document.
        doc: DocumentId,
        /// The new chunk.
        id: ChunkId,
    },
    /// Notices may have been missed (the listener reconnected): every live document should catch up.
    Resync,
}

/// A document as stored: what a server node needs to rebuild it in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The chunks in append order, a compacted snapshot (if any) first; concatenated they form a byte
    /// string that `AutoCommit::load` accepts.
    pub chunks: Vec<Vec<u8>>,
    /// The id of the last chunk, to be passed to [`Store::compact`] together with a snapshot built from
    /// exactly these chunks (or more).
    pub upto: ChunkId,
}

impl Stored {
    /// The incident these chunks hold, for the readers that work from storage rather than through a live document
    /// (analytics, the CLI's export, the stale-field sweep), which would otherwise each join the chunks themselves.
    pub fn incident(&self) -> Result<Incident, LoadError> {
        Incident::load(&self.chunks.concat())
    }

    /// How many bytes the chunks take in storage, what the document size limit counts.
    pub fn size(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }
}

/// The searchable facts about one incident, kept beside its chunks so that listings stay cheap.
///
/// Backends keep the timestamps to the microsecond (PostgreSQL's precision), so a value read back may
/// have lost its sub-microsecond digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentSummary {
    /// The Automerge document id, which is also the incident's id in URLs.
    pub id: DocumentId,
    /// The incident's title, shown in listings.
    pub title: String,
    /// The template the incident was declared from, so listings can group or filter by kind.
    pub template: String,
    /// The workflow status, the usual listing filter; `None` for a document that names none (or one this build
    /// does not know).
    pub status: Option<Status>,
    /// The severity, absent until someone sets one.
    pub severity: Option<String>,
    /// The Incident Commander, so a list tells whom to call without opening the incident; absent when nobody is
    /// named, and for rows last written before the index kept it (until the incident next changes).
    pub commander: Option<String>,
    /// The human-friendly incident number from [`Store::next_incident_number`], absent for documents
    /// created without one.
    pub number: Option<i64>,
    /// When the incident was declared; listings show the newest first.
    pub created_at: DateTime<Utc>,
    /// When the incident last changed, so listings can show staleness.
    pub updated_at: DateTime<Utc>,
    /// Whether only members (and admins) may see the incident: everyone else is answered as if it did not exist.
    /// Kept here so that every route and every node decides from one committed row, without loading the document.
    pub restricted: bool,
    /// The members (the declarer, the role holders and the people the commander added), sorted; what
    /// [`ListFilter::viewer`] and [`IncidentSummary::visible_to`] match against.
    pub members: Vec<String>,
    /// The chat channel bound to the incident, so that a line heard in a channel finds its incident (and the bots
    /// their channels) without loading documents.
    pub channel: Option<Channel>,
}

impl IncidentSummary {
    /// The status's name, `""` for none: how the index column has always held it and the incident list shows it.
    pub fn status_name(&self) -> &'static str {
        self.status.map_or("", Status::as_str)
    }

    /// Whether `name` (an administrator when `admin`) may know the incident exists.
    pub fn visible_to(&self, name: &str, admin: bool) -> bool {
        !self.restricted || admin || self.members.iter().any(|m| m == name)
    }
}

/// The members as the index column holds them (a JSON array of names), the same text in both backends.
fn members_column(members: &[String]) -> String {
    serde_json::to_string(members).unwrap_or_else(|_| "[]".into())
}

/// Reads the members column back.
fn members_from_column(text: &str) -> Result<Vec<String>, serde_json::Error> {
    serde_json::from_str(text)
}

/// Reads the index's status column back. A name this build does not know reads as none rather than failing every
/// listing that includes the row: the column only mirrors the document, which stays the truth.
fn status_from_column(name: &str) -> Option<Status> {
    name.parse().ok()
}

/// Narrows [`Store::list`], so that common listings are answered by the index alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilter {
    /// Only incidents with exactly this status; `None` lists all of them.
    pub status: Option<Status>,
    /// Only incidents with exactly this severity; `None` lists all of them.
    pub severity: Option<String>,
    /// At most this many incidents (the newest); `None` means no limit.
    pub limit: Option<usize>,
    /// Only incidents this person may see: open ones and restricted ones they are a member of. `None` lists
    /// every incident (administrators, the operator's commands).
    pub viewer: Option<String>,
}

/// An API token as the store knows it; the secret itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The operator-chosen name, used to revoke the token and to attribute changes.
    pub name: String,
    /// What the token may do.
    pub scope: Scope,
    /// When the token was created, for audits.
    pub created_at: DateTime<Utc>,
    /// When the token was revoked; kept rather than deleting the row so that a revoked token can be
    /// told apart from an unknown one and audits still see it.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A browser's single sign-on session as the store knows it (`sso.rs`); the session's secret is never stored, only
/// its hash, as for tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The public id admins list and revoke it by; knowing it grants nothing.
    pub id: String,
    /// The person's name from the provider's claim: their identity in stamps and the timeline.
    pub name: String,
    /// The scope the provider's claims mapped to at sign-in.
    pub scope: Scope,
    /// When the person signed in.
    pub created_at: DateTime<Utc>,
    /// When the session was last used (to within the touch interval): the idle timeout runs from here.
    pub last_used_at: DateTime<Utc>,
    /// The absolute end of the session, however much it is used.
    pub expires_at: DateTime<Utc>,
    /// The address the sign-in came from (the peer and any `X-Forwarded-For`), for admins.
    pub created_from: Option<String>,
    /// When it was ended (signed out or revoked); kept so that a revoked session is told apart from an unknown one.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Why a storage operation failed; callers map these to retries, HTTP statuses or alerts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or written (I/O error, disk full, read-only or missing files,
    /// lock timeout, store closed). Nothing was written; retrying later may succeed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The request contradicts what is stored (a name already in use, a summary for another document).
    /// Retrying the same request fails the same way.
    #[error("storage conflict: {0}")]
    Conflict(String),
    /// Stored data cannot be read back as written (damaged file, unknown values); needs an operator.
    #[error("storage corrupt: {0}")]
    Corrupt(String),
}

/// A template uploaded through the admin API (`PUT /api/templates/{id}`), as stored: shared by every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTemplate {
    /// The template id.
    pub id: String,
    /// The Markdown source.
    pub source: String,
    /// The token name that uploaded it.
    pub updated_by: String,
    /// When.
    pub updated_at: DateTime<Utc>,
}

/// One thing to record in the audit log (`crate::audit::Event` where it is built).
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    /// Who acted: a token's or person's name, `commandpost` (the server) or `cli` (a local command).
    pub actor: &'a str,
    /// What happened, `noun.verb` (`token.created`); docs/security.md lists every action.
    pub action: &'static str,
    /// What it happened to (a token name, an incident id), or empty.
    pub target: &'a str,
    /// The facts of this kind of action, a JSON object (`Value::Null` stores `{}`).
    pub detail: serde_json::Value,
    /// Where the request came from (`audit::ClientAddr`) or who ran the command.
    pub from: Option<String>,
}

/// One entry of the audit log, as stored: who did what to what, when and from where (`crate::audit`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    /// Increases with every entry, on every node: the order of the log and the cursor of its pages.
    pub id: i64,
    /// When the store wrote it.
    pub at: DateTime<Utc>,
    /// The person, token or process that acted (`commandpost` for the server itself, `cli` for a local command).
    pub actor: String,
    /// What happened, a dotted name such as `token.revoked` (the list is in docs/security.md).
    pub action: String,
    /// What it happened to: a token or person's name, an incident id; empty when nothing more is named.
    pub target: String,
    /// The facts of this kind of action (a scope, a reason), a JSON object.
    pub detail: serde_json::Value,
    /// Where the request came from: the peer's address and any `X-Forwarded-For` it sent, or the local user.
    pub from: Option<String>,
}

/// Narrows [`Store::audit`]; every condition given must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action, or, ending in `.`, every action under it (`session.`).
    pub action: Option<String>,
    /// Only entries about this target.
    pub target: Option<String>,
    /// Only entries written at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries written before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only entries older than this id: the next page after one whose last entry had it.
    pub before: Option<i64>,
    /// At most this many entries, the newest first.
    pub limit: u32,
}

impl AuditFilter {
    /// Whether [`AuditFilter::action`] names a family of actions (`session.`) rather than one.
    fn action_is_prefix(&self) -> bool {
        self.action.as_deref().is_some_and(|a| a.ends_with('.'))
    }
}

/// An event's detail as the `detail` column holds it: a JSON object's text, `{}` for nothing.
fn audit_detail(detail: &serde_json::Value) -> String {
    match detail {
        serde_json::Value::Null => "{}".to_owned(),
        other => other.to_string(),
    }
}

/// The `counters` row holding [`Store::templates_revision`], in both backends.
const TEMPLATES_COUNTER: &str = "templates_revision";

/// Storage for incident documents, their index, the incident counter and API tokens.
///
/// Every method either completes or returns an error; no error is logged and dropped instead. A write
/// that returns `Ok` is durable (it survives a crash or power loss); a write whose caller stops waiting
/// may or may not have happened, which Automerge tolerates because applying a change twice is harmless.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Appends one incremental Automerge chunk (the bytes of `save_after`) to document `doc`, creating the
    /// document if it is unknown, and, in the same transaction, upserts its index row if `summary` is
    /// given. Returns the new chunk's id once the write is durable.
    ///
    /// A `summary` whose `id` is not `doc` is refused with [`StoreError::Conflict`] and nothing is written.
    async fn append(
        &self,
        doc: DocumentId,
        chunk: Vec<u8>,
        summary: Option<IncidentSummary>,
    ) -> Result<ChunkId, StoreError> {
        self.append_with(doc, chunk, summary, Vec::new()).await
    }

    /// [`Store::append`], queueing `deliveries` (webhook events the chunk's changes caused) in the same
    /// transaction: the events are durable exactly when their changes are (see [`outbox`]).
    async fn append_with(
        &self,
        doc: DocumentId,
        chunk: Vec<u8>,
        summary: Option<IncidentSummary>,
        deliveries: Vec<NewDelivery>,
    ) -> Result<ChunkId, StoreError>;

    /// Logs chat lines said in incidents' channels ([`chat_log`]), in one write; a line whose network id is
    /// already logged for its incident and channel is skipped. Returns how many were new.
    async fn append_chat(&self, lines: Vec<NewChatLine>) -> Result<usize, StoreError>;

    /// An incident's channel log, newest first: up to `limit` lines logged before line `before` (all when `None`).
    async fn chat_log(
        &self,
        doc: DocumentId,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ChatLine>, StoreError>;

    /// The line of `doc`'s log with the network id `line_id` in `channel`, if logged.
    async fn chat_line(
        &self,
        doc: DocumentId,
        network: Network,
        channel: &str,
        line_id: &str,
    ) -> Result<Option<ChatLine>, StoreError>;

    /// The open (not closed) incident bound to the channel `address` of `network` (IRC name, compared
    /// case-insensitively; Slack id), the newest if several.
    async fn incident_by_channel(
        &self,
        network: Network,
        address: &str,
    ) -> Result<Option<IncidentSummary>, StoreError>;

    /// The channels of `network` bound to open incidents, and to closed ones whose last posts (the closing) are
    /// still to be said there: each once, sorted by address.
    async fn bound_channels(&self, network: Network) -> Result<Vec<Channel>, StoreError>;

    /// Queues deliveries not caused by a change (a field gone stale). A delivery whose `(endpoint, event id)` is
    /// already queued adds nothing, so nodes may queue the same event concurrently.
    async fn enqueue(&self, deliveries: Vec<NewDelivery>) -> Result<(), StoreError>;

    /// Claims up to `limit` pending deliveries due at `now`, oldest first: counts the attempt and holds them until
    /// `lease_until` (when they become due again unless [`Store::finish_delivery`] says otherwise), so concurrent
    /// claimers, on this node or others, never get the same row.
    async fn claim_deliveries(
        &self,
        sink: Sink,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Records the outcome of an attempt on a claimed delivery.
    async fn finish_delivery(&self, id: i64, attempt: &Attempt) -> Result<(), StoreError>;

    /// The delivery log of one endpoint, newest first.
    async fn deliveries(
        &self,
        endpoint: &str,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;

    /// One incident's deliveries of one sink, oldest first, with their payloads: the mail thread of an incident
    /// (which messages went, in which order, and how each fared).
    async fn deliveries_of(&self, doc: DocumentId, sink: Sink) -> Result<Vec<Carried>, StoreError>;

    /// Returns all of the document's chunks in append order, or `None` if the document is unknown.
    async fn load(&self, doc: DocumentId) -> Result<Option<Stored>, StoreError> {
        self.load_after(doc, ChunkId(i64::MIN)).await
    }

    /// Returns the document's chunks with ids above `after` in append order (`upto` their last id), or `None`
    /// if there are none: how a node catches up with appends made by other nodes since it last read. The run
    /// has no gaps, as for [`Store::load`]; after a compaction it may start with the snapshot, which holds
    /// changes the reader already has, and that is harmless.
    async fn load_after(
        &self,
        doc: DocumentId,
        after: ChunkId,
    ) -> Result<Option<Stored>, StoreError>;

    /// Notices of chunks appended by other server nodes sharing this store, for the nodes that hold the
    /// document live; `None` for a store only one node uses (the embedded one). A notice may be lost (a
    /// listener that reconnected sends [`ChunkNotice::Resync`] instead), so readers catch up with
    /// [`Store::load_after`] from what they have seen rather than trusting notices to be complete.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<ChunkNotice>> {
        None
    }

    /// Atomically replaces the document's chunks with id ≤ `upto` by `snapshot`, keeping the chunks that
    /// were appended after `upto`. The snapshot must contain every change of the chunks it replaces,
    /// typically because it was saved from a document loaded from a [`Stored`] whose `upto` this is.
    ///
    /// Only what the snapshot covers is deleted, so compactions racing on several nodes never lose a
    /// change: one that comes after a compaction of a later `upto` finds nothing to replace and does
    /// nothing.
    async fn compact(
        &self,
        doc: DocumentId,
        snapshot: Vec<u8>,
        upto: ChunkId,
    ) -> Result<(), StoreError>;

    /// Deletes the document's chunks and index row; returns whether anything existed.
    ///
    /// A later [`Store::append`] to the same id creates the document anew, so callers stop serving it
    /// first.
    async fn delete(&self, doc: DocumentId) -> Result<bool, StoreError>;

    /// Returns the index row of one incident, `None` if it has none.
    async fn summary(&self, doc: DocumentId) -> Result<Option<IncidentSummary>, StoreError>;

    /// Lists index rows matching `filter`, newest `created_at` first.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<IncidentSummary>, StoreError>;

    /// Returns the next incident number (1, 2, 3…): durable across restarts and never handed out twice,
    /// even to concurrent callers on several nodes. A number whose incident is never created is skipped.
    async fn next_incident_number(&self) -> Result<i64, StoreError>;

    /// Records a new token under `name` with `hash` (computed by the caller, hex); fails with
    /// [`StoreError::Conflict`] if an unrevoked token already has this name or a token has this hash.
    async fn create_token(&self, name: &str, scope: Scope, hash: &str) -> Result<(), StoreError>;

    /// Looks a token up by its hash, revoked ones included (with `revoked_at` set) so the caller can
    /// tell "revoked" from "unknown".
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// Lists every token, revoked ones included, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Revokes the unrevoked token called `name`; returns whether there was one.
    async fn revoke_token(&self, name: &str) -> Result<bool, StoreError>;

    /// Counts the unrevoked tokens, so the server can tell a fresh installation that needs a first
    /// admin token.
    async fn token_count(&self) -> Result<u64, StoreError>;

    /// Records a `/sync` ticket: `hash` (of the ticket, hex) stands for the token whose hash is `token_hash`
    /// until `expires_at`, unless that token already has `limit` unexpired, unused tickets (then nothing is
    /// written and the answer is `false`; nodes racing may pass the limit by the number of racers). Tickets that
    /// expired by `now` are deleted in the same write, so the table holds only the tickets of the last few
    /// seconds. Stored rather than kept in one node's memory so that any node sharing the store accepts a ticket
    /// another node issued (behind a load balancer without sticky sessions).
    async fn create_ticket(
        &self,
        hash: &str,
        token_hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        limit: usize,
    ) -> Result<bool, StoreError>;

    /// Takes the ticket with `hash`: deletes it and returns its token's hash if it had not expired at `now`,
    /// `None` if it is unknown, already taken or expired. Each ticket is returned once, to one caller, even
    /// when callers on several nodes race for it.
    async fn take_ticket(
        &self,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError>;

    /// Stores a new single sign-on session under `hash` (of its secret, hex). Sessions whose absolute expiry
    /// passed by `session.created_at` are deleted in the same write, so the table holds live sessions and the
    /// ended ones that have not yet reached their expiry.
    async fn create_session(&self, hash: &str, session: &SessionRecord) -> Result<(), StoreError>;

    /// The session whose secret has this hash, ended or not; the caller judges expiry.
    async fn session_by_hash(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// Records that session `id` was used at `at` (never moving `last_used_at` back).
    async fn touch_session(&self, id: &str, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Every stored session, oldest first.
    async fn list_sessions(&self) -> Result<Vec<SessionRecord>, StoreError>;

    /// Ends session `id` now; returns whether it was live (known and not already ended).
    async fn revoke_session(&self, id: &str) -> Result<bool, StoreError>;

    /// Records a sign-in in progress: `hash` (of its OAuth `state`, hex) stands for `data` (the nonce, the PKCE
    /// verifier and where to go after) until `expires_at`. Sign-ins that expired by `now` are deleted in the same
    /// write. In the store rather than one node's memory, so the provider may send the browser back to any node.
    async fn create_login(
        &self,
        hash: &str,
        data: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Takes the sign-in with `hash`: deletes it and returns its data if it had not expired at `now`; `None` if
    /// unknown, taken or expired. Each is returned once, to one caller, so a replayed `state` finds nothing.
    async fn take_login(
        &self,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError>;

    /// Stores `source` as the template `id` (replacing an earlier upload of that id), recorded as `by`'s, and
    /// moves [`Store::templates_revision`] on, in one durable write. The caller has checked that it parses.
    async fn put_template(&self, id: &str, source: &str, by: &str) -> Result<(), StoreError>;

    /// Deletes the stored template `id`, moving the revision on; returns whether there was one.
    async fn delete_template(&self, id: &str) -> Result<bool, StoreError>;

    /// Every stored template, by id.
    async fn templates(&self) -> Result<Vec<StoredTemplate>, StoreError>;

    /// A number that changes whenever a stored template is put or deleted (0 before the first): what every node
    /// polls, one cheap read, to learn that another node changed the templates.
    async fn templates_revision(&self) -> Result<i64, StoreError>;

    /// Appends `event` to the audit log, durably, stamped with the store's clock.
    async fn record_audit(&self, event: &AuditEvent<'_>) -> Result<(), StoreError>;

    /// The audit log's entries that `filter` selects, the newest first.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;

    /// Takes the lease `name` for `holder` until `now + ttl` if it is free, expired or already `holder`'s (a
    /// renewal), and returns its epoch (fencing token): the same while `holder` keeps renewing it in time, greater
    /// whenever it was taken after expiring. `None` when another holder has it. Atomic across nodes: of callers
    /// racing for a free lease exactly one gets it (`store/lease.rs`). Used so that one node of a cluster holds
    /// each chat bot's connection.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError>;

    /// Gives the lease `name` up if `holder` has it (nothing otherwise), so another node takes it at once rather
    /// than after it expires: on a graceful shutdown.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Stores a new replay (`store/replays.rs`); a second one for the same drill is a [`StoreError::Conflict`].
    async fn create_replay(&self, replay: &ReplayRecord) -> Result<(), StoreError>;

    /// The replay of drill `drill`, if it is one.
    async fn replay(&self, drill: DocumentId) -> Result<Option<ReplayRecord>, StoreError>;

    /// Every running replay, for the scheduler.
    async fn running_replays(&self) -> Result<Vec<ReplayRecord>, StoreError>;

    /// Writes `replay`'s state, clock and next step if its row is still at `replay.version` (moving the version on),
    /// and says whether it was: of two updates made from the same read, on any nodes, one wins.
    async fn update_replay(&self, replay: &ReplayRecord) -> Result<bool, StoreError>;

    /// Checks that the database is reachable and the write path is alive, for health checks.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Writes a consistent copy of every table, as of one moment, to the backup file `out` in the portable format of
    /// [`backup`], replacing `out` atomically. Writers carry on meanwhile: the copy reads one snapshot.
    async fn backup(&self, out: &std::path::Path) -> Result<(), StoreError>;

    /// Fills the store with the backup file `from`, all of it or nothing. A store holding any row is refused with
    /// [`StoreError::Conflict`] unless `replace`, which empties it in the same transaction: restoring over data
    /// would mix two histories. Meant for a store no server is using.
    async fn restore(&self, from: &std::path::Path, replace: bool) -> Result<(), StoreError>;

    /// Stops accepting operations, finishes the writes already queued and releases the database, for a
    /// graceful shutdown. Afterwards every operation fails with [`StoreError::Unavailable`]; closing
    /// twice is harmless.
    async fn close(&self) -> Result<(), StoreError>;
}

/// Refuses a summary that names another document than the one appended to, as [`Store::append`]
/// requires of every backend before it writes anything.
fn refuse_foreign_summary(
    doc: DocumentId,
    summary: Option<&IncidentSummary>,
) -> Result<(), StoreError> {
    match summary {
        Some(summary) if summary.id != doc => Err(StoreError::Conflict(format!(
            "the summary is for incident {:?}, not {:?}",
            summary.id.to_string(),
            doc.to_string()
        ))),
        _ => Ok(()),
    }
}

/// Backend-independent tests: every backend runs every case through [`conformance_suite!`].
#[cfg(test)]
pub(crate) mod conformance {
    use std::collections::BTreeSet;

    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ROOT, ReadDoc};
    use chrono::{DateTime, Duration, TimeZone, Utc};
    use futures_util::future::join_all;

    pub(crate) use super::chat_log::cases::chat_log_pages_and_dedupes;
    pub(crate) use super::lease::cases::{
        leases_fence_their_holders, racing_holders_get_one_lease,
    };
    pub(crate) use super::outbox::cases::{
        outbox_claims_by_sink, outbox_claims_retries_and_logs,
        outbox_coalesces_unattempted_deliveries, outbox_lists_an_incidents_deliveries_by_sink,
    };
    pub(crate) use super::replays::cases::replays_update_at_their_version;
    use incident_doc::schema::Status;
    use sha2::{Digest, Sha256};

    use super::{
        AuditFilter, ChunkId, IncidentSummary, ListFilter, SessionRecord, Store, StoreError, Stored,
    };
    use crate::auth::Scope;
    use wire::DocumentId;

    /// Generates one `#[tokio::test]` per conformance case. `$open` is a function returning a fresh,
    /// empty store and a guard (such as a temporary directory) that must outlive it.
    macro_rules! conformance_suite {
        ($open:path) => {
            $crate::store::conformance::conformance_suite!(
                @cases $open;
                automerge_chunks_round_trip,
                unknown_document_is_none,
                compaction_keeps_later_chunks,
                load_after_catches_up,
                stale_compaction_loses_nothing,
                racing_compactions_lose_nothing,
                concurrent_appends_are_all_kept,
                incident_numbers_are_unique,
                tokens_lifecycle,
                sync_tickets_are_single_use_and_expire,
                sessions_lifecycle,
                logins_are_single_use_and_expire,
                list_filters_and_orders,
                restricted_incidents_are_listed_to_members_only,
                summary_is_upserted_with_append,
                mismatched_summary_writes_nothing,
                failing_item_does_not_fail_its_batch,
                delete_removes_chunks_and_index,
                closed_store_is_unavailable,
                templates_are_stored_replaced_and_deleted,
                audit_log_appends_and_filters,
                outbox_claims_retries_and_logs,
                outbox_coalesces_unattempted_deliveries,
                outbox_claims_by_sink,
                outbox_lists_an_incidents_deliveries_by_sink,
                leases_fence_their_holders,
                racing_holders_get_one_lease,
                chat_log_pages_and_dedupes,
                replays_update_at_their_version,
            );
        };
        (@cases $open:path; $($case:ident),* $(,)?) => {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (store, _guard) = $open();
                    $crate::store::conformance::$case(&store).await;
                    $crate::store::Store::close(&store).await.expect("the store closes");
                }
            )*
        };
    }
    pub(crate) use conformance_suite;

    /// Concatenates stored chunks and loads them the way a server node does.
    fn rebuild(stored: &Stored) -> AutoCommit {
        AutoCommit::load(&stored.chunks.concat())
            .expect("stored chunks load as an Automerge document")
    }

    /// Reads a string field of the document root.
    fn text(doc: &AutoCommit, key: &str) -> Option<String> {
        doc.get(ROOT, key)
            .expect("reading the document root")
            .and_then(|(value, _)| value.as_str().map(str::to_owned))
    }

    /// Sets a root field and returns the incremental chunk holding just that change.
    fn change(doc: &mut AutoCommit, key: &str, value: &str) -> Vec<u8> {
        doc.put(ROOT, key, value).expect("setting a root field");
        doc.save_incremental()
    }

    /// A point in time with microsecond precision, `minutes` after a fixed origin.
    fn at(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 14, 9, 0, 0)
            .single()
            .expect("a valid date")
            + Duration::minutes(minutes)
    }

    /// The id of the document the cases call `name`, the same for the same name, so that they read as before.
    pub(crate) fn doc_id(name: &str) -> DocumentId {
        let digest = Sha256::digest(name.as_bytes());
        let mut bytes = [0; 16];
        bytes.copy_from_slice(&digest[..16]);
        DocumentId::from_bytes(bytes)
    }

    /// An index row for the incident `name`, for other modules' cases.
    pub(crate) fn summary_of(name: &str, status: Status, created_minutes: i64) -> IncidentSummary {
        summary(name, status, created_minutes)
    }

    fn summary(name: &str, status: Status, created_minutes: i64) -> IncidentSummary {
        IncidentSummary {
            id: doc_id(name),
            title: format!("Incident {name}"),
            template: "outage".to_owned(),
            status: Some(status),
            severity: None,
            commander: Some(format!("commander of {name}")),
            number: None,
            created_at: at(created_minutes),
            updated_at: at(created_minutes),
            restricted: false,
            members: Vec::new(),
            channel: None,
        }
    }

    async fn must_load(store: &dyn Store, doc: DocumentId) -> Stored {
        store
            .load(doc)
            .await
            .expect("load succeeds")
            .expect("the document exists")
    }

    pub(crate) async fn automerge_chunks_round_trip(store: &dyn Store) {
        let mut doc = AutoCommit::new();
        let first = change(&mut doc, "title", "Checkout is down");
        let second = change(&mut doc, "status", "investigating");
        doc.put(ROOT, "severity", "sev1").expect("setting severity");
        doc.put(ROOT, "status", "mitigated")
            .expect("setting status");
        let third = doc.save_incremental();

        let a = store
            .append(doc_id("doc-a"), first.clone(), None)
            .await
            .expect("append");
        let b = store
            .append(doc_id("doc-a"), second.clone(), None)
            .await
            .expect("append");
        let c = store
            .append(doc_id("doc-a"), third.clone(), None)
            .await
            .expect("append");
        assert!(a < b && b < c, "chunk ids grow: {a:?} {b:?} {c:?}");

        let stored = must_load(store, doc_id("doc-a")).await;
        assert_eq!(stored.chunks, vec![first, second, third]);
        assert_eq!(stored.upto, c);
        let loaded = rebuild(&stored);
        assert_eq!(text(&loaded, "title").as_deref(), Some("Checkout is down"));
        assert_eq!(text(&loaded, "status").as_deref(), Some("mitigated"));
        assert_eq!(text(&loaded, "severity").as_deref(), Some("sev1"));
        assert_eq!(loaded.clone().get_heads(), doc.get_heads());

        // A full save is a valid chunk too, and another document's chunks stay apart.
        let mut other = AutoCommit::new();
        other.put(ROOT, "title", "Other").expect("setting a title");
        store
            .append(doc_id("doc-b"), other.save(), None)
            .await
            .expect("append");
        assert_eq!(must_load(store, doc_id("doc-a")).await, stored);
        assert_eq!(
            text(&rebuild(&must_load(store, doc_id("doc-b")).await), "title").as_deref(),
            Some("Other")
        );
    }

    pub(crate) async fn unknown_document_is_none(store: &dyn Store) {
        assert_eq!(store.load(doc_id("missing")).await, Ok(None));
        assert_eq!(store.summary(doc_id("missing")).await, Ok(None));
        assert_eq!(store.delete(doc_id("missing")).await, Ok(false));
        assert_eq!(store.list(&ListFilter::default()).await, Ok(vec![]));
        // Compacting an unknown document does not invent it.
        store
            .compact(doc_id("missing"), vec![1, 2, 3], ChunkId(i64::MAX))
            .await
            .expect("compact");
        assert_eq!(store.load(doc_id("missing")).await, Ok(None));
        store.ping().await.expect("ping");
    }

    pub(crate) async fn compaction_keeps_later_chunks(store: &dyn Store) {
        let mut doc = AutoCommit::new();
        for (key, value) in [("title", "DNS"), ("status", "open"), ("severity", "sev2")] {
            store
                .append(doc_id("d"), change(&mut doc, key, value), None)
                .await
                .expect("append");
        }
        let seen = must_load(store, doc_id("d")).await;
        let snapshot = rebuild(&seen).save();

        // Written by another node after the load above: the compaction must keep it.
        let late = change(&mut doc, "status", "resolved");
        let late_id = store
            .append(doc_id("d"), late.clone(), None)
            .await
            .expect("append");

        store
            .compact(doc_id("d"), snapshot.clone(), seen.upto)
            .await
            .expect("compact");
        let after = must_load(store, doc_id("d")).await;
        assert_eq!(after.chunks, vec![snapshot, late]);
        assert_eq!(after.upto, late_id);
        let loaded = rebuild(&after);
        assert_eq!(text(&loaded, "title").as_deref(), Some("DNS"));
        assert_eq!(text(&loaded, "severity").as_deref(), Some("sev2"));
        assert_eq!(text(&loaded, "status").as_deref(), Some("resolved"));

        // Appending after a compaction still works and keeps the order.
        let more = change(&mut doc, "title", "DNS resolution failing");
        store
            .append(doc_id("d"), more.clone(), None)
            .await
            .expect("append");
        let again = must_load(store, doc_id("d")).await;
        assert_eq!(again.chunks.last(), Some(&more));
        assert_eq!(
            text(&rebuild(&again), "title").as_deref(),
            Some("DNS resolution failing")
        );
    }

    pub(crate) async fn load_after_catches_up(store: &dyn Store) {
        let mut doc = AutoCommit::new();
        let mut ids = Vec::new();
        let mut chunks = Vec::new();
        for (key, value) in [("title", "DNS"), ("status", "open"), ("severity", "sev2")] {
            let chunk = change(&mut doc, key, value);
            ids.push(
                store
                    .append(doc_id("d"), chunk.clone(), None)
                    .await
                    .expect("append"),
            );
            chunks.push(chunk);
        }
        // Another document's appends never show up in this one's catch-up.
        store
            .append(doc_id("other"), vec![7], None)
            .await
            .expect("append");
        let after_first = store
            .load_after(doc_id("d"), ids[0])
            .await
            .expect("load_after");
        assert_eq!(
            after_first,
            Some(Stored {
                chunks: chunks[1..].to_vec(),
                upto: ids[2],
            })
        );
        assert_eq!(store.load_after(doc_id("d"), ids[2]).await, Ok(None));
        assert_eq!(
            store.load_after(doc_id("missing"), ChunkId(0)).await,
            Ok(None)
        );

        // After a compaction the catch-up starts with the snapshot, which covers what was asked for.
        let snapshot = rebuild(&must_load(store, doc_id("d")).await).save();
        store
            .compact(doc_id("d"), snapshot.clone(), ids[1])
            .await
            .expect("compact");
        let caught_up = store
            .load_after(doc_id("d"), ids[0])
            .await
            .expect("load_after");
        let caught_up = caught_up.expect("chunks after the first");
        assert_eq!(caught_up.chunks.first(), Some(&snapshot));
        assert_eq!(caught_up.upto, ids[2]);
        assert_eq!(
            text(&rebuild(&caught_up), "severity").as_deref(),
            Some("sev2")
        );
    }

    /// Builds a document in three stages and returns the snapshots two nodes would compact with: node A
    /// loaded after the first stage, node B after the second, and a third stage arrives afterwards.
    async fn two_node_history(
        store: &dyn Store,
        id: DocumentId,
    ) -> ((Vec<u8>, ChunkId), (Vec<u8>, ChunkId)) {
        let mut doc = AutoCommit::new();
        store
            .append(id, change(&mut doc, "a", "1"), None)
            .await
            .expect("append");
        store
            .append(id, change(&mut doc, "b", "2"), None)
            .await
            .expect("append");
        let seen_a = must_load(store, id).await;
        store
            .append(id, change(&mut doc, "c", "3"), None)
            .await
            .expect("append");
        store
            .append(id, change(&mut doc, "d", "4"), None)
            .await
            .expect("append");
        let seen_b = must_load(store, id).await;
        store
            .append(id, change(&mut doc, "e", "5"), None)
            .await
            .expect("append");
        (
            (rebuild(&seen_a).save(), seen_a.upto),
            (rebuild(&seen_b).save(), seen_b.upto),
        )
    }

    fn assert_complete(stored: &Stored) {
        let loaded = rebuild(stored);
        for (key, value) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")] {
            assert_eq!(
                text(&loaded, key).as_deref(),
                Some(value),
                "change {key} survived"
            );
        }
    }

    pub(crate) async fn stale_compaction_loses_nothing(store: &dyn Store) {
        // B (the later load) compacts first; A's stale compaction then finds nothing to replace.
        let ((snap_a, upto_a), (snap_b, upto_b)) = two_node_history(store, doc_id("b-first")).await;
        store
            .compact(doc_id("b-first"), snap_b.clone(), upto_b)
            .await
            .expect("compact");
        store
            .compact(doc_id("b-first"), snap_a, upto_a)
            .await
            .expect("compact");
        let stored = must_load(store, doc_id("b-first")).await;
        assert_complete(&stored);
        assert_eq!(stored.chunks.len(), 2, "B's snapshot and the last change");
        assert_eq!(stored.chunks[0], snap_b);

        // A compacts first; B's compaction then replaces A's snapshot and the chunks it covers.
        let ((snap_a, upto_a), (snap_b, upto_b)) = two_node_history(store, doc_id("a-first")).await;
        store
            .compact(doc_id("a-first"), snap_a, upto_a)
            .await
            .expect("compact");
        assert_complete(&must_load(store, doc_id("a-first")).await);
        store
            .compact(doc_id("a-first"), snap_b.clone(), upto_b)
            .await
            .expect("compact");
        let stored = must_load(store, doc_id("a-first")).await;
        assert_complete(&stored);
        assert_eq!(stored.chunks.len(), 2, "B's snapshot and the last change");
        assert_eq!(stored.chunks[0], snap_b);
    }

    pub(crate) async fn racing_compactions_lose_nothing(store: &dyn Store) {
        for round in 0..5 {
            let id = doc_id(&format!("race-{round}"));
            let ((snap_a, upto_a), (snap_b, upto_b)) = two_node_history(store, id).await;
            let (a, b) = tokio::join!(
                store.compact(id, snap_a, upto_a),
                store.compact(id, snap_b, upto_b)
            );
            a.expect("compact");
            b.expect("compact");
            let stored = must_load(store, id).await;
            assert_complete(&stored);
            assert_eq!(
                stored.chunks.len(),
                2,
                "whatever the order, B's snapshot ends up covering A's"
            );
        }
    }

    pub(crate) async fn concurrent_appends_are_all_kept(store: &dyn Store) {
        const WRITERS: usize = 200;
        let mut base = AutoCommit::new();
        let base_chunk = change(&mut base, "title", "Many hands");
        store
            .append(doc_id("busy"), base_chunk.clone(), None)
            .await
            .expect("append");
        let heads = base.get_heads();
        // Each writer is a separate replica making one change on top of the base.
        let chunks: Vec<Vec<u8>> = (0..WRITERS)
            .map(|i| {
                let mut replica = base.fork();
                replica
                    .put(ROOT, format!("note-{i}"), format!("by writer {i}"))
                    .expect("setting a note");
                replica.save_after(&heads)
            })
            .collect();

        let results = join_all(
            chunks
                .iter()
                .map(|chunk| store.append(doc_id("busy"), chunk.clone(), None)),
        )
        .await;
        let ids: Vec<ChunkId> = results
            .into_iter()
            .map(|r| r.expect("every append succeeds"))
            .collect();
        let distinct: BTreeSet<ChunkId> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), WRITERS, "every append got its own id");

        let stored = must_load(store, doc_id("busy")).await;
        assert_eq!(stored.chunks.len(), WRITERS + 1);
        assert_eq!(stored.chunks[0], base_chunk);
        assert_eq!(Some(&stored.upto), distinct.last());
        // The load returns the chunks in id order: match each id to the bytes appended with it.
        let mut by_id: Vec<(ChunkId, &Vec<u8>)> = ids.iter().copied().zip(chunks.iter()).collect();
        by_id.sort();
        let expected: Vec<&Vec<u8>> = by_id.into_iter().map(|(_, chunk)| chunk).collect();
        let actual: Vec<&Vec<u8>> = stored.chunks[1..].iter().collect();
        assert_eq!(actual, expected);
        let loaded = rebuild(&stored);
        for i in 0..WRITERS {
            assert_eq!(
                text(&loaded, &format!("note-{i}")),
                Some(format!("by writer {i}"))
            );
        }
    }

    pub(crate) async fn incident_numbers_are_unique(store: &dyn Store) {
        let numbers: Vec<i64> = join_all((0..100).map(|_| store.next_incident_number()))
            .await
            .into_iter()
            .map(|n| n.expect("a number"))
            .collect();
        let distinct: BTreeSet<i64> = numbers.iter().copied().collect();
        assert_eq!(distinct, (1..=100).collect::<BTreeSet<i64>>());
        assert_eq!(store.next_incident_number().await, Ok(101));
    }

    pub(crate) async fn tokens_lifecycle(store: &dyn Store) {
        assert_eq!(store.token_count().await, Ok(0));
        assert_eq!(store.token_by_hash("00").await, Ok(None));
        let before = Utc::now() - Duration::seconds(5);

        store
            .create_token("ci", Scope::Write, "aa11")
            .await
            .expect("create");
        store
            .create_token("alice", Scope::Admin, "bb22")
            .await
            .expect("create");
        assert_eq!(store.token_count().await, Ok(2));

        let ci = store
            .token_by_hash("aa11")
            .await
            .expect("lookup")
            .expect("known hash");
        assert_eq!(
            (ci.name.as_str(), ci.scope, ci.revoked_at),
            ("ci", Scope::Write, None)
        );
        assert!(ci.created_at >= before && ci.created_at <= Utc::now() + Duration::seconds(5));

        // A second live token with the same name, or a reused hash, is a conflict and changes nothing.
        assert!(matches!(
            store.create_token("ci", Scope::Read, "cc33").await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.create_token("bob", Scope::Read, "aa11").await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.token_by_hash("cc33").await, Ok(None));
        assert_eq!(store.token_count().await, Ok(2));

        assert_eq!(store.revoke_token("ci").await, Ok(true));
        assert_eq!(store.revoke_token("ci").await, Ok(false));
        assert_eq!(store.revoke_token("nobody").await, Ok(false));
        assert_eq!(store.token_count().await, Ok(1));
        let revoked = store
            .token_by_hash("aa11")
            .await
            .expect("lookup")
            .expect("still known");
        let revoked_at = revoked.revoked_at.expect("revocation time is recorded");
        assert!(revoked_at >= revoked.created_at);

        // The name is free again once revoked; the old record stays for audits.
        store
            .create_token("ci", Scope::Read, "dd44")
            .await
            .expect("create after revoke");
        let tokens = store.list_tokens().await.expect("list");
        let names: Vec<(&str, Scope, bool)> = tokens
            .iter()
            .map(|t| (t.name.as_str(), t.scope, t.revoked_at.is_some()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("ci", Scope::Write, true),
                ("alice", Scope::Admin, false),
                ("ci", Scope::Read, false)
            ]
        );
        assert_eq!(store.token_count().await, Ok(2));
    }

    pub(crate) async fn sessions_lifecycle(store: &dyn Store) {
        let now = Utc::now();
        let session = |id: &str, name: &str, expires_at| SessionRecord {
            id: id.into(),
            name: name.into(),
            scope: Scope::Write,
            created_at: now,
            last_used_at: now,
            expires_at,
            created_from: Some("127.0.0.1".into()),
            revoked_at: None,
        };
        let alice = session("s1", "alice", now + Duration::hours(1));
        store.create_session("h1", &alice).await.expect("create");
        let stored = store.session_by_hash("h1").await.expect("read");
        assert_eq!(stored.as_ref().map(|s| s.name.as_str()), Some("alice"));
        assert_eq!(stored.map(|s| s.scope), Some(Scope::Write));
        assert_eq!(store.session_by_hash("unknown").await, Ok(None));
        // Touching moves the last use forward only.
        let later = now + Duration::minutes(5);
        store.touch_session("s1", later).await.expect("touch");
        store.touch_session("s1", now).await.expect("touch");
        let touched = store
            .session_by_hash("h1")
            .await
            .expect("read")
            .expect("there");
        assert_eq!(
            touched.last_used_at.timestamp_millis(),
            later.timestamp_millis()
        );
        // An expired session is purged by the next creation; an ended one is listed until its expiry.
        let old = session("s2", "bob", now - Duration::seconds(1));
        store.create_session("h2", &old).await.expect("create");
        store
            .create_session("h3", &session("s3", "carol", now + Duration::hours(1)))
            .await
            .expect("create");
        assert_eq!(store.session_by_hash("h2").await, Ok(None));
        assert_eq!(store.revoke_session("s3").await, Ok(true));
        assert_eq!(store.revoke_session("s3").await, Ok(false));
        assert_eq!(store.revoke_session("unknown").await, Ok(false));
        let listed: Vec<(String, bool)> = store
            .list_sessions()
            .await
            .expect("list")
            .into_iter()
            .map(|s| (s.id, s.revoked_at.is_some()))
            .collect();
        assert_eq!(listed, vec![("s1".into(), false), ("s3".into(), true)]);
        // Two sessions cannot share a secret.
        assert!(matches!(
            store
                .create_session("h1", &session("s4", "dave", now + Duration::hours(1)))
                .await,
            Err(StoreError::Conflict(_))
        ));
    }

    pub(crate) async fn logins_are_single_use_and_expire(store: &dyn Store) {
        let now = Utc::now();
        let later = now + Duration::minutes(10);
        store
            .create_login("l1", "{\"a\":1}", now, later)
            .await
            .expect("create");
        assert_eq!(
            store.take_login("l1", now).await,
            Ok(Some("{\"a\":1}".into()))
        );
        assert_eq!(store.take_login("l1", now).await, Ok(None));
        store
            .create_login("l2", "x", now, later)
            .await
            .expect("create");
        assert_eq!(store.take_login("l2", later).await, Ok(None));
        assert_eq!(store.take_login("l2", now).await, Ok(None));
        store
            .create_login("l3", "y", now, later)
            .await
            .expect("create");
        let takes = join_all((0..10).map(|_| store.take_login("l3", now))).await;
        let winners = takes
            .into_iter()
            .map(|taken| taken.expect("take"))
            .filter(Option::is_some)
            .count();
        assert_eq!(winners, 1);
    }

    pub(crate) async fn sync_tickets_are_single_use_and_expire(store: &dyn Store) {
        let now = Utc::now();
        let later = now + Duration::seconds(30);
        assert_eq!(
            store.create_ticket("t1", "aa11", now, later, 8).await,
            Ok(true)
        );
        assert_eq!(store.take_ticket("t1", now).await, Ok(Some("aa11".into())));
        // Taken once: gone, whoever asks next.
        assert_eq!(store.take_ticket("t1", now).await, Ok(None));
        assert_eq!(store.take_ticket("unknown", now).await, Ok(None));

        // Past its expiry a ticket is refused, and taking it still spends it.
        assert_eq!(
            store.create_ticket("t2", "aa11", now, later, 8).await,
            Ok(true)
        );
        assert_eq!(store.take_ticket("t2", later).await, Ok(None));
        assert_eq!(store.take_ticket("t2", now).await, Ok(None));

        // Creating a ticket purges the expired ones: t3 is gone even for a caller whose clock says it is early.
        let soon = now + Duration::seconds(1);
        assert_eq!(
            store.create_ticket("t3", "bb22", now, soon, 8).await,
            Ok(true)
        );
        let after = now + Duration::seconds(2);
        assert_eq!(
            store.create_ticket("t4", "bb22", after, later, 8).await,
            Ok(true)
        );
        assert_eq!(store.take_ticket("t3", now).await, Ok(None));
        assert_eq!(store.take_ticket("t4", now).await, Ok(Some("bb22".into())));

        // Many callers racing for one ticket: exactly one gets it.
        assert_eq!(
            store.create_ticket("t5", "cc33", now, later, 8).await,
            Ok(true)
        );
        let takes = join_all((0..20).map(|_| store.take_ticket("t5", now))).await;
        let winners = takes
            .into_iter()
            .map(|taken| taken.expect("take"))
            .filter(Option::is_some)
            .count();
        assert_eq!(winners, 1);

        // At most `limit` unused tickets per token: one more is refused and stored nothing; taking one frees a
        // place; other tokens are counted apart.
        for n in 0..3 {
            let hash = format!("d{n}");
            assert_eq!(
                store.create_ticket(&hash, "dd44", now, later, 3).await,
                Ok(true)
            );
        }
        assert_eq!(
            store.create_ticket("d3", "dd44", now, later, 3).await,
            Ok(false)
        );
        assert_eq!(store.take_ticket("d3", now).await, Ok(None));
        assert_eq!(
            store.create_ticket("e0", "ee55", now, later, 3).await,
            Ok(true)
        );
        assert_eq!(store.take_ticket("d0", now).await, Ok(Some("dd44".into())));
        assert_eq!(
            store.create_ticket("d3", "dd44", now, later, 3).await,
            Ok(true)
        );
    }

    pub(crate) async fn list_filters_and_orders(store: &dyn Store) {
        for (id, status, minutes) in [
            ("old", Status::Resolved, 0),
            ("mid", Status::Active, 10),
            ("new", Status::Active, 20),
        ] {
            let mut row = summary(id, status, minutes);
            row.severity = (id != "new").then(|| "SEV1".to_owned());
            store
                .append(doc_id(id), vec![1], Some(row))
                .await
                .expect("append");
        }
        // A document without a summary is not listed.
        store
            .append(doc_id("unindexed"), vec![9], None)
            .await
            .expect("append");

        let ids = |list: Vec<IncidentSummary>| list.into_iter().map(|s| s.id).collect::<Vec<_>>();
        let all = store.list(&ListFilter::default()).await.expect("list");
        assert_eq!(all[2].status, Some(Status::Resolved));
        assert_eq!(all[2].severity.as_deref(), Some("SEV1"));
        let [new, mid, old] = ["new", "mid", "old"].map(doc_id);
        assert_eq!(ids(all), [new, mid, old]);
        let open = ListFilter {
            status: Some(Status::Active),
            ..ListFilter::default()
        };
        assert_eq!(ids(store.list(&open).await.expect("list")), [new, mid]);
        let newest = ListFilter {
            limit: Some(2),
            ..ListFilter::default()
        };
        assert_eq!(ids(store.list(&newest).await.expect("list")), [new, mid]);
        let one_open = ListFilter {
            status: Some(Status::Active),
            limit: Some(1),
            ..ListFilter::default()
        };
        assert_eq!(ids(store.list(&one_open).await.expect("list")), [new]);
        let open_sev1 = ListFilter {
            status: Some(Status::Active),
            severity: Some("SEV1".into()),
            ..ListFilter::default()
        };
        assert_eq!(ids(store.list(&open_sev1).await.expect("list")), [mid]);
        let none = ListFilter {
            status: Some(Status::Declared),
            ..ListFilter::default()
        };
        assert_eq!(store.list(&none).await, Ok(vec![]));
        let zero = ListFilter {
            limit: Some(0),
            ..ListFilter::default()
        };
        assert_eq!(store.list(&zero).await, Ok(vec![]));
    }

    pub(crate) async fn restricted_incidents_are_listed_to_members_only(store: &dyn Store) {
        let mut secret = summary("secret", Status::Active, 0);
        secret.restricted = true;
        secret.members = vec!["alice".into(), "bob \"b\"".into()];
        store
            .append(doc_id("secret"), vec![1], Some(secret.clone()))
            .await
            .expect("append");
        store
            .append(
                doc_id("open"),
                vec![1],
                Some(summary("open", Status::Active, 1)),
            )
            .await
            .expect("append");
        assert_eq!(store.summary(doc_id("secret")).await, Ok(Some(secret)));
        let seen_by = |viewer: &str| ListFilter {
            viewer: Some(viewer.into()),
            ..ListFilter::default()
        };
        let ids = |list: Vec<IncidentSummary>| list.into_iter().map(|s| s.id).collect::<Vec<_>>();
        let [secret, open] = ["secret", "open"].map(doc_id);
        for member in ["alice", "bob \"b\""] {
            let list = store.list(&seen_by(member)).await.expect("list");
            assert_eq!(ids(list), [open, secret], "{member}");
        }
        for outsider in ["carol", "ali", "", "%"] {
            let list = store.list(&seen_by(outsider)).await.expect("list");
            assert_eq!(ids(list), [open], "{outsider:?}");
        }
        let all = store.list(&ListFilter::default()).await.expect("list");
        assert_eq!(ids(all), [open, secret]);
    }

    pub(crate) async fn summary_is_upserted_with_append(store: &dyn Store) {
        let mut first = summary("inc", Status::Active, 5);
        first.number = Some(7);
        store
            .append(doc_id("inc"), vec![1], Some(first.clone()))
            .await
            .expect("append");
        assert_eq!(store.summary(doc_id("inc")).await, Ok(Some(first.clone())));

        // No summary: the index row is left alone.
        store
            .append(doc_id("inc"), vec![2], None)
            .await
            .expect("append");
        assert_eq!(store.summary(doc_id("inc")).await, Ok(Some(first.clone())));

        // Timestamps keep microseconds and drop nanoseconds, the same in every backend.
        let mut second = first.clone();
        second.status = Some(Status::Resolved);
        second.severity = Some("sev3".into());
        second.updated_at = at(30) + Duration::nanoseconds(123_456_789);
        store
            .append(doc_id("inc"), vec![3], Some(second.clone()))
            .await
            .expect("append");
        let stored = store
            .summary(doc_id("inc"))
            .await
            .expect("summary")
            .expect("indexed");
        second.updated_at = at(30) + Duration::microseconds(123_456);
        assert_eq!(stored, second);
        assert_eq!(store.list(&ListFilter::default()).await, Ok(vec![second]));
    }

    pub(crate) async fn mismatched_summary_writes_nothing(store: &dyn Store) {
        let result = store
            .append(
                doc_id("real"),
                vec![1],
                Some(summary("other", Status::Active, 0)),
            )
            .await;
        assert!(
            matches!(result, Err(StoreError::Conflict(_))),
            "got {result:?}"
        );
        assert_eq!(store.load(doc_id("real")).await, Ok(None));
        assert_eq!(store.summary(doc_id("other")).await, Ok(None));
    }

    pub(crate) async fn failing_item_does_not_fail_its_batch(store: &dyn Store) {
        store
            .create_token("taken", Scope::Read, "ee55")
            .await
            .expect("create");
        // Issued together so that a batching backend commits them in one transaction.
        let appends = join_all((0..20u8).map(|i| store.append(doc_id("mixed"), vec![i], None)));
        let conflict = store.create_token("taken", Scope::Admin, "ff66");
        let fresh = store.create_token("fresh", Scope::Admin, "0077");
        let (appends, conflict, fresh) = tokio::join!(appends, conflict, fresh);
        assert!(
            matches!(conflict, Err(StoreError::Conflict(_))),
            "got {conflict:?}"
        );
        fresh.expect("an independent write in the same batch succeeds");
        for append in appends {
            append.expect("an independent append in the same batch succeeds");
        }
        assert_eq!(must_load(store, doc_id("mixed")).await.chunks.len(), 20);
        assert_eq!(store.token_by_hash("ff66").await, Ok(None));
        assert_eq!(store.token_count().await, Ok(2));
    }

    pub(crate) async fn delete_removes_chunks_and_index(store: &dyn Store) {
        store
            .append(
                doc_id("gone"),
                vec![1],
                Some(summary("gone", Status::Active, 0)),
            )
            .await
            .expect("append");
        store
            .append(doc_id("gone"), vec![2], None)
            .await
            .expect("append");
        store
            .append(
                doc_id("kept"),
                vec![3],
                Some(summary("kept", Status::Active, 1)),
            )
            .await
            .expect("append");
        assert_eq!(store.delete(doc_id("gone")).await, Ok(true));
        assert_eq!(store.delete(doc_id("gone")).await, Ok(false));
        assert_eq!(store.load(doc_id("gone")).await, Ok(None));
        assert_eq!(store.summary(doc_id("gone")).await, Ok(None));
        let listed = store.list(&ListFilter::default()).await.expect("list");
        assert_eq!(listed, vec![summary("kept", Status::Active, 1)]);
        assert_eq!(must_load(store, doc_id("kept")).await.chunks, vec![vec![3]]);
    }

    pub(crate) async fn templates_are_stored_replaced_and_deleted(store: &dyn Store) {
        assert_eq!(store.templates_revision().await.expect("revision"), 0);
        assert!(store.templates().await.expect("templates").is_empty());
        store
            .put_template("payments", "# Payments v1\n", "alice")
            .await
            .expect("put");
        let first = store.templates_revision().await.expect("revision");
        store
            .put_template("payments", "# Payments v2\n", "bob")
            .await
            .expect("replace");
        store
            .put_template("db", "# Database\n", "alice")
            .await
            .expect("put another");
        let second = store.templates_revision().await.expect("revision");
        assert_ne!(first, second, "every put moves the revision");
        let stored = store.templates().await.expect("templates");
        let ids: Vec<_> = stored.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["db", "payments"]);
        assert_eq!(stored[1].source, "# Payments v2\n");
        assert_eq!(stored[1].updated_by, "bob");
        assert!(store.delete_template("db").await.expect("delete"));
        assert!(!store.delete_template("db").await.expect("delete again"));
        assert_ne!(store.templates_revision().await.expect("revision"), second);
        assert_eq!(store.templates().await.expect("templates").len(), 1);
    }

    pub(crate) async fn audit_log_appends_and_filters(store: &dyn Store) {
        let all = AuditFilter {
            actor: None,
            action: None,
            target: None,
            since: None,
            until: None,
            before: None,
            limit: 100,
        };
        assert!(store.audit(&all).await.expect("empty log").is_empty());
        let start = Utc::now() - Duration::seconds(1);
        let events = [
            (
                "alice",
                "token.created",
                "ci",
                serde_json::json!({"scope": "write"}),
            ),
            ("alice", "session.created", "bob", serde_json::Value::Null),
            (
                "bob",
                "session.revoked",
                "bob",
                serde_json::json!({"by": "bob"}),
            ),
            ("alice", "sessionx.created", "x", serde_json::Value::Null),
        ];
        for (actor, action, target, detail) in events {
            let event = super::AuditEvent {
                actor,
                action,
                target,
                detail,
                from: Some("127.0.0.1:4000".into()),
            };
            store.record_audit(&event).await.expect("record");
        }
        let entries = store.audit(&all).await.expect("log");
        let actions: Vec<_> = entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "sessionx.created",
                "session.revoked",
                "session.created",
                "token.created"
            ],
            "newest first"
        );
        assert!(entries.windows(2).all(|w| w[0].id > w[1].id));
        assert_eq!(entries[3].detail, serde_json::json!({"scope": "write"}));
        assert_eq!(
            entries[2].detail,
            serde_json::json!({}),
            "no detail is an empty object"
        );
        assert_eq!(entries[3].from.as_deref(), Some("127.0.0.1:4000"));
        assert!(entries[3].at >= start && entries[3].at <= Utc::now());
        let only = |f: AuditFilter| async move {
            let got = store.audit(&f).await.expect("filtered");
            got.into_iter().map(|e| e.action).collect::<Vec<_>>()
        };
        let kind = AuditFilter {
            action: Some("session.".into()),
            ..all.clone()
        };
        assert_eq!(
            only(kind).await,
            ["session.revoked", "session.created"],
            "a kind is a prefix up to its dot"
        );
        let exact = AuditFilter {
            action: Some("session.created".into()),
            ..all.clone()
        };
        assert_eq!(only(exact).await, ["session.created"]);
        let actor = AuditFilter {
            actor: Some("bob".into()),
            ..all.clone()
        };
        assert_eq!(only(actor).await, ["session.revoked"]);
        let target = AuditFilter {
            target: Some("bob".into()),
            ..all.clone()
        };
        assert_eq!(only(target).await, ["session.revoked", "session.created"]);
        let page = AuditFilter {
            limit: 2,
            ..all.clone()
        };
        let first = store.audit(&page).await.expect("page");
        let next = AuditFilter {
            before: Some(first[1].id),
            ..page
        };
        assert_eq!(only(next).await, ["session.created", "token.created"]);
        let later = AuditFilter {
            since: Some(Utc::now() + Duration::seconds(60)),
            ..all.clone()
        };
        assert!(only(later).await.is_empty());
        let earlier = AuditFilter {
            until: Some(start),
            ..all
        };
        assert!(only(earlier).await.is_empty());
    }

    pub(crate) async fn closed_store_is_unavailable(store: &dyn Store) {
        store
            .append(doc_id("before"), vec![1], None)
            .await
            .expect("append");
        store.close().await.expect("close");
        store.close().await.expect("closing twice is harmless");
        assert!(matches!(
            store.append(doc_id("after"), vec![2], None).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.load(doc_id("before")).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.next_incident_number().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
    }
}
