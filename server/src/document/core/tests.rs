//! The document actor's decisions, driven without sockets, storage or a runtime: commands go in, the clock is a
//! test's `Instant`, and the effects are read back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::ReadDoc;
use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use chrono::Utc;
use incident_doc::{Declaration, Editor, Incident, Operation, template};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wire::{DocumentId, Message, PeerId};

use super::{Context, Core, Effect, FLUSH_SPACING_PER_PEER, MAX_FLUSH_SPACING};
use crate::config::DocConfig;
use crate::document::{Command, DocError};
use crate::metrics::Metrics;
use crate::peer::{ConnId, PeerLink};
use crate::store::outbox::{NewDelivery, Sink};
use crate::store::{ChunkId, StoreError};
use crate::webhooks::Webhooks;

const IDLE: Duration = Duration::from_secs(60);

/// A core over a declared incident whose first chunk is stored, at the test's clock `now`.
struct Harness {
    core: Core,
    now: Instant,
    metrics: Arc<Metrics>,
    next_chunk: i64,
}

impl Harness {
    fn new(max_document_bytes: usize) -> Harness {
        let template = template::builtin().into_iter().next().expect("a template");
        let declaration = Declaration {
            name: "Checkout errors".into(),
            number: Some(1),
        };
        let incident =
            Incident::create(&template, &declaration, &editor("alice"), None).expect("declare");
        let metrics = Arc::new(Metrics::default());
        let now = Instant::now();
        let context = Context {
            config: DocConfig {
                idle_unload: IDLE,
                queue: 16,
                max_document_bytes,
                webhooks: Arc::new(Webhooks::default()),
                chat_posts: false,
            },
            metrics: metrics.clone(),
            server_id: PeerId::from("commandpost-test"),
            now,
        };
        let mut harness = Harness {
            core: Core::declared(DocumentId::random(), incident, context),
            now,
            metrics,
            next_chunk: 1,
        };
        harness.persist();
        harness.core.durable(now);
        harness.core.take_effects();
        harness
    }

    /// Appends what the core has not made durable, as storage would.
    fn persist(&mut self) -> bool {
        let Some(append) = self.core.append(Utc::now()) else {
            return false;
        };
        self.core.appended(append.written, ChunkId(self.next_chunk));
        self.next_chunk += 1;
        true
    }

    /// One whole batch, as the shell runs it when storage works.
    fn batch(&mut self, commands: Vec<Command>) -> Vec<Effect> {
        self.core.apply(commands, Utc::now());
        self.persist();
        self.core.durable(self.now);
        self.core.take_effects()
    }

    fn attach(&mut self, conn: u64, name: &str) -> ConnId {
        let conn = ConnId(conn);
        let (outbox, _) = mpsc::channel(1);
        let link = PeerLink {
            peer_id: PeerId::from(format!("client-{}", conn.0)),
            outbox,
            cancel: CancellationToken::new(),
            read_only: false,
            name: name.into(),
            admin: false,
            from: None,
        };
        self.batch(vec![Command::Attach { conn, link }]);
        conn
    }

    /// Moves the clock on and runs the fan-out if it is due.
    fn flush_after(&mut self, wait: Duration) -> Vec<Effect> {
        self.now += wait;
        if self
            .core
            .flush_due(self.now)
            .is_some_and(|at| at <= self.now)
        {
            self.core.flush(self.now);
        }
        self.core.take_effects()
    }

    /// A client replica of the stored document, as a browser that loaded it would hold.
    fn client(&mut self, name: &str) -> Client {
        let (tx, rx) = oneshot::channel();
        self.core.apply(vec![Command::Snapshot(tx)], Utc::now());
        self.core.durable(self.now);
        for effect in self.core.take_effects() {
            if let Effect::Snapshot(reply, snapshot) = effect {
                let _ = reply.send(snapshot);
            }
        }
        let snapshot = rx.blocking_recv().expect("a snapshot");
        let bytes = snapshot.into_incident().save();
        Client {
            incident: Incident::load(&bytes).expect("load"),
            state: sync::State::new(),
            name: name.into(),
        }
    }
}

fn editor(name: &str) -> Editor {
    Editor::new(name, Utc::now())
}

/// A peer's replica and its sync state with the server.
struct Client {
    incident: Incident,
    state: sync::State,
    name: String,
}

impl Client {
    fn add_entry(&mut self, text: &str) {
        let op = Operation::AddTimelineEntry {
            text: text.into(),
            at: None,
        };
        self.incident
            .apply_all(&[op], &editor(&self.name))
            .expect("a legal edit");
    }

    /// The client's next sync message as a command from `conn`, with the change bytes the connection counts.
    fn sync(&mut self, conn: ConnId) -> Option<Command> {
        let message = self
            .incident
            .doc_mut()
            .sync()
            .generate_sync_message(&mut self.state)?;
        let change_bytes = message.changes.iter().map(<[u8]>::len).sum();
        Some(Command::Sync {
            conn,
            data: message.encode(),
            change_bytes,
        })
    }

    /// Takes the server's sync frames for `conn`; returns how many there were.
    fn receive(&mut self, conn: ConnId, effects: &[Effect]) -> usize {
        let mut received = 0;
        for data in sync_frames(conn, effects) {
            let message = sync::Message::decode(&data).expect("a sync message");
            self.incident
                .doc_mut()
                .sync()
                .receive_sync_message(&mut self.state, message)
                .expect("the server's message applies");
            received += 1;
        }
        received
    }

    fn heads(&mut self) -> Vec<automerge::ChangeHash> {
        self.incident.doc_mut().get_heads()
    }
}

/// The payloads of the `sync` frames for `conn` among `effects`.
fn sync_frames(conn: ConnId, effects: &[Effect]) -> Vec<Vec<u8>> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Send(to, frame) if *to == conn => match wire::decode(frame) {
                Ok(Message::Sync { data, .. }) => Some(data),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn cut_off(conn: ConnId, effects: &[Effect]) -> bool {
    effects
        .iter()
        .any(|effect| matches!(effect, Effect::CutOff(to) if *to == conn))
}

/// Runs a client's conversation with the core until neither side has more to say.
fn converse(harness: &mut Harness, conn: ConnId, client: &mut Client) {
    for _ in 0..20 {
        let mut effects = match client.sync(conn) {
            Some(command) => harness.batch(vec![command]),
            None => Vec::new(),
        };
        effects.extend(harness.flush_after(MAX_FLUSH_SPACING));
        if client.receive(conn, &effects) == 0 && client.sync(conn).is_none() {
            return;
        }
    }
    panic!("the conversation did not settle");
}

/// Durable before visible: a peer's change is merged at once, but no peer hears of it (its writer included, for
/// whom the answer is the acknowledgement) until it was appended; then both do.
#[test]
fn changes_reach_peers_only_after_they_are_appended() {
    let mut harness = Harness::new(1 << 20);
    let (a, b) = (harness.attach(1, "alice"), harness.attach(2, "bob"));
    let (mut alice, mut bob) = (harness.client("alice"), harness.client("bob"));
    converse(&mut harness, a, &mut alice);
    converse(&mut harness, b, &mut bob);

    alice.add_entry("rolled back the release");
    let mut frames = Vec::new();
    // Until the change arrives whole, automerge may need a round trip.
    for _ in 0..5 {
        let Some(command) = alice.sync(a) else { break };
        harness.core.apply(vec![command], Utc::now());
        let before_append = harness.core.take_effects();
        assert!(
            sync_frames(a, &before_append).is_empty() && sync_frames(b, &before_append).is_empty()
        );
        let appended = harness.persist();
        let after_append = harness.core.take_effects();
        assert!(
            sync_frames(b, &after_append).is_empty(),
            "not before the batch is durable"
        );
        harness.core.durable(harness.now);
        frames.extend(harness.core.take_effects());
        frames.extend(harness.flush_after(MAX_FLUSH_SPACING));
        alice.receive(a, &frames);
        if appended {
            break;
        }
    }
    assert!(bob.receive(b, &frames) > 0, "bob hears once it is durable");
    converse(&mut harness, b, &mut bob);
    converse(&mut harness, a, &mut alice);
    assert_eq!(alice.heads(), bob.heads());
    let markdown = incident_doc::export::markdown(&bob.incident.view());
    assert!(markdown.contains("rolled back the release"));
}

/// An HTTP edit is answered only once durable; a failing store answers that the document is gone, and cuts
/// every peer off so nothing undurable is shown.
#[test]
fn http_edits_are_answered_once_durable_and_never_after_a_storage_failure() {
    let mut harness = Harness::new(1 << 20);
    let edit = |text: &str| {
        let (reply, rx) = oneshot::channel();
        let op = Operation::AddTimelineEntry {
            text: text.into(),
            at: None,
        };
        let command = Command::Apply {
            ops: vec![op],
            editor: editor("alice"),
            from: None,
            deliveries: Vec::new(),
            reply,
        };
        (command, rx)
    };
    let (command, _rx) = edit("first");
    harness.core.apply(vec![command], Utc::now());
    assert!(
        harness.core.take_effects().is_empty(),
        "no answer before the append"
    );
    assert!(harness.persist());
    harness.core.durable(harness.now);
    let answered = harness.core.take_effects();
    assert!(matches!(answered.as_slice(), [Effect::Answer(_, Ok(applied))] if applied.len() == 1));

    let peer = harness.attach(7, "bob");
    let (command, _rx) = edit("second");
    harness.core.apply(vec![command], Utc::now());
    harness
        .core
        .fail(&StoreError::Unavailable("disk full".into()));
    let failed = harness.core.take_effects();
    assert!(cut_off(peer, &failed));
    assert!(
        failed
            .iter()
            .any(|effect| matches!(effect, Effect::Answer(_, Err(DocError::Gone))))
    );
    assert!(
        !failed
            .iter()
            .any(|effect| matches!(effect, Effect::Answer(_, Ok(_))))
    );
}

/// Deliveries an HTTP edit carries (a status update's email) go with the chunk of its changes, and only if every
/// operation applied: a refused edit queues nothing.
#[test]
fn carried_deliveries_commit_with_their_edit_and_never_without_it() {
    let mut harness = Harness::new(1 << 20);
    let mail = |id: &str| NewDelivery {
        endpoint: "mail".into(),
        event_id: id.into(),
        kind: "update.mailed".into(),
        doc: DocumentId::random(),
        payload: "{}".into(),
        not_before: Utc::now(),
        coalesce: None,
        sink: Sink::Mail,
    };
    let apply = |ops: Vec<Operation>, id: &str| {
        let (reply, _) = oneshot::channel();
        Command::Apply {
            ops,
            editor: editor("alice"),
            from: None,
            deliveries: vec![mail(id)],
            reply,
        }
    };
    let refused = apply(
        vec![
            Operation::MarkUpdateSent {
                heads: Vec::new(),
                note: None,
            },
            Operation::SetChoice {
                field: "severity".into(),
                value: Some("SEV9".into()),
            },
        ],
        "refused",
    );
    let sent = apply(
        vec![Operation::MarkUpdateSent {
            heads: Vec::new(),
            note: None,
        }],
        "sent",
    );
    harness.core.apply(vec![refused, sent], Utc::now());
    let append = harness.core.append(Utc::now()).expect("a chunk to append");
    let queued: Vec<&str> = append
        .deliveries
        .iter()
        .map(|d| d.event_id.as_str())
        .collect();
    assert_eq!(queued, ["sent"]);
    assert_eq!(append.deliveries[0].sink, Sink::Mail);
    harness.core.appended(append.written, ChunkId(1_000));
    // Queued once: the next chunk carries nothing more.
    harness.batch(vec![apply(
        vec![Operation::AddTimelineEntry {
            text: "later".into(),
            at: None,
        }],
        "later",
    )]);
    assert!(harness.core.append(Utc::now()).is_none());
}

/// Fan-outs of changes are spaced by 50 µs per attached peer, at most 50 ms; a peer that only spoke is answered
/// at once.
#[test]
fn fan_outs_are_spaced_by_the_number_of_peers() {
    let mut harness = Harness::new(1 << 20);
    for conn in 0..3 {
        harness.attach(conn, "viewer");
    }
    harness.flush_after(Duration::from_secs(1));
    let change = |harness: &mut Harness| {
        let (reply, _) = oneshot::channel();
        let op = Operation::AddTimelineEntry {
            text: "paged the database team".into(),
            at: None,
        };
        harness.batch(vec![Command::Apply {
            ops: vec![op],
            editor: editor("alice"),
            from: None,
            deliveries: Vec::new(),
            reply,
        }]);
    };
    // The fan-out just now was the last one: the next waits for its spacing.
    let last = harness.now;
    change(&mut harness);
    assert_eq!(
        harness.core.flush_due(last),
        Some(last + 3 * FLUSH_SPACING_PER_PEER)
    );

    for conn in 3..1_100 {
        harness.attach(conn, "viewer");
    }
    harness.core.flush(last);
    change(&mut harness);
    assert_eq!(harness.core.flush_due(last), Some(last + MAX_FLUSH_SPACING));

    // Nothing changed: a peer that spoke hears at once.
    harness.core.flush(last);
    let mut viewer = harness.client("viewer");
    let command = viewer.sync(ConnId(0)).expect("a first message");
    harness.batch(vec![command]);
    let now = last + Duration::from_micros(1);
    assert_eq!(harness.core.flush_due(now), Some(now));
}

/// Within a batch, connections that only acknowledge come after those that change the document, each
/// connection's own messages keeping their order.
#[test]
fn acknowledgements_come_last_and_each_connection_keeps_its_order() {
    let sync = |conn: u64, change_bytes: usize, tag: u8| Command::Sync {
        conn: ConnId(conn),
        data: vec![tag],
        change_bytes,
    };
    let commands = vec![
        sync(1, 0, 1),
        sync(2, 0, 2),
        sync(3, 10, 3),
        sync(1, 0, 4),
        sync(3, 0, 5),
        Command::Detach { conn: ConnId(9) },
    ];
    let order: Vec<u8> = super::acknowledgements_last(commands)
        .map(|command| match command {
            Command::Sync { data, .. } => data[0],
            _ => 0,
        })
        .collect();
    assert_eq!(order, vec![3, 5, 0, 1, 2, 4]);
}

/// The size limit refuses a peer's changes before they are merged (a merged change cannot be taken out) and an
/// HTTP edit once the document is full; other peers carry on.
#[test]
fn the_size_limit_refuses_before_anything_is_merged() {
    let mut probe = Harness::new(usize::MAX);
    let stored = {
        let append = probe.core.compaction().0;
        append.len()
    };
    let mut harness = Harness::new(stored + 40);
    let (a, b) = (harness.attach(1, "alice"), harness.attach(2, "bob"));
    let mut alice = harness.client("alice");
    converse(&mut harness, a, &mut alice);
    let heads = harness.client("probe").heads();

    alice.add_entry(&"a long line of evidence ".repeat(20));
    let mut refused = Vec::new();
    while let Some(command) = alice.sync(a) {
        refused = harness.batch(vec![command]);
        if cut_off(a, &refused) {
            break;
        }
        refused.extend(harness.flush_after(MAX_FLUSH_SPACING));
        alice.receive(a, &refused);
    }
    assert!(cut_off(a, &refused), "the writer is cut off");
    assert!(!cut_off(b, &refused), "others carry on");
    assert_eq!(harness.client("probe").heads(), heads, "nothing was merged");
    assert_eq!(harness.metrics.rejected_documents.get(), 1);
}

/// A document unloads after a quiet spell only when no peer is attached.
#[test]
fn an_idle_document_unloads_only_without_peers() {
    let mut harness = Harness::new(1 << 20);
    assert_eq!(harness.core.idle_at(IDLE), Some(harness.now + IDLE));
    let conn = harness.attach(1, "alice");
    assert_eq!(harness.core.idle_at(IDLE), None);
    harness.now += Duration::from_secs(5);
    harness.batch(vec![Command::Detach { conn }]);
    assert_eq!(harness.core.idle_at(IDLE), Some(harness.now + IDLE));
}

/// A new document's first append is the whole document, loadable on its own; after it nothing is owed.
#[test]
fn a_declared_document_is_stored_whole_by_its_first_append() {
    let template = template::builtin().into_iter().next().expect("a template");
    let declaration = Declaration {
        name: "Disk full".into(),
        number: None,
    };
    let incident =
        Incident::create(&template, &declaration, &editor("carol"), None).expect("declare");
    let context = Context {
        config: DocConfig {
            idle_unload: IDLE,
            queue: 16,
            max_document_bytes: 1 << 20,
            webhooks: Arc::new(Webhooks::default()),
            chat_posts: false,
        },
        metrics: Arc::new(Metrics::default()),
        server_id: PeerId::from("commandpost-test"),
        now: Instant::now(),
    };
    let mut core = Core::declared(DocumentId::random(), incident, context);
    let append = core.append(Utc::now()).expect("the first chunk");
    let loaded = Incident::load(&append.chunk).expect("a whole document");
    assert!(loaded.view().headline.title.starts_with("Disk full"));
    core.appended(append.written, ChunkId(42));
    assert_eq!(core.seen(), ChunkId(42));
    assert!(core.append(Utc::now()).is_none());
}

/// A batch of edits is one append: every edit in it is answered after that one write, in order.
#[test]
fn a_batch_of_edits_is_one_append_answered_after_it() {
    let mut harness = Harness::new(1 << 20);
    let mut stored = harness.client("probe").incident;
    let mut replies = Vec::new();
    let commands = (0..5)
        .map(|n| {
            let (reply, rx) = oneshot::channel();
            replies.push(rx);
            let op = Operation::AddTimelineEntry {
                text: format!("step {n}"),
                at: None,
            };
            Command::Apply {
                ops: vec![op],
                editor: editor("alice"),
                from: None,
                deliveries: Vec::new(),
                reply,
            }
        })
        .collect();
    harness.core.apply(commands, Utc::now());
    assert!(harness.core.take_effects().is_empty());
    let append = harness.core.append(Utc::now()).expect("one chunk");
    stored
        .doc_mut()
        .load_incremental(&append.chunk)
        .expect("the chunk applies");
    let markdown = incident_doc::export::markdown(&stored.view());
    assert!((0..5).all(|n| markdown.contains(&format!("step {n}"))));
    harness.core.appended(append.written, ChunkId(2));
    assert!(
        harness.core.append(Utc::now()).is_none(),
        "nothing left to write"
    );
    harness.core.durable(harness.now);
    let answers = harness.core.take_effects();
    assert_eq!(answers.len(), 5);
    for (effect, mut rx) in answers.into_iter().zip(replies) {
        let Effect::Answer(reply, result) = effect else {
            panic!("only answers");
        };
        assert!(result.is_ok());
        let _ = reply.send(result);
        assert!(rx.try_recv().is_ok(), "answers keep the order of the edits");
    }
}

#[test]
fn restricting_cuts_off_the_peers_no_longer_allowed_and_audits_the_change() {
    let mut harness = Harness::new(1 << 20);
    let commander = harness.attach(1, "alice");
    let member = harness.attach(2, "bob");
    let outsider = harness.attach(3, "carol");
    let apply = |ops: Vec<Operation>| {
        let (reply, _) = oneshot::channel();
        Command::Apply {
            ops,
            editor: editor("alice"),
            from: Some("192.0.2.1:5000".into()),
            deliveries: Vec::new(),
            reply,
        }
    };
    let effects = harness.batch(vec![apply(vec![
        Operation::AddMember {
            person: "bob".into(),
        },
        Operation::SetRestricted { restricted: true },
    ])]);
    let cut: Vec<ConnId> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::CutOff(conn) => Some(*conn),
            _ => None,
        })
        .collect();
    assert_eq!(cut, [outsider]);
    let audited: Vec<(&str, String)> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Audit(change) => Some((change.action, change.detail.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(
        audited,
        [
            (
                "incident.restriction_changed",
                r#"{"restricted":true,"via":"http"}"#.to_owned()
            ),
            (
                "incident.member_added",
                r#"{"person":"bob","via":"http"}"#.to_owned()
            ),
        ]
    );
    assert_eq!(harness.metrics.access_disconnects.get(), 1);

    // Removing bob cuts him off too; the commander stays.
    let effects = harness.batch(vec![apply(vec![Operation::RemoveMember {
        person: "bob".into(),
    }])]);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::CutOff(c) if *c == member))
    );
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::CutOff(c) if *c == commander))
    );
    // A batch that changes nothing reads nothing and cuts nobody.
    assert!(
        !harness
            .batch(Vec::new())
            .iter()
            .any(|e| matches!(e, Effect::CutOff(_)))
    );
}

/// The index row and the published due times are kept across keystrokes that wrote only prose, and read again as
/// soon as one writes anything they show: a stale row would list the incident under an old title.
#[test]
fn the_index_row_and_due_times_follow_what_keystrokes_wrote() {
    let mut harness = Harness::new(usize::MAX);
    let conn = harness.attach(1, "bob");
    let mut client = harness.client("bob");
    converse(&mut harness, conn, &mut client);
    harness.core.due_times();
    // Returns the index row the keystroke's batch appends with, and whether the due times were read again.
    let mut keystroke = |client: &mut Client, write: &dyn Fn(&mut Incident)| {
        write(&mut client.incident);
        let command = client.sync(conn).expect("a change to send");
        harness.core.apply(vec![command], Utc::now());
        let append = harness.core.append(Utc::now()).expect("a change to append");
        let row = append.summary.clone();
        harness
            .core
            .appended(append.written, ChunkId(harness.next_chunk));
        harness.next_chunk += 1;
        harness.core.durable(harness.now);
        harness.core.take_effects();
        (row, harness.core.due_times().is_some())
    };
    // Prose without a stamp, as a bare automerge-repo app writes it.
    let raw_summary = |incident: &mut Incident| {
        let doc = incident.doc_mut();
        let summary = doc
            .get(automerge::ROOT, "summary")
            .expect("read")
            .expect("a summary")
            .1;
        doc.splice_text(&summary, 0, 0, "x").expect("splice");
    };
    // The first change under a new actor makes the server record whose it is: a change of its own, after which
    // everything is read again.
    let (_, due_read) = keystroke(&mut client, &raw_summary);
    assert!(due_read);
    let (row, due_read) = keystroke(&mut client, &raw_summary);
    let declared = row.title.clone();
    assert!(declared.starts_with("Checkout errors"), "{declared}");
    assert!(!due_read, "prose leaves the due times as they were");
    // The title is prose too, but the row shows it.
    let title = |incident: &mut Incident| {
        let op = Operation::SpliceText {
            field: incident_doc::schema::TITLE_KEY.into(),
            item: None,
            pos: 0,
            delete: 0,
            insert: "EU ".into(),
        };
        incident.apply(&op, &editor("bob")).expect("edit the title");
    };
    let (row, due_read) = keystroke(&mut client, &title);
    assert_eq!(row.title, format!("EU {declared}"));
    assert!(due_read, "a stamp moves the due times");
    let (row, due_read) = keystroke(&mut client, &raw_summary);
    assert_eq!(row.title, format!("EU {declared}"));
    assert!(!due_read);
}
