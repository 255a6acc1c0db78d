//! One `/sync` WebSocket connection: the automerge-repo handshake, then routing of each message to the actor of
//! the document it is about.
//!
//! A connection runs as two tasks: this reader, and a writer that drains a bounded outbox into the socket (and
//! pings). Document actors write into the outbox without waiting; a client that stops reading fills it and is cut
//! off, so it never stalls a document or the other peers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

use crate::auth::{Identity, Scope};
use crate::document::{Command, ConnId, DocHandle, PeerLink, Registry};
use crate::metrics::Metrics;
use crate::wire::{self, DocumentId, Message, PeerId, PeerMetadata};

/// Limits and timings of sync connections.
#[derive(Debug, Clone)]
pub struct SyncLimits {
    /// Largest frame accepted; larger ones get an `error` message and a close.
    pub max_frame_bytes: usize,
    /// Frames queued for one connection before it counts as not reading and is cut off.
    pub outbox_frames: usize,
    /// How often the server pings; the JavaScript server does so every 5 s, browsers answer automatically.
    pub ping_interval: Duration,
    /// A connection silent (no frame, no pong) for this long is closed.
    pub idle_timeout: Duration,
}

/// What a connection needs from the server.
#[derive(Clone)]
pub struct SyncContext {
    /// Finds document actors.
    pub registry: Registry,
    /// Counts connections and protocol errors.
    pub metrics: Arc<Metrics>,
    /// The server's peer id.
    pub server_id: PeerId,
    /// Limits and timings.
    pub limits: SyncLimits,
    /// Cancelled at server shutdown; every connection's own token is a child of it.
    pub shutdown: CancellationToken,
}

/// Why the reader stops.
enum Stop {
    /// The client left or the socket broke.
    Closed,
    /// The client broke the protocol: tell it why, then close.
    Protocol(String),
}

/// Serves one upgraded socket until it closes.
pub async fn serve(socket: WebSocket, identity: Identity, ctx: SyncContext) {
    let conn = ConnId::next();
    let span = info_span!("connection", conn = conn.0, token = %identity.name);
    async move {
        ctx.metrics.connections.inc();
        let (sink, stream) = socket.split();
        let (outbox, rx) = mpsc::channel(ctx.limits.outbox_frames);
        let cancel = ctx.shutdown.child_token();
        let writer = tokio::spawn(write(sink, rx, cancel.clone(), ctx.limits.ping_interval));
        let mut reader = Reader {
            conn,
            identity,
            ctx: ctx.clone(),
            outbox,
            cancel: cancel.clone(),
            peer: None,
            docs: HashMap::new(),
        };
        let stop = reader.run(stream).await;
        if let Stop::Protocol(reason) = &stop {
            debug!(%reason, "protocol error");
            ctx.metrics.protocol_errors.inc();
            let _ = reader
                .outbox
                .try_send(Message::error(reason.clone()).encode());
        }
        for handle in reader.docs.values() {
            let _ = handle.send(Command::Detach { conn }).await;
        }
        cancel.cancel();
        drop(reader);
        let _ = writer.await;
        ctx.metrics.connections.dec();
    }
    .instrument(span)
    .await
}

/// The reading half and the connection's routing state.
struct Reader {
    conn: ConnId,
    /// Who the token says the client is; read-only tokens get read-only sync.
    identity: Identity,
    ctx: SyncContext,
    /// The connection's outgoing queue, shared with every document actor it syncs with.
    outbox: mpsc::Sender<Vec<u8>>,
    /// Cancelled by anyone who wants this connection closed.
    cancel: CancellationToken,
    /// The peer id bound at `join`; every later message must carry it as sender.
    peer: Option<PeerId>,
    /// Documents this connection syncs, with their actors.
    docs: HashMap<DocumentId, DocHandle>,
}

impl Reader {
    async fn run(&mut self, mut stream: futures_util::stream::SplitStream<WebSocket>) -> Stop {
        loop {
            let next = tokio::select! {
                () = self.cancel.cancelled() => return Stop::Closed,
                next = tokio::time::timeout(self.ctx.limits.idle_timeout, stream.next()) => next,
            };
            let frame = match next {
                Err(_) => return Stop::Protocol("no frames or pongs for too long, closing".into()),
                Ok(None) => return Stop::Closed,
                Ok(Some(Err(e))) => {
                    let text = e.to_string();
                    // The socket library refuses frames over its hard limit before we see them.
                    if text.contains("too long") || text.contains("Space limit") {
                        return Stop::Protocol(format!(
                            "frame larger than the limit of {} bytes",
                            self.ctx.limits.max_frame_bytes
                        ));
                    }
                    return Stop::Closed;
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let bytes = match frame {
                WsMessage::Binary(bytes) => bytes,
                WsMessage::Text(_) => {
                    return Stop::Protocol(
                        "text frames are not part of the protocol: send CBOR in binary frames"
                            .into(),
                    );
                }
                WsMessage::Close(_) => return Stop::Closed,
                // Pings are answered by the socket library; a pong only proves the client is alive.
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            };
            if bytes.len() > self.ctx.limits.max_frame_bytes {
                return Stop::Protocol(format!(
                    "frame of {} bytes is larger than the limit of {} bytes",
                    bytes.len(),
                    self.ctx.limits.max_frame_bytes
                ));
            }
            let message = match wire::decode(&bytes) {
                Ok(m) => m,
                Err(e) => return Stop::Protocol(e.to_string()),
            };
            if let Some(stop) = self.handle(message).await {
                return stop;
            }
        }
    }

    fn send(&self, message: Message) -> Option<Stop> {
        match self.outbox.try_send(message.encode()) {
            Ok(()) => None,
            // Our own queue is full: the client is not reading.
            Err(_) => {
                self.ctx.metrics.slow_disconnects.inc();
                Some(Stop::Closed)
            }
        }
    }

    /// Answers a `join`: the `peer` reply, or the protocol error for an unsupported version.
    fn answer_join(&self, client: &PeerId, versions: &[String]) -> Option<Stop> {
        match wire::answer_join(
            &self.ctx.server_id,
            &PeerMetadata::default(),
            client,
            versions,
        ) {
            Ok(reply) => self.send(reply),
            Err(Message::Error { message }) => Some(Stop::Protocol(message)),
            Err(other) => self.send(other),
        }
    }

    async fn handle(&mut self, message: Message) -> Option<Stop> {
        let Some(peer) = self.peer.clone() else {
            let Message::Join {
                sender_id,
                supported_protocol_versions,
                ..
            } = message
            else {
                return Some(Stop::Protocol(format!(
                    "the first message must be join, not {}",
                    message.message_type()
                )));
            };
            let answer = self.answer_join(&sender_id, &supported_protocol_versions);
            if answer.is_none() {
                self.peer = Some(sender_id);
            }
            return answer;
        };
        if message.sender_id().is_some_and(|s| s != &peer) {
            return Some(Stop::Protocol(format!(
                "senderId {:?} is not the peer that joined on this connection ({peer})",
                message.sender_id().map(PeerId::as_str).unwrap_or_default()
            )));
        }
        match message {
            Message::Request {
                document_id, data, ..
            }
            | Message::Sync {
                document_id, data, ..
            } => self.sync(peer, document_id, data).await,
            Message::Ephemeral {
                document_id,
                session_id,
                count,
                data,
                ..
            } => {
                // Presence names a person; it must be the person the token names, or anyone holding a token could
                // appear in the war room as someone else.
                if let Some(claimed) = presence_name(&data)
                    && claimed != self.identity.name
                {
                    return Some(Stop::Protocol(format!(
                        "presence names {claimed:?}, but this connection's token belongs to {:?}",
                        self.identity.name
                    )));
                }
                // Presence is relayed only among peers syncing the document, which the sender must be.
                if let Some(handle) = self.docs.get(&document_id) {
                    let _ = handle
                        .send(Command::Ephemeral {
                            conn: self.conn,
                            session_id,
                            count,
                            data,
                        })
                        .await;
                }
                None
            }
            Message::Join {
                supported_protocol_versions,
                ..
            } => {
                // A repeated join (the client retried) gets the same answer.
                self.answer_join(&peer, &supported_protocol_versions)
            }
            Message::Leave { .. } => Some(Stop::Closed),
            Message::Error { message } => {
                debug!(%message, "client reported an error");
                Some(Stop::Closed)
            }
            // The heads gossip is optional and off by default in the JavaScript client; we do not take part.
            Message::Peer { .. }
            | Message::DocUnavailable { .. }
            | Message::RemoteSubscriptionChange { .. }
            | Message::RemoteHeadsChanged { .. } => None,
        }
    }

    /// Hands a sync message to the document's actor, attaching this connection first if needed.
    async fn sync(&mut self, peer: PeerId, id: DocumentId, data: Vec<u8>) -> Option<Stop> {
        let mut command = Command::Sync {
            conn: self.conn,
            data,
        };
        // Twice at most: an actor may stop (idle unload races) between lookup and send; the retry loads anew.
        for _ in 0..2 {
            let handle = match self.docs.get(&id) {
                Some(handle) if !handle.is_closed() => handle.clone(),
                _ => match self.attach(&peer, id).await {
                    Ok(Some(handle)) => handle,
                    Ok(None) => {
                        return self.send(Message::DocUnavailable {
                            sender_id: self.ctx.server_id.clone(),
                            target_id: peer,
                            document_id: id,
                        });
                    }
                    Err(stop) => return Some(stop),
                },
            };
            match handle.send(command).await {
                Ok(()) => return None,
                Err(returned) => {
                    self.docs.remove(&id);
                    command = returned;
                }
            }
        }
        Some(Stop::Protocol(format!(
            "document {id} is unavailable, reconnect later"
        )))
    }

    async fn attach(&mut self, peer: &PeerId, id: DocumentId) -> Result<Option<DocHandle>, Stop> {
        let handle = match self.ctx.registry.get(id).await {
            Ok(Some(handle)) => handle,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, document = %id, "could not load document");
                return Err(Stop::Protocol(
                    "storage unavailable, reconnect later".into(),
                ));
            }
        };
        let link = PeerLink {
            peer_id: peer.clone(),
            outbox: self.outbox.clone(),
            cancel: self.cancel.clone(),
            read_only: self.identity.scope < Scope::Write,
            name: self.identity.name.clone(),
        };
        if handle
            .send(Command::Attach {
                conn: self.conn,
                link,
            })
            .await
            .is_err()
        {
            return Ok(None);
        }
        self.docs.insert(id, handle.clone());
        Ok(Some(handle))
    }
}

/// How long a closing connection may take to deliver what is queued (an `error` message, say).
const DRAIN_DEADLINE: Duration = Duration::from_secs(1);

/// How long one frame may take to leave; a client that does not read for this long is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The writing half: outbox to socket, plus pings, until cancelled; then what is queued, briefly, and a close.
async fn write(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    cancel: CancellationToken,
    ping_interval: Duration,
) {
    let mut ping = tokio::time::interval(ping_interval);
    ping.tick().await;
    loop {
        tokio::select! {
            biased;
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                let sent = tokio::time::timeout(SEND_TIMEOUT, sink.send(WsMessage::Binary(frame.into()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break;
                }
            }
            () = cancel.cancelled() => {
                let _ = tokio::time::timeout(DRAIN_DEADLINE, async {
                    while let Ok(frame) = rx.try_recv() {
                        if sink.send(WsMessage::Binary(frame.into())).await.is_err() {
                            break;
                        }
                    }
                })
                .await;
                break;
            }
            _ = ping.tick() => {
                if sink.send(WsMessage::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = tokio::time::timeout(DRAIN_DEADLINE, sink.send(WsMessage::Close(None))).await;
    // The reader stops too when the writer gives up.
    cancel.cancel();
}

/// The `name` an ephemeral payload claims, when it is a CBOR map with a text `name` entry (the web client's
/// presence shape). Other payloads are an application's own business and pass untouched.
fn presence_name(data: &[u8]) -> Option<String> {
    let ciborium::Value::Map(entries) = ciborium::from_reader(data).ok()? else {
        return None;
    };
    entries
        .into_iter()
        .find_map(|(key, value)| match (key, value) {
            (ciborium::Value::Text(key), ciborium::Value::Text(name)) if key == "name" => {
                Some(name)
            }
            _ => None,
        })
}
