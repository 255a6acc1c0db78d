//! One `/sync` WebSocket connection: the automerge-repo handshake, then routing of each message to the actor of
//! the document it is about.
//!
//! A connection runs as two tasks: this reader, and a writer that drains a bounded outbox into the socket (and
//! pings). Document actors write into the outbox without waiting; a client that stops reading fills it and is cut
//! off, so it never stalls a document or the other peers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

use crate::auth::{Identity, Scope};
use crate::config::SyncLimits;
use crate::document::{Command, DocHandle, Registry};
use crate::ephemeral::Presence;
use crate::metrics::Metrics;
use crate::peer::{ConnId, PeerLink};
use crate::sessions::{Session, Sessions};
use wire::{self, DocumentId, Message, PeerId, PeerMetadata};

/// How every server peer id starts (`commandpost-` and random bytes). No client may join under such an id: a peer
/// that did could send ephemeral messages that look, to other peers, as if the server sent them.
pub const SERVER_PEER_PREFIX: &str = "commandpost-";

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
    /// Live connections per token: the per-token cap and revocation.
    pub sessions: Sessions,
}

/// Why the reader stops.
enum Stop {
    /// The client left or the socket broke.
    Closed,
    /// The client broke the protocol: tell it why, then close.
    Protocol(String),
    /// A limit was exceeded (silence, an ephemeral flood): tell the client which, then close. Counted where it is
    /// detected.
    Limit(String),
    /// The connection's token was revoked: tell the client, then close.
    Revoked,
}

/// Serves one upgraded socket until it closes; `session` is its registration under its token, which closes it when
/// the token is revoked.
pub async fn serve(
    socket: WebSocket,
    identity: Identity,
    session: Session,
    ctx: SyncContext,
    from: Option<String>,
) {
    let conn = session.conn();
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
            revoked: session.revoked.clone(),
            edits: TokenBucket::new(ctx.limits.edits_per_sec, ctx.limits.edit_burst),
            ephemerals: TokenBucket::new(ctx.limits.ephemeral_per_sec, ctx.limits.ephemeral_burst),
            peer: None,
            docs: HashMap::new(),
            from,
        };
        let stop = reader.run(stream).await;
        let farewell = match stop {
            Stop::Closed => None,
            Stop::Protocol(reason) => {
                debug!(%reason, "protocol error");
                ctx.metrics.protocol_errors.inc();
                Some(reason)
            }
            Stop::Limit(reason) => {
                debug!(%reason, "limit exceeded");
                Some(reason)
            }
            Stop::Revoked => {
                debug!("token revoked, closing");
                ctx.metrics.revoked_disconnects.inc();
                Some("the token of this connection was revoked".to_owned())
            }
        };
        if let Some(reason) = farewell {
            let _ = reader.outbox.try_send(Message::error(reason).encode());
        }
        for handle in reader.docs.values() {
            let _ = handle.send(Command::Detach { conn }).await;
        }
        cancel.cancel();
        drop(reader);
        let _ = writer.await;
        ctx.metrics.connections.dec();
        drop(session);
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
    /// Cancelled when the connection's token is revoked.
    revoked: CancellationToken,
    /// Paces change-carrying sync messages.
    edits: TokenBucket,
    /// Bounds ephemeral messages: presence needs a few a second, so a sender beyond the bucket is flooding.
    ephemerals: TokenBucket,
    /// The peer id bound at `join`; every later message must carry it as sender.
    peer: Option<PeerId>,
    /// Documents this connection syncs, with their actors.
    docs: HashMap<DocumentId, DocHandle>,
    /// Where the connection came from, for the audit log.
    from: Option<String>,
}

impl Reader {
    async fn run(&mut self, mut stream: futures_util::stream::SplitStream<WebSocket>) -> Stop {
        loop {
            let next = tokio::select! {
                () = self.revoked.cancelled() => return Stop::Revoked,
                () = self.cancel.cancelled() => return Stop::Closed,
                next = tokio::time::timeout(self.ctx.limits.idle_timeout, stream.next()) => next,
            };
            let frame = match next {
                Err(_) => {
                    self.ctx.metrics.rejected_idle.inc();
                    return Stop::Limit(format!(
                        "no frames or pongs for {} s, the idle limit: closing",
                        self.ctx.limits.idle_timeout.as_secs()
                    ));
                }
                Ok(None) => return Stop::Closed,
                Ok(Some(Err(e))) => {
                    // The socket library refuses frames over its hard limit before we see them.
                    if matches!(
                        e.into_inner().downcast_ref::<tungstenite::Error>(),
                        Some(tungstenite::Error::Capacity(_))
                    ) {
                        self.ctx.metrics.rejected_frames.inc();
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
                self.ctx.metrics.rejected_frames.inc();
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
            if sender_id == self.ctx.server_id || sender_id.as_str().starts_with(SERVER_PEER_PREFIX)
            {
                return Some(Stop::Protocol(format!(
                    "peer id {sender_id} is reserved: ids starting with {SERVER_PEER_PREFIX:?} are the server's"
                )));
            }
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
            } => self.ephemeral(document_id, session_id, count, &data).await,
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

    /// Checks one ephemeral message (the rate, then that it is presence naming this connection's person) and
    /// hands the presence, re-encoded, to the document's actor to relay. Anything else ends the connection with an
    /// `error`: ephemeral data reaches every peer of the document unstored and unchecked by them, so a payload the
    /// server did not vet could pose as a server notice or as someone else.
    async fn ephemeral(
        &mut self,
        id: DocumentId,
        session_id: String,
        count: u64,
        data: &[u8],
    ) -> Option<Stop> {
        if !self.ephemerals.try_take(Instant::now()) {
            self.ctx.metrics.rejected_ephemeral.inc();
            return Some(Stop::Limit(format!(
                "more than {} ephemeral messages per second (burst {}) on this connection",
                self.ctx.limits.ephemeral_per_sec, self.ctx.limits.ephemeral_burst
            )));
        }
        let presence = match Presence::decode(data) {
            Ok(presence) => presence,
            Err(e) => {
                e.counter(&self.ctx.metrics).inc();
                return Some(Stop::Protocol(e.to_string()));
            }
        };
        // Presence names a person; it must be the person the token names, or anyone holding a token could appear
        // in the war room as someone else.
        if presence.name != self.identity.name {
            self.ctx.metrics.ephemeral_refused_name.inc();
            return Some(Stop::Protocol(format!(
                "presence names {:?}, but this connection's token belongs to {:?}",
                presence.name, self.identity.name
            )));
        }
        // Presence is relayed only among peers syncing the document, which the sender must be.
        if let Some(handle) = self.docs.get(&id) {
            let _ = handle
                .send(Command::Ephemeral {
                    conn: self.conn,
                    session_id,
                    count,
                    data: presence.encode(),
                })
                .await;
        }
        None
    }

    /// Hands a sync message to the document's actor, attaching this connection first if needed. Messages that
    /// carry changes are paced by the connection's edit bucket first.
    async fn sync(&mut self, peer: PeerId, id: DocumentId, data: Vec<u8>) -> Option<Stop> {
        let change_bytes = match automerge::sync::Message::decode(&data) {
            Ok(message) => message.changes.iter().map(<[u8]>::len).sum::<usize>(),
            Err(e) => {
                return Some(Stop::Protocol(format!(
                    "invalid sync message for document {id}: {e}"
                )));
            }
        };
        if change_bytes > 0
            && let Some(stop) = self.pace_edit().await
        {
            return Some(stop);
        }
        let mut command = Command::Sync {
            conn: self.conn,
            data,
            change_bytes,
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

    /// Waits until the edit bucket allows one more change-carrying message (counting the wait as throttling);
    /// a revocation or close during the wait ends the connection.
    async fn pace_edit(&mut self) -> Option<Stop> {
        let wait = self.edits.take(Instant::now());
        if wait.is_zero() {
            return None;
        }
        self.ctx.metrics.edits_throttled.inc();
        tokio::select! {
            () = self.revoked.cancelled() => Some(Stop::Revoked),
            () = self.cancel.cancelled() => Some(Stop::Closed),
            () = tokio::time::sleep(wait) => None,
        }
    }

    /// The document's actor with this connection attached, or `None` for an unknown document and for a restricted
    /// one this connection's person may not see (the same `doc-unavailable`, so nobody learns it exists; decided
    /// from the index as HTTP routes do, and re-checked by the actor after every change).
    async fn attach(&mut self, peer: &PeerId, id: DocumentId) -> Result<Option<DocHandle>, Stop> {
        let admin = self.identity.scope == Scope::Admin;
        match self.ctx.registry.store().summary(id).await {
            Ok(Some(row)) if !row.visible_to(&self.identity.name, admin) => return Ok(None),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, document = %id, "could not read the index row");
                return Err(Stop::Protocol(
                    "storage unavailable, reconnect later".into(),
                ));
            }
        }
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
            admin,
            from: self.from.clone(),
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

/// A token bucket: `burst` edits at once, refilled at `rate` per second. Throttling (rather than an error and a
/// close) keeps a fast but legitimate client, such as a bot replaying a backlog, working, while a flood costs the
/// server no more than `rate` merges per second per connection; the client just sees its socket read more slowly.
struct TokenBucket {
    /// Edits per second.
    rate: f64,
    /// The bucket's size.
    burst: f64,
    /// Edits available at `at`; negative when edits were taken ahead (the caller waits for them).
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            at: Instant::now(),
        }
    }

    /// Takes one edit at `now`; returns how long the caller must wait before the edit is due (zero if at once).
    fn take(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Takes one token at `now` if the bucket has one; returns whether it had.
    fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    /// Adds what the rate earned since the last call, up to the bucket's size.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
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
                let sent = tokio::time::timeout(SEND_TIMEOUT, send_queued(&mut sink, frame, &mut rx)).await;
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

/// Frames written before one flush at most, so a long queue still leaves in bounded pieces.
const FRAMES_PER_FLUSH: usize = 64;

/// Writes `first` and whatever else is already queued behind it, then flushes once: a viewer that fell a few
/// frames behind catches up in one system call instead of one per frame.
async fn send_queued(
    sink: &mut SplitSink<WebSocket, WsMessage>,
    first: Vec<u8>,
    rx: &mut mpsc::Receiver<Vec<u8>>,
) -> Result<(), axum::Error> {
    sink.feed(WsMessage::Binary(first.into())).await?;
    for _ in 1..FRAMES_PER_FLUSH {
        let Ok(frame) = rx.try_recv() else { break };
        sink.feed(WsMessage::Binary(frame.into())).await?;
    }
    sink.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_paces_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3);
        for _ in 0..3 {
            assert_eq!(bucket.take(start), Duration::ZERO);
        }
        // The fourth edit at the same instant waits a tenth of a second, the fifth two tenths.
        assert_eq!(bucket.take(start), Duration::from_millis(100));
        assert_eq!(bucket.take(start), Duration::from_millis(200));
        // After a long pause the bucket is full again, never fuller.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take(later), Duration::ZERO);
        }
        assert!(bucket.take(later) > Duration::ZERO);
    }

    #[test]
    fn try_take_refuses_beyond_the_burst_and_takes_nothing_then() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(20, 2);
        assert!(bucket.try_take(start));
        assert!(bucket.try_take(start));
        assert!(!bucket.try_take(start));
        assert!(!bucket.try_take(start));
        // 60 ms earn one token and a fifth, since the refusals took nothing.
        let later = start + Duration::from_millis(60);
        assert!(bucket.try_take(later));
        assert!(!bucket.try_take(later));
    }
}
