//! [`SyncClient`]: a Rust automerge-repo peer over a real WebSocket.
//!
//! It speaks the wire protocol the stock JavaScript client speaks (a `join` with protocol version "1", then `request`
//! and `sync` messages carrying Automerge sync messages, one CBOR map per binary frame) through the one client-side
//! peer the browser client and the load generator speak through too ([`wire::peer::Peer`]: the handshake, the sync
//! state, what each frame means), and edits through the shared document model ([`incident_doc::Incident`]), so its
//! edits are exactly those of a browser. It holds one document; this file adds only the socket and the test knobs.
//!
//! Nothing runs in the background: the client reads the socket only inside its async methods, so a test decides
//! exactly when each side talks. Raw frame access ([`SyncClient::send_raw`], [`SyncClient::recv_raw`]) is there for
//! the malformed-input tests.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use automerge::sync::{self, MessageFlags, SyncDoc};
use automerge::{ChangeHash, ObjType, ROOT, ReadDoc};
use futures_util::{SinkExt, StreamExt};
use incident_doc::{Editor, Incident, Operation};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wire::peer::{Event, Peer};
use wire::{DocumentId, Message, PeerId};

use crate::DEADLINE;

/// The socket type.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where and as whom a client opens `/sync`: the URL (carrying `?ticket=…` for a ticket, as browsers open it) and
/// the token sent in the `Authorization` header (how other clients open it). See [`crate::TestServer::ws_url`] and
/// [`crate::TestServer::ticket_url`]; `tokio_tungstenite::connect_async` takes it as it is.
#[derive(Debug, Clone)]
pub struct SyncTarget {
    /// `ws://ADDR/sync`, with a query when the test wants one.
    pub url: String,
    /// The token for `Authorization: Bearer`, if any.
    pub bearer: Option<String>,
}

impl IntoClientRequest for &SyncTarget {
    fn into_client_request(self) -> Result<Request, WsError> {
        let mut request = self.url.as_str().into_client_request()?;
        if let Some(token) = &self.bearer {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| WsError::HttpFormat(e.into()))?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        Ok(request)
    }
}

impl IntoClientRequest for SyncTarget {
    fn into_client_request(self) -> Result<Request, WsError> {
        (&self).into_client_request()
    }
}

/// A peer of the server: one WebSocket, one peer id, at most one document.
pub struct SyncClient {
    /// The connection to `/sync`.
    socket: Socket,
    /// The protocol: our peer id (chosen at random, the `senderId` of every message), the server's once it
    /// answered `join`, and Automerge's record of what the server has, so each message carries only what it lacks.
    peer: Peer,
    /// The document this client syncs, once [`SyncClient::open`] was called.
    document_id: Option<DocumentId>,
    /// Our copy of the document: empty until the server sends it.
    incident: Incident,
    /// The name our edits are stamped with (the commit message and the field's *last updated by*).
    author: String,
    /// Our own changes that the server has not yet shown it holds (its advertised heads do not cover them).
    unacknowledged: Vec<ChangeHash>,
    /// Ephemeral payloads received for our document while syncing, oldest first (see
    /// [`SyncClient::take_ephemeral`]).
    ephemeral: Vec<Vec<u8>>,
    /// Whether the server's last sync message said it will not apply our changes (a read-scope token).
    server_read_only: bool,
    /// Send our changes even to a server that declared itself read-only toward us, as a hostile client would.
    ignore_read_only: bool,
}

impl SyncClient {
    /// Connects to `target` (see [`crate::TestServer::ws_url`]) and completes the handshake: `join`, then waits for
    /// the server's `peer`.
    pub async fn connect(target: &SyncTarget) -> anyhow::Result<SyncClient> {
        let mut client = SyncClient::connect_unjoined(target).await?;
        client.join().await?;
        Ok(client)
    }

    /// Opens the WebSocket without sending `join`, for tests of what the server does before the handshake.
    pub async fn connect_unjoined(target: &SyncTarget) -> anyhow::Result<SyncClient> {
        let (socket, _response) =
            tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(target))
                .await
                .context("connecting to /sync timed out")?
                .context("connecting to /sync")?;
        let peer_id = PeerId::from(format!("test-peer-{}", DocumentId::random()));
        Ok(SyncClient {
            socket,
            author: peer_id.to_string(),
            peer: Peer::new(peer_id),
            document_id: None,
            incident: Incident::empty(None),
            unacknowledged: Vec::new(),
            ephemeral: Vec::new(),
            server_read_only: false,
            ignore_read_only: false,
        })
    }

    /// Sends `join` (protocol version "1", an ephemeral peer without storage, as a browser tab) and waits for the
    /// server's `peer` answer; an `error` answer or a close is an `Err`.
    pub async fn join(&mut self) -> anyhow::Result<()> {
        let join = self.peer.join();
        self.send_frame(join).await?;
        // The first thing the server sends after a join is its answer.
        let Some(answer) = self.recv_message(DEADLINE).await? else {
            bail!("the server closed the connection during the handshake");
        };
        match self.peer.handle(answer).context("joining")? {
            Event::Joined => Ok(()),
            other => bail!("expected peer, got {other:?}"),
        }
    }

    /// Our peer id, as sent in every message.
    pub fn peer_id(&self) -> &PeerId {
        self.peer.me()
    }

    /// The server's peer id, once joined.
    pub fn server_id(&self) -> Option<&PeerId> {
        self.peer.server()
    }

    /// The document this client syncs, once opened.
    pub fn document_id(&self) -> Option<DocumentId> {
        self.document_id
    }

    /// Sets the name our edits are stamped with (a random peer id by default).
    pub fn set_author(&mut self, author: &str) {
        self.author = author.to_owned();
    }

    /// Asks the server for document `doc` (an id or an `automerge:` URL) with a `request` message and syncs until
    /// this client holds the server's whole copy. `doc-unavailable` (no such document, or not allowed), an `error`
    /// or a close are an `Err`.
    pub async fn open(&mut self, doc: &str) -> anyhow::Result<()> {
        let id = doc
            .parse::<DocumentId>()
            .or_else(|_| DocumentId::parse_url(doc))
            .with_context(|| format!("{doc:?} is not a document id"))?;
        anyhow::ensure!(
            self.document_id.is_none(),
            "this client already syncs a document; connect another client"
        );
        self.document_id = Some(id);
        // Our copy is empty, so the first message is a `request`.
        let first = self
            .peer
            .sync(id, self.incident.doc_mut())
            .context("join before opening a document")?;
        self.send_frame(first).await?;
        self.sync_until(SyncClient::holds_document, DEADLINE)
            .await
            .with_context(|| format!("opening document {id}"))
    }

    /// Whether this client holds a copy of the document at least as new as the server's last advertised heads.
    pub fn holds_document(&self) -> bool {
        let Some(theirs) = self.their_heads() else {
            return false;
        };
        !theirs.is_empty()
            && theirs
                .iter()
                .all(|h| self.incident.doc().get_change_by_hash(h).is_some())
    }

    /// Whether our copy holds every change up to `heads` (it may hold more): after
    /// `sync_until(|c| c.has_changes(&server_heads), …)` our copy includes everything the server had.
    pub fn has_changes(&self, heads: &[ChangeHash]) -> bool {
        heads
            .iter()
            .all(|h| self.incident.doc().get_change_by_hash(h).is_some())
    }

    /// The text of a text or markdown field in our copy (`""` when the field is absent or not text).
    pub fn text(&self, field: &str) -> String {
        let doc = self.incident.doc();
        match doc.get(ROOT, field) {
            Ok(Some((automerge::Value::Object(ObjType::Text), obj))) => {
                doc.text(&obj).unwrap_or_default()
            }
            _ => String::new(),
        }
    }

    /// Our copy of the document, for reads beyond [`SyncClient::text`] (the read model, say).
    pub fn incident(&self) -> &Incident {
        &self.incident
    }

    /// Our copy, mutable: for tests that take changes out of it to send in frames of their own making.
    pub fn incident_mut(&mut self) -> &mut Incident {
        &mut self.incident
    }

    /// Our copy's heads, sorted, so that two equal documents give equal vectors.
    pub fn heads(&mut self) -> Vec<ChangeHash> {
        let mut heads = self.incident.doc_mut().get_heads();
        heads.sort();
        heads
    }

    /// The heads the server advertised in its last sync message, sorted; `None` before the first one.
    pub fn server_heads(&self) -> Option<Vec<ChangeHash>> {
        self.their_heads().map(|heads| {
            let mut heads = heads.to_vec();
            heads.sort();
            heads
        })
    }

    /// The heads the server advertised for our document in its last sync message, as it sent them.
    fn their_heads(&self) -> Option<&[ChangeHash]> {
        self.peer.their_heads(self.document_id?)
    }

    /// Whether the server said it will not apply our changes (its sync messages carry the read-only flag).
    pub fn server_is_read_only(&self) -> bool {
        self.server_read_only
    }

    /// From now on, send our changes even though the server declared itself read-only toward us: what a hostile
    /// or buggy client would do, to check the server really ignores them.
    pub fn ignore_read_only(&mut self) {
        self.ignore_read_only = true;
    }

    /// Edits a text field through the document model (`Operation::SpliceText`, positions in code points), sends the
    /// change, and waits until the server acknowledges it: its advertised heads cover the change, which it only
    /// sends once the change is durable. Towards a read-only server it returns once the change is sent.
    pub async fn splice(
        &mut self,
        field: &str,
        pos: usize,
        delete: usize,
        insert: &str,
    ) -> anyhow::Result<()> {
        self.splice_local(field, pos, delete, insert)?;
        self.flush().await?;
        if self.server_read_only {
            return Ok(());
        }
        self.sync_until_acknowledged(DEADLINE).await
    }

    /// Edits a text field in our copy only, without talking to the server: for concurrent edits, made by several
    /// clients before any of them syncs.
    pub fn splice_local(
        &mut self,
        field: &str,
        pos: usize,
        delete: usize,
        insert: &str,
    ) -> anyhow::Result<()> {
        self.apply_local(Operation::SpliceText {
            field: field.to_owned(),
            item: None,
            pos,
            delete,
            insert: insert.to_owned(),
        })
    }

    /// Applies any typed operation to our copy only, as the browser client does before syncing.
    pub fn apply_local(&mut self, op: Operation) -> anyhow::Result<()> {
        anyhow::ensure!(self.holds_document(), "open the document before editing it");
        let editor = Editor::new(self.author.clone(), chrono::Utc::now());
        self.incident
            .apply(&op, &editor)
            .with_context(|| format!("applying {op:?} locally"))?;
        let heads = self.incident.doc_mut().get_heads();
        self.unacknowledged.extend(heads);
        Ok(())
    }

    /// The ephemeral payloads (presence, the server's refusals) received while syncing, oldest first; taking them
    /// empties the list.
    pub fn take_ephemeral(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.ephemeral)
    }

    /// Makes a raw Automerge change in our copy, bypassing the typed operations and their rules, as any
    /// automerge-repo client can: for tests of what the server does with changes it would never make itself.
    pub fn raw_change(
        &mut self,
        edit: impl FnOnce(&mut automerge::AutoCommit) -> Result<(), automerge::AutomergeError>,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(self.holds_document(), "open the document before editing it");
        let doc = self.incident.doc_mut();
        edit(doc).context("a raw change")?;
        doc.commit();
        let heads = doc.get_heads();
        self.unacknowledged.extend(heads);
        Ok(())
    }

    /// Whether the server's advertised heads cover every change we made (so it holds them durably).
    pub fn acknowledged(&self) -> bool {
        self.unacknowledged.is_empty()
    }

    /// Keeps syncing until the server acknowledges every change we made.
    pub async fn sync_until_acknowledged(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.sync_until(SyncClient::acknowledged, timeout)
            .await
            .context("waiting for the server to acknowledge our changes")
    }

    /// Keeps exchanging sync messages with the server (sending what it lacks, applying what it sends) until
    /// `pred` holds; an `error` or `doc-unavailable` from the server, a close, or the timeout are an `Err`.
    pub async fn sync_until(
        &mut self,
        pred: impl Fn(&SyncClient) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self) {
                return Ok(());
            }
            self.flush().await?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "sync condition not met within {timeout:?} (our heads {:?}, the server's {:?})",
                    self.incident.doc_mut().get_heads(),
                    self.their_heads()
                );
            }
            match self.recv_message(left).await {
                Ok(Some(message)) => self.handle(message)?,
                Ok(None) => bail!("the server closed the connection"),
                // A timeout here is reported with the heads above, on the next turn.
                Err(_) if Instant::now() >= deadline => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes sure the server has handled every frame sent before this call: asks for a document that does not
    /// exist and waits for its `doc-unavailable`, handling other messages meanwhile. The server reads a
    /// connection's frames in order and hands sync messages to the document in order, so after this returns, any
    /// HTTP read of the document sees what our earlier frames did to it (or that they did nothing).
    pub async fn round_trip(&mut self) -> anyhow::Result<()> {
        let probe = DocumentId::random();
        let mut empty = automerge::AutoCommit::new();
        let data = empty
            .sync()
            .generate_sync_message(&mut sync::State::new())
            .context("a fresh sync state always has a first message")?
            .encode();
        let request = self
            .peer
            .wrap(probe, data, true)
            .context("join before a round trip")?;
        self.send_frame(request).await?;
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.recv_message(remaining(deadline)?).await? {
                Some(Message::DocUnavailable { document_id, .. }) if document_id == probe => {
                    return Ok(());
                }
                Some(message) => self.handle(message)?,
                None => bail!("the server closed the connection"),
            }
        }
    }

    /// The encoded sync message that would bring the server up to date, if any (advancing our sync state as if it
    /// were sent): for tests that send it in a frame of their own making.
    pub fn next_sync_data(&mut self) -> Option<Vec<u8>> {
        let id = self.document_id?;
        if self.ignore_read_only {
            self.peer.state_mut(id).peer_read_only = false;
        }
        self.peer.sync_data(id, self.incident.doc_mut())
    }

    /// Automerge's sync state toward the server, for protocol tests that craft unusual but legal message sequences
    /// (clearing `in_flight` makes the next [`SyncClient::next_sync_data`] repeat our heads, as a client whose
    /// retry timer fires does). `None` before [`SyncClient::open`].
    pub fn sync_state_mut(&mut self) -> Option<&mut sync::State> {
        let id = self.document_id?;
        Some(self.peer.state_mut(id))
    }

    /// Sends every sync message the server needs now.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        let Some(id) = self.document_id else {
            return Ok(());
        };
        while let Some(data) = self.next_sync_data() {
            // Our first word about the document was `open`'s request, so this is always `sync`.
            let frame = self.peer.wrap(id, data, false).context("not joined")?;
            self.send_frame(frame).await?;
        }
        Ok(())
    }

    /// Applies one message from the server.
    fn handle(&mut self, message: Message) -> anyhow::Result<()> {
        match self.peer.handle(message)? {
            Event::Sync { document, message } if Some(document) == self.document_id => {
                self.server_read_only = message
                    .flags
                    .is_some_and(|f| f.contains(MessageFlags::READ_ONLY));
                self.peer
                    .apply(document, self.incident.doc_mut(), message)
                    .context("applying the server's sync message")?;
                self.update_acknowledged();
            }
            Event::Unavailable(document) if Some(document) == self.document_id => {
                bail!("the server answered doc-unavailable for {document}")
            }
            Event::Ephemeral { document, data, .. } if Some(document) == self.document_id => {
                self.ephemeral.push(data);
            }
            // Messages about other documents are not this client's business.
            _ => {}
        }
        Ok(())
    }

    /// Drops from the unacknowledged list every change that the server's advertised heads cover.
    fn update_acknowledged(&mut self) {
        let Some(theirs) = self.their_heads().map(<[ChangeHash]>::to_vec) else {
            return;
        };
        let doc = self.incident.doc_mut();
        if theirs.iter().any(|h| doc.get_change_by_hash(h).is_none()) {
            // The server has changes we lack; their ancestry is unknown until they arrive.
            return;
        }
        // Everything we hold that is not an ancestor of the server's heads.
        let beyond: Vec<ChangeHash> = doc
            .get_changes_meta(&theirs)
            .iter()
            .map(|c| c.hash)
            .collect();
        self.unacknowledged.retain(|h| beyond.contains(h));
    }

    /// Encodes and sends one protocol message.
    pub async fn send(&mut self, message: &Message) -> anyhow::Result<()> {
        self.send_frame(message.encode()).await
    }

    /// Sends one binary frame the peer made.
    async fn send_frame(&mut self, frame: Vec<u8>) -> anyhow::Result<()> {
        self.send_raw(WsMessage::Binary(frame.into())).await
    }

    /// Sends one WebSocket frame as it is: for frames the protocol forbids.
    pub async fn send_raw(&mut self, frame: WsMessage) -> anyhow::Result<()> {
        tokio::time::timeout(DEADLINE, self.socket.send(frame))
            .await
            .context("sending a frame timed out")?
            .context("sending a frame")
    }

    /// The next WebSocket frame (pings and pongs included), or `None` once the connection is closed or broken;
    /// `Err` if nothing arrives within `timeout`.
    pub async fn recv_raw(&mut self, timeout: Duration) -> anyhow::Result<Option<WsMessage>> {
        match tokio::time::timeout(timeout, self.socket.next()).await {
            Err(_) => bail!("no frame within {timeout:?}"),
            Ok(None) | Ok(Some(Err(_))) => Ok(None),
            Ok(Some(Ok(frame))) => Ok(Some(frame)),
        }
    }

    /// The next protocol message, skipping pings and pongs; `None` once the connection is closed (a close frame
    /// or the end of the stream); `Err` on a timeout or a frame that is not a valid message.
    pub async fn recv_message(&mut self, timeout: Duration) -> anyhow::Result<Option<Message>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_raw(left).await? {
                None | Some(WsMessage::Close(_)) => return Ok(None),
                Some(WsMessage::Binary(bytes)) => {
                    return wire::decode(&bytes)
                        .map(Some)
                        .context("the server sent a frame that does not decode");
                }
                Some(WsMessage::Text(text)) => bail!("the server sent a text frame: {text}"),
                Some(_) => continue,
            }
        }
    }

    /// Reads until the server sends an `error` message, then until it closes the connection; returns the error's
    /// text. Any other message before the error is skipped. `Err` if the connection closes without an error or
    /// stays open after it.
    pub async fn expect_error_then_close(&mut self) -> anyhow::Result<String> {
        let deadline = Instant::now() + DEADLINE;
        let text = loop {
            match self.recv_message(remaining(deadline)?).await? {
                Some(Message::Error { message }) => break message,
                Some(_) => continue,
                None => bail!("the server closed the connection without an error message"),
            }
        };
        loop {
            match self.recv_raw(remaining(deadline)?).await {
                Ok(None) | Ok(Some(WsMessage::Close(_))) => return Ok(text),
                Ok(Some(WsMessage::Binary(bytes))) => {
                    bail!(
                        "the server sent {:?} after its error {text:?}",
                        wire::decode(&bytes)
                    )
                }
                Ok(Some(_)) => continue,
                Err(_) => bail!("the server kept the connection open after its error {text:?}"),
            }
        }
    }

    /// Gives up the client for its socket, joined (and attached to the document, if one was opened): for tests
    /// that must write and read at once, as a flood does, with the socket split in two.
    pub fn into_socket(self) -> Socket {
        self.socket
    }

    /// Closes the connection politely (a close frame) and waits for the server's close.
    pub async fn close(mut self) -> anyhow::Result<()> {
        let _ = self.socket.close(None).await;
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.recv_raw(remaining(deadline)?).await? {
                None | Some(WsMessage::Close(_)) => return Ok(()),
                Some(_) => continue,
            }
        }
    }
}

/// The time left until `deadline`, or an `Err` once it has passed.
fn remaining(deadline: Instant) -> anyhow::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    anyhow::ensure!(!left.is_zero(), "timed out waiting for the server");
    Ok(left)
}
