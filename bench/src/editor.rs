//! An editor: a full Automerge replica of the incident that types keystrokes (one change each, stamped with the
//! run's clock), sends them at once, and applies everyone else's edits as they come, as a browser tab does.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value};
use incident_doc::Incident;
use wire::peer::Event;
use wire::{DocumentId, PeerId};

use crate::changes::{ChangeSet, bench_actor};
use crate::latency::Clock;
use crate::link::{Endpoint, Link, Traffic};

/// How many characters a timeline editor types into one entry before it starts the next.
const ENTRY_CHARS: usize = 60;

/// Keystrokes sent per sync message while building a history.
const HISTORY_CHUNK: usize = 1000;

/// What editors type: incident-room prose, cycled through.
pub const PROSE: &str = "Checkout fails for EU customers after release 2026.11.24-3; rolling back, error rate \
                         falling, watching the payment provider's status page. ";

/// Where an editor types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// At the end of a Text field of the incident (`summary`, `detailedStatus`, …).
    Field(&'static str),
    /// Into timeline entries it appends, a new entry every [`ENTRY_CHARS`] keystrokes.
    Timeline,
}

/// The Text fields of the default template that editors share out, then the timeline.
pub const PLACES: [Place; 4] = [
    Place::Field("summary"),
    Place::Field("detailedStatus"),
    Place::Timeline,
    Place::Field("commandPost"),
];

/// One editor's connection and replica.
pub struct Editor {
    /// The connection.
    link: Link,
    /// The incident.
    document: DocumentId,
    /// The replica; its actor is a bench actor so viewers time our changes.
    incident: Incident,
    /// Stamps changes.
    clock: Clock,
    /// The name on timeline entries.
    name: String,
    /// The changes this editor made.
    made: ChangeSet,
    /// The Text being typed into (the current timeline entry's) and how much was typed there.
    entry: Option<(ObjId, usize)>,
}

impl Editor {
    /// Connects as editor `index` and syncs `document` until the server and we hold the same heads. With a
    /// `seed` (servers that create documents from their peers, such as automerge-repo's sync server), we bring
    /// the document ourselves: our first message is `sync`, carrying it. Without one, we `request` it.
    pub async fn open(
        endpoint: &Endpoint,
        index: u32,
        document: DocumentId,
        seed: Option<Incident>,
        clock: Clock,
        traffic: Arc<Traffic>,
    ) -> anyhow::Result<Editor> {
        let me = PeerId::from(format!("bench-editor-{index}-{}", DocumentId::random()));
        let link = Link::connect(endpoint, me, traffic).await?;
        let mut incident = seed.unwrap_or_else(|| Incident::empty(None));
        incident.doc_mut().set_actor(bench_actor(index));
        let mut editor = Editor {
            link,
            document,
            incident,
            clock,
            name: endpoint
                .author
                .clone()
                .unwrap_or_else(|| format!("editor-{index}")),
            made: ChangeSet::default(),
            entry: None,
        };
        // Our first message: `request` from an empty replica, `sync` carrying a seed (see `Peer::wrap`).
        editor.settle().await.context("opening the document")?;
        Ok(editor)
    }

    /// Exchanges messages until the server and we hold the same, non-empty heads.
    pub async fn settle(&mut self) -> anyhow::Result<()> {
        loop {
            self.flush().await?;
            if self.in_step() {
                return Ok(());
            }
            let message = self.link.recv().await?;
            self.handle(message).await?;
        }
    }

    /// Whether the server's last word on its heads equals ours (and we hold something).
    fn in_step(&mut self) -> bool {
        let ours = self.incident.doc_mut().get_heads();
        !ours.is_empty() && self.link.peer().their_heads(self.document) == Some(ours.as_slice())
    }

    /// Types one keystroke at our place: one change, stamped now, sent at once.
    pub async fn type_key(&mut self, place: Place, character: char) -> anyhow::Result<ChangeHash> {
        let hash = self.type_local(place, character)?;
        self.flush().await?;
        Ok(hash)
    }

    /// Types one keystroke at our place without sending it (to build a history to send in one go).
    pub fn type_local(&mut self, place: Place, character: char) -> anyhow::Result<ChangeHash> {
        let doc = self.incident.doc_mut();
        let text = match place {
            Place::Field(key) => match doc.get(ROOT, key)? {
                Some((Value::Object(ObjType::Text), text)) => text,
                _ => bail!("the incident has no Text field {key:?}"),
            },
            Place::Timeline => match &mut self.entry {
                Some((text, typed)) if *typed < ENTRY_CHARS => {
                    *typed += 1;
                    text.clone()
                }
                _ => {
                    let text = new_timeline_entry(doc, &self.name)?;
                    self.entry = Some((text.clone(), 1));
                    text
                }
            },
        };
        let end = doc.length(&text);
        doc.splice_text(&text, end, 0, &character.to_string())?;
        self.commit()
    }

    /// Types `keystrokes` keystrokes of prose through the incident's places, sending them in chunks of
    /// [`HISTORY_CHUNK`] and waiting for the server to take each chunk: an incident that has been edited for a
    /// while, built quickly.
    pub async fn build_history(&mut self, keystrokes: usize) -> anyhow::Result<()> {
        let mut prose = PROSE.chars().cycle();
        for keystroke in 0..keystrokes {
            let place = PLACES[(keystroke / HISTORY_CHUNK) % PLACES.len()];
            self.type_local(place, prose.next().unwrap_or(' '))?;
            if (keystroke + 1) % HISTORY_CHUNK == 0 || keystroke + 1 == keystrokes {
                self.settle().await?;
            }
        }
        // The history is the stage, not part of what a run measures.
        self.made = ChangeSet::default();
        Ok(())
    }

    /// Applies one editing-trace patch (`delete` characters at `position`, then `insert`) to `field` as one change.
    pub fn splice(
        &mut self,
        field: &str,
        position: usize,
        delete: isize,
        insert: &str,
    ) -> anyhow::Result<ChangeHash> {
        let doc = self.incident.doc_mut();
        let Some((Value::Object(ObjType::Text), text)) = doc.get(ROOT, field)? else {
            bail!("the incident has no Text field {field:?}");
        };
        doc.splice_text(&text, position, delete, insert)?;
        self.commit()
    }

    /// Commits the pending edit as one change stamped with the run's clock.
    fn commit(&mut self) -> anyhow::Result<ChangeHash> {
        let time = self.clock.micros();
        let hash = self
            .incident
            .doc_mut()
            .commit_with(CommitOptions::default().with_time(time))
            .context("an edit always makes a change")?;
        self.made.add(&hash);
        Ok(hash)
    }

    /// Sends the server whatever it lacks.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        self.link
            .flush(self.document, self.incident.doc_mut())
            .await
    }

    /// Waits for the next message from the server and applies it (other editors' keystrokes, acknowledgements).
    pub async fn receive(&mut self) -> anyhow::Result<()> {
        let message = self.link.recv().await?;
        self.handle(message).await
    }

    /// Applies whatever the server has already sent, without waiting for more: keeps the server's queue to us
    /// short while we type flat out.
    pub async fn take_in_pending(&mut self) -> anyhow::Result<()> {
        while let Ok(message) = tokio::time::timeout(Duration::ZERO, self.link.recv()).await {
            self.handle(message?).await?;
        }
        Ok(())
    }

    /// The next message from the server, unapplied. Cancel-safe, unlike [`Editor::receive`], so it can race a
    /// timer in `select!`; hand what it returns to [`Editor::handle`].
    pub async fn next_message(&mut self) -> anyhow::Result<Event> {
        self.link.recv().await
    }

    /// Applies one message from the server and answers it.
    pub async fn handle(&mut self, event: Event) -> anyhow::Result<()> {
        match event {
            Event::Sync { document, message } if document == self.document => {
                self.link
                    .peer_mut()
                    .apply(document, self.incident.doc_mut(), message)
                    .context("applying a sync message")?;
                self.flush().await
            }
            // Presence and heads gossip are none of the benchmark's business.
            _ => Ok(()),
        }
    }

    /// Keeps syncing until we hold at least `changes` bench editors' changes (see [`Editor::editors_changes`]) and
    /// the server's heads equal ours: with no edits still being made, that is convergence.
    pub async fn converge(&mut self, changes: usize, within: Duration) -> anyhow::Result<()> {
        let converged = tokio::time::timeout(within, async {
            loop {
                self.flush().await?;
                if self.in_step() && self.editors_changes() >= changes {
                    return anyhow::Ok(());
                }
                self.receive().await?;
            }
        })
        .await;
        match converged {
            Ok(result) => result,
            Err(_) => {
                let held = self.editors_changes();
                bail!(
                    "{} did not converge within {within:?}: it holds {held} of the editors' {changes} changes",
                    self.name
                )
            }
        }
    }

    /// How many of the changes our replica holds were made by bench editors. The server's own changes (reverts of
    /// edits its rules refuse, which come in any number under overload) are left out: once we hold every editor's
    /// change and the server's last word on its heads equals ours, we hold its reverts too, since it makes them
    /// while merging the edits they revert.
    pub fn editors_changes(&mut self) -> usize {
        self.incident
            .doc_mut()
            .get_changes_meta(&[])
            .iter()
            .filter(|change| crate::changes::is_bench_actor(&change.actor))
            .count()
    }

    /// The changes this editor made.
    pub fn made(&self) -> ChangeSet {
        self.made
    }

    /// Every change our replica holds beyond `heads`, whoever made it (other editors, or the server: a server may
    /// add changes of its own, such as reverting an edit its rules refuse).
    pub fn changes_since(&mut self, heads: &[ChangeHash]) -> ChangeSet {
        let mut changes = ChangeSet::default();
        for change in self.incident.doc_mut().get_changes_meta(heads) {
            changes.add(&change.hash);
        }
        changes
    }

    /// Our heads.
    pub fn heads(&mut self) -> Vec<ChangeHash> {
        self.incident.doc_mut().get_heads()
    }

    /// The text of a Text field.
    pub fn text(&self, field: &str) -> anyhow::Result<String> {
        field_text(&self.incident, field)
    }

    /// The replica, for comparing documents.
    pub fn incident(&self) -> &Incident {
        &self.incident
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.link.close().await;
    }
}

/// Appends a timeline entry `{id, at, author, text}` as the schema describes it; returns its Text.
fn new_timeline_entry(doc: &mut automerge::AutoCommit, author: &str) -> anyhow::Result<ObjId> {
    let Some((Value::Object(ObjType::List), timeline)) = doc.get(ROOT, "timeline")? else {
        bail!("the incident has no timeline list");
    };
    let at = chrono::Utc::now().timestamp_millis();
    let entry = doc.insert_object(&timeline, doc.length(&timeline), ObjType::Map)?;
    doc.put(&entry, "id", entry.to_string())?;
    doc.put(&entry, "at", ScalarValue::Timestamp(at))?;
    doc.put(&entry, "author", author)?;
    Ok(doc.put_object(&entry, "text", ObjType::Text)?)
}

/// The text of the Text field `field` of `incident`.
pub fn field_text(incident: &Incident, field: &str) -> anyhow::Result<String> {
    let doc = incident.doc();
    let Some((Value::Object(ObjType::Text), text)) = doc.get(ROOT, field)? else {
        bail!("the incident has no Text field {field:?}");
    };
    Ok(doc.text(&text)?)
}
