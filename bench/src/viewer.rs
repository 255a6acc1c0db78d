//! A viewer: a lean automerge-repo peer that follows one document without holding a replica.
//!
//! A thousand full Automerge replicas applying every keystroke would cost the load generator many times the
//! server's CPU on the same two cores. A viewer instead decodes each change it receives (Automerge recomputes the
//! change's hash from its bytes), reads the send time the editor stamped into it, keeps its heads from the
//! changes' dependencies and a [`ChangeSet`] summary, and acknowledges with an honest sync message (its heads, a
//! `have` at those heads), which is all the server's sync state needs. Convergence is then "same heads and same
//! change set as the editors", which for content-addressed changes means the same document. A viewer made a
//! *witness* also keeps every chunk it received and loads them at the end, to check the text itself.

use std::sync::Arc;

use anyhow::{Context, bail};
use automerge::sync::{self, ChunkList, Have, MessageFlags, MessageVersion, SyncDoc};
use automerge::{AutoCommit, Automerge, Change, ChangeHash};
use incident_doc::Incident;
use tokio::sync::watch;
use wire::peer::Event;
use wire::{DocumentId, PeerId};

use crate::changes::{
    ChangeSet, ChunkKind, advance_heads, chunk_kind, is_bench_actor, split_chunks,
};
use crate::latency::Latencies;
use crate::link::{Endpoint, Link, Traffic};

/// What every viewer must end up holding: the editors' final heads and the changes they made during the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The document's final heads, sorted.
    pub heads: Vec<ChangeHash>,
    /// The changes made after the viewers joined.
    pub changes: ChangeSet,
}

/// One viewer.
pub struct Viewer {
    /// The connection.
    link: Link,
    /// The document followed.
    document: DocumentId,
    /// Our heads, from the changes received.
    heads: Vec<ChangeHash>,
    /// The changes received since [`Viewer::open`] returned.
    received: ChangeSet,
    /// Where arrival latencies go.
    latencies: Arc<Latencies>,
    /// A witness's chunks, in arrival order; `None` for ordinary viewers.
    kept: Option<Vec<Vec<u8>>>,
    /// Whether arrivals are timed: not while opening, when the document's history arrives.
    timing: bool,
}

impl Viewer {
    /// Connects as viewer `index`, asks for `document` (`request`, as a browser opening a link) and waits until it
    /// holds what the server holds. A `witness` keeps every chunk for [`Viewer::witness`].
    pub async fn open(
        endpoint: &Endpoint,
        index: u32,
        document: DocumentId,
        latencies: Arc<Latencies>,
        traffic: Arc<Traffic>,
        witness: bool,
    ) -> anyhow::Result<Viewer> {
        let me = PeerId::from(format!("bench-viewer-{index}-{}", DocumentId::random()));
        let mut link = Link::connect(endpoint, me, traffic).await?;
        // The opening message of an empty replica, exactly as a stock Automerge peer words it.
        let first = AutoCommit::new()
            .sync()
            .generate_sync_message(&mut sync::State::new())
            .context("a new sync state always has a first message")?;
        link.send_sync(document, first.encode(), true).await?;
        let mut viewer = Viewer {
            link,
            document,
            heads: Vec::new(),
            received: ChangeSet::default(),
            latencies,
            kept: witness.then(Vec::new),
            timing: false,
        };
        loop {
            let server_heads = viewer.receive().await?;
            if !viewer.heads.is_empty() && server_heads.as_deref() == Some(viewer.heads.as_slice())
            {
                break;
            }
        }
        viewer.received = ChangeSet::default();
        viewer.timing = true;
        Ok(viewer)
    }

    /// Follows the document until it holds what `expected` says once the editors are done (`None` until then).
    pub async fn follow(
        &mut self,
        mut expected: watch::Receiver<Option<Expected>>,
    ) -> anyhow::Result<()> {
        loop {
            if let Some(want) = expected.borrow().as_ref()
                && want.heads == self.heads
                && want.changes == self.received
            {
                return Ok(());
            }
            // Only the receiving is raced (it is cancel-safe); answering happens outside the select.
            tokio::select! {
                message = self.link.recv() => { self.handle(message?).await?; }
                changed = expected.changed() => changed.context("the run ended before the viewers converged")?,
            }
        }
    }

    /// Handles the next message; returns the heads the server announced in it, if it was a sync message.
    async fn receive(&mut self) -> anyhow::Result<Option<Vec<ChangeHash>>> {
        let message = self.link.recv().await?;
        self.handle(message).await
    }

    /// Handles one message; returns the heads the server announced in it, if it was a sync message.
    async fn handle(&mut self, event: Event) -> anyhow::Result<Option<Vec<ChangeHash>>> {
        match event {
            Event::Sync { document, message } if document == self.document => {
                self.apply(message).await.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Takes in one sync message: notes every change it carries, then acknowledges.
    async fn apply(&mut self, message: sync::Message) -> anyhow::Result<Vec<ChangeHash>> {
        if message.changes.is_empty() {
            return Ok(message.heads);
        }
        let (mut added, mut deps) = (Vec::new(), Vec::new());
        for chunk in message.changes.iter().flat_map(split_chunks) {
            if let Some(kept) = &mut self.kept {
                kept.push(chunk.to_vec());
            }
            match chunk_kind(chunk) {
                Some(ChunkKind::Change) => {
                    let change = Change::try_from(chunk).context("decoding a change")?;
                    self.note(&change, &mut added, &mut deps);
                }
                // A whole document: sent when we lack more than a third of it (early in a run, after a stall).
                // Its changes beyond our heads are what it brings.
                Some(ChunkKind::Document) => {
                    let doc = Automerge::load(chunk).context("loading a document chunk")?;
                    for change in doc.get_changes(&self.heads) {
                        self.note(&change, &mut added, &mut deps);
                    }
                }
                None => bail!("a sync message carried something that is not an Automerge chunk"),
            }
        }
        advance_heads(&mut self.heads, &added, &deps);
        // Acknowledge like a caught-up peer: our heads, and a `have` saying we hold everything up to them.
        let mut flags = MessageFlags::new();
        flags.set(MessageFlags::SUPPORTS_SYNC_RESET);
        let ack = sync::Message {
            heads: self.heads.clone(),
            need: Vec::new(),
            have: vec![Have {
                last_sync: self.heads.clone(),
                bloom: Default::default(),
            }],
            changes: ChunkList::empty(),
            flags: Some(flags),
            version: MessageVersion::V1,
        };
        self.link
            .send_sync(self.document, ack.encode(), false)
            .await?;
        Ok(message.heads)
    }

    /// Counts one received change and times it if a bench editor made it during the run.
    fn note(&mut self, change: &Change, added: &mut Vec<ChangeHash>, deps: &mut Vec<ChangeHash>) {
        let hash = change.hash();
        added.push(hash);
        deps.extend_from_slice(change.deps());
        self.received.add(&hash);
        if self.timing && is_bench_actor(change.actor_id()) {
            self.latencies.arrived(change.timestamp());
        }
    }

    /// A witness's replica, built from every chunk it received.
    pub fn witness(&self) -> anyhow::Result<Incident> {
        let kept = self
            .kept
            .as_ref()
            .context("only a witness keeps what it received")?;
        Incident::load(&kept.concat()).context("loading what the witness received")
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.link.close().await;
    }
}
