//! Yjs peers for Hocuspocus, through yrs: editors that hold a full replica and type, viewers that follow a
//! document lean, and the table of send times that times each keystroke at the viewers.
//!
//! The document mirrors the incident's editable text: the Y.Text roots `summary`, `detailedStatus` and
//! `commandPost`, and a Y.Array `timeline` of Y.Text entries (an entry is its text alone: Yjs has no change
//! metadata, and the Automerge entry's id, time and author are set once per entry, not per keystroke).
//!
//! A Yjs update carries no timestamp, so an editor records when it typed each keystroke under the id (client,
//! clock) of the character it inserted, in one [`Stamps`] table the whole process shares; a viewer looks up every
//! id that arrives. A viewer keeps no replica: it decodes each update (yrs [`Update::decode_v1`]), learns which
//! ids it brings and which it deletes, and keeps its state vector and deleted ids from them: all there is to
//! converge on. A witness viewer also applies every update to a full replica, to compare the text at the end.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::{Value as Json, json};
use tokio::sync::watch;
use yrs::sync::SyncMessage;
use yrs::updates::decoder::Decode;
use yrs::{
    Array, ArrayRef, ClientID, Doc, GetString, IdSet, OffsetKind, Options, Out, ReadTxn,
    StateVector, Text, TextPrelim, TextRef, Transact, Update, WriteTxn,
};

use crate::editor::{PLACES, PROSE, Place};
use crate::hocuspocus::{Event, YLink};
use crate::latency::{Clock, Latencies};
use crate::link::{Endpoint, Traffic};

/// How many characters a timeline editor types into one entry before it starts the next (as the Automerge editors).
const ENTRY_CHARS: usize = 60;

/// Keystrokes sent per update while building a history.
const HISTORY_CHUNK: usize = 1000;

/// The root holding the timeline's entries.
const TIMELINE: &str = "timeline";

/// When each keystroke was typed (the run's clock, µs), by the id of the character it inserted.
#[derive(Default)]
pub struct Stamps {
    /// (client, clock) → µs.
    sent: RwLock<HashMap<(u64, u32), i64>>,
}

impl Stamps {
    /// Notes that the character with id (`client`, `clock`) was typed at `micros`.
    fn typed(&self, client: u64, clock: u32, micros: i64) {
        if let Ok(mut sent) = self.sent.write() {
            sent.insert((client, clock), micros);
        }
    }

    /// When the character (`client`, `clock`) was typed, if it was a timed keystroke.
    fn sent(&self, client: u64, clock: u32) -> Option<i64> {
        self.sent.read().ok()?.get(&(client, clock)).copied()
    }

    /// How many timed keystrokes lie within `state` (that is, reached whoever holds it).
    pub fn within(&self, state: &StateVector) -> u64 {
        self.sent.read().map_or(0, |sent| {
            sent.keys()
                .filter(|(client, clock)| *clock < state.get(&ClientID::new(*client)))
                .count() as u64
        })
    }
}

/// What every viewer must end up holding once the editors are done: their state vector and the ids they deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The editors' state vector.
    pub state: StateVector,
    /// The ids deleted (empty in a war room, where editors only type).
    pub deleted: IdSet,
}

/// What a document reads as: every text, for comparing a witness with an editor.
pub fn view(doc: &Doc) -> Json {
    let txn = doc.transact();
    let mut out = serde_json::Map::new();
    for place in PLACES {
        if let Place::Field(name) = place {
            let text = txn.get_text(name).map(|t| t.get_string(&txn));
            out.insert(name.to_owned(), json!(text));
        }
    }
    let timeline: Vec<String> = txn
        .get_array(TIMELINE)
        .map(|array| {
            array
                .iter(&txn)
                .filter_map(|entry| match entry {
                    Out::YText(text) => Some(text.get_string(&txn)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    out.insert(TIMELINE.to_owned(), json!(timeline));
    Json::Object(out)
}

/// A full Yjs replica that types, as a browser tab with a `HocuspocusProvider` does.
pub struct YEditor {
    /// The connection.
    link: YLink,
    /// The replica.
    doc: Doc,
    /// Our client id, as a number.
    client: u64,
    /// Stamps keystrokes.
    clock: Clock,
    /// Where stamps go.
    stamps: Arc<Stamps>,
    /// The timeline entry being typed into, and how much was typed there.
    entry: Option<(TextRef, usize)>,
    /// Keystrokes typed and sent during the run (not the history).
    typed: u64,
}

impl YEditor {
    /// Connects as editor `index` and opens `document` until we hold what the server holds.
    pub async fn open(
        endpoint: &Endpoint,
        index: u32,
        document: &str,
        clock: Clock,
        stamps: Arc<Stamps>,
        traffic: Arc<Traffic>,
    ) -> anyhow::Result<YEditor> {
        // Distinct, stable client ids (below 2^32, as Yjs's own random ones are) make runs comparable.
        let client = 0x5EED_0000 + u64::from(index);
        // Offsets count UTF-16 code units, as Yjs's do (the editing trace's are characters, all ASCII).
        let doc = Doc::with_options(Options {
            client_id: ClientID::new(client),
            offset_kind: OffsetKind::Utf16,
            ..Options::default()
        });
        let state = doc.transact().state_vector();
        let link = YLink::open(endpoint, document, &state, traffic).await?;
        let mut editor = YEditor {
            link,
            doc,
            client,
            clock,
            stamps,
            entry: None,
            typed: 0,
        };
        loop {
            let event = editor.link.recv().await?;
            if editor.handle(event).await? {
                break;
            }
        }
        editor.settle().await?;
        Ok(editor)
    }

    /// Applies one message from the server, answering a SyncStep1 with what the server lacks; `true` for the
    /// SyncStep2 that completes opening.
    pub async fn handle(&mut self, event: Event) -> anyhow::Result<bool> {
        match event {
            Event::Sync(SyncMessage::SyncStep1(theirs)) => {
                let diff = self.doc.transact().encode_diff_v1(&theirs);
                self.link.send_sync(&SyncMessage::SyncStep2(diff)).await?;
                Ok(false)
            }
            Event::Sync(SyncMessage::SyncStep2(update)) => {
                self.apply(&update)?;
                Ok(true)
            }
            Event::Sync(SyncMessage::Update(update)) => {
                self.apply(&update)?;
                Ok(false)
            }
            Event::Authenticated | Event::SyncStatus(_) | Event::Other => Ok(false),
        }
    }

    /// Applies an update from the server (others' keystrokes, and our own echoed back).
    fn apply(&mut self, update: &[u8]) -> anyhow::Result<()> {
        let update = Update::decode_v1(update).context("decoding an update")?;
        self.doc
            .transact_mut()
            .apply_update(update)
            .context("applying an update")
    }

    /// The next message from the server, unapplied (cancel-safe; hand it to [`YEditor::handle`]).
    pub async fn next_message(&mut self) -> anyhow::Result<Event> {
        self.link.recv().await
    }

    /// Waits until the server has acknowledged everything we sent.
    pub async fn settle(&mut self) -> anyhow::Result<()> {
        while self.link.unacknowledged() > 0 {
            let event = self.link.recv().await?;
            self.handle(event).await?;
        }
        Ok(())
    }

    /// Types one character at `place` in one transaction and returns the update, stamping it when `timed`.
    fn type_local(&mut self, place: Place, character: char, timed: bool) -> Vec<u8> {
        let mut txn = self.doc.transact_mut();
        let mut buf = [0; 4];
        let character: &str = character.encode_utf8(&mut buf);
        match place {
            Place::Field(name) => {
                let text = txn.get_or_insert_text(name);
                text.push(&mut txn, character);
            }
            Place::Timeline => match &mut self.entry {
                Some((text, typed)) if *typed < ENTRY_CHARS => {
                    *typed += 1;
                    text.push(&mut txn, character);
                }
                _ => {
                    let timeline: ArrayRef = txn.get_or_insert_array(TIMELINE);
                    let text = timeline.push_back(&mut txn, TextPrelim::new(character));
                    self.entry = Some((text, 1));
                }
            },
        }
        if timed {
            // The character is the transaction's last id.
            let clock = txn.state_vector().get(&ClientID::new(self.client)) - 1;
            self.stamps.typed(self.client, clock, self.clock.micros());
            self.typed += 1;
        }
        txn.encode_update_v1()
    }

    /// Types one keystroke at `place` and sends it at once, as the provider sends each transaction's update.
    pub async fn type_key(&mut self, place: Place, character: char) -> anyhow::Result<()> {
        let update = self.type_local(place, character, true);
        self.link.send_sync(&SyncMessage::Update(update)).await
    }

    /// Applies one editing-trace patch (`delete` characters at `position`, then `insert`) to the Text `field` as
    /// one transaction, stamped as a keystroke when it inserts; sent later with [`YEditor::send_since`].
    pub fn splice(&mut self, field: &str, position: u32, delete: u32, insert: &str) {
        let mut txn = self.doc.transact_mut();
        let text = txn.get_or_insert_text(field);
        if delete > 0 {
            text.remove_range(&mut txn, position, delete);
        }
        if !insert.is_empty() {
            text.insert(&mut txn, position, insert);
            let clock = txn.state_vector().get(&ClientID::new(self.client)) - 1;
            self.stamps.typed(self.client, clock, self.clock.micros());
            self.typed += 1;
        }
    }

    /// Sends, as one update, everything typed since we held `state` (the new ids, and every deletion: yrs's diff
    /// carries the whole delete set), as a provider with `flushDelay` batches its transactions; returns our state.
    pub async fn send_since(&mut self, state: &StateVector) -> anyhow::Result<StateVector> {
        let (update, now) = {
            let txn = self.doc.transact();
            (txn.encode_diff_v1(state), txn.state_vector())
        };
        self.link.send_sync(&SyncMessage::Update(update)).await?;
        Ok(now)
    }

    /// Applies whatever the server has already sent, without waiting for more.
    pub async fn take_in_pending(&mut self) -> anyhow::Result<()> {
        while let Ok(event) = tokio::time::timeout(Duration::ZERO, self.link.recv()).await {
            self.handle(event?).await?;
        }
        Ok(())
    }

    /// The text of the Text `field`.
    pub fn text(&self, field: &str) -> String {
        let txn = self.doc.transact();
        txn.get_text(field)
            .map(|text| text.get_string(&txn))
            .unwrap_or_default()
    }

    /// What viewers must end up holding: our state vector and the ids deleted.
    pub fn expected(&self) -> Expected {
        let snapshot = self.doc.transact().snapshot();
        Expected {
            state: snapshot.state_map,
            deleted: snapshot.delete_set,
        }
    }

    /// Types `keystrokes` keystrokes of prose through the places, sent in updates of [`HISTORY_CHUNK`], each
    /// acknowledged before the next: a document that has been edited for a while, built quickly.
    pub async fn build_history(&mut self, keystrokes: usize) -> anyhow::Result<()> {
        let mut prose = PROSE.chars().cycle();
        let mut before = self.doc.transact().state_vector();
        for keystroke in 0..keystrokes {
            let place = PLACES[(keystroke / HISTORY_CHUNK) % PLACES.len()];
            self.type_local(place, prose.next().unwrap_or(' '), false);
            if (keystroke + 1) % HISTORY_CHUNK == 0 || keystroke + 1 == keystrokes {
                let update = self.doc.transact().encode_diff_v1(&before);
                before = self.doc.transact().state_vector();
                self.link.send_sync(&SyncMessage::Update(update)).await?;
                self.settle().await?;
            }
        }
        Ok(())
    }

    /// Keeps applying what the server sends until we hold at least `expected`.
    pub async fn converge(&mut self, expected: &StateVector) -> anyhow::Result<()> {
        loop {
            let ours = self.state();
            if expected
                .iter()
                .all(|(client, clock)| ours.get(client) >= *clock)
            {
                return Ok(());
            }
            let event = self.link.recv().await?;
            self.handle(event).await?;
        }
    }

    /// Our state vector.
    pub fn state(&self) -> StateVector {
        self.doc.transact().state_vector()
    }

    /// Keystrokes typed during the run.
    pub fn typed(&self) -> u64 {
        self.typed
    }

    /// The replica.
    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.link.close().await;
    }
}

/// A lean Yjs peer following a document: see the module's doc.
pub struct YViewer {
    /// The connection.
    link: YLink,
    /// The ids received, as a state vector.
    state: StateVector,
    /// The ids deleted by the updates received.
    deleted: IdSet,
    /// Where arrival latencies go.
    latencies: Arc<Latencies>,
    /// The editors' send times.
    stamps: Arc<Stamps>,
    /// A witness's replica; `None` for ordinary viewers.
    witness: Option<Doc>,
    /// Whether arrivals are timed: not while opening, when the document's history arrives.
    timing: bool,
}

impl YViewer {
    /// Connects, opens `document` and waits for the server's SyncStep2 (all it holds). A `witness` also keeps a
    /// full replica.
    pub async fn open(
        endpoint: &Endpoint,
        document: &str,
        latencies: Arc<Latencies>,
        stamps: Arc<Stamps>,
        traffic: Arc<Traffic>,
        witness: bool,
    ) -> anyhow::Result<YViewer> {
        let link = YLink::open(endpoint, document, &StateVector::default(), traffic).await?;
        let mut viewer = YViewer {
            link,
            state: StateVector::default(),
            deleted: IdSet::default(),
            latencies,
            stamps,
            witness: witness.then(Doc::new),
            timing: false,
        };
        while !viewer.receive().await? {}
        viewer.timing = true;
        Ok(viewer)
    }

    /// Handles the next message; `true` if it was a SyncStep2.
    async fn receive(&mut self) -> anyhow::Result<bool> {
        let event = self.link.recv().await?;
        self.handle(event).await
    }

    /// Handles one message; `true` if it was a SyncStep2.
    async fn handle(&mut self, event: Event) -> anyhow::Result<bool> {
        match event {
            // We never hold anything the server lacks: our answer is the empty update, as a provider's would be.
            Event::Sync(SyncMessage::SyncStep1(_)) => {
                let empty = Update::EMPTY_V1.to_vec();
                self.link.send_sync(&SyncMessage::SyncStep2(empty)).await?;
                Ok(false)
            }
            Event::Sync(SyncMessage::SyncStep2(update)) => {
                self.note(&update)?;
                Ok(true)
            }
            Event::Sync(SyncMessage::Update(update)) => {
                self.note(&update)?;
                Ok(false)
            }
            Event::Authenticated | Event::SyncStatus(_) | Event::Other => Ok(false),
        }
    }

    /// Takes in one update: advances our state vector over the ids it brings and times each new keystroke.
    fn note(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let update = Update::decode_v1(bytes).context("decoding an update")?;
        for (client, ranges) in update.insertions(true).iter() {
            for range in ranges.iter() {
                let held = self.state.get(client);
                ensure!(
                    range.start <= held,
                    "an update skipped ids of client {}: it starts at {}, we hold up to {held}",
                    client.get(),
                    range.start
                );
                if range.end <= held {
                    continue;
                }
                if self.timing {
                    for clock in held..range.end {
                        if let Some(sent) = self.stamps.sent(client.get(), clock) {
                            self.latencies.arrived(sent);
                        }
                    }
                }
                self.state.set_max(*client, range.end);
            }
        }
        self.deleted.merge_with(update.delete_set().clone());
        if let Some(doc) = &self.witness {
            doc.transact_mut()
                .apply_update(update)
                .context("the witness applying an update")?;
        }
        Ok(())
    }

    /// Follows the document until it holds what `expected` says once the editors are done.
    pub async fn follow(
        &mut self,
        mut expected: watch::Receiver<Option<Expected>>,
    ) -> anyhow::Result<()> {
        loop {
            if let Some(want) = expected.borrow().as_ref() {
                if want.state == self.state && want.deleted == self.deleted {
                    return Ok(());
                }
                if want
                    .state
                    .iter()
                    .any(|(client, clock)| self.state.get(client) > *clock)
                {
                    bail!("a viewer holds more than the editors");
                }
            }
            tokio::select! {
                event = self.link.recv() => { self.handle(event?).await?; }
                changed = expected.changed() => changed.context("the run ended before the viewers converged")?,
            }
        }
    }

    /// The witness's replica.
    pub fn witness(&self) -> Option<&Doc> {
        self.witness.as_ref()
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.link.close().await;
    }
}
