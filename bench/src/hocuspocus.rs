//! One Yjs peer's WebSocket to a Hocuspocus server, speaking Hocuspocus's protocol as `HocuspocusProvider` does.
//!
//! Every frame is binary: the document's name (a lib0 varstring), the message type (a varuint: Sync 0, Awareness 1,
//! Auth 2, QueryAwareness 3, SyncStatus 8, …), then the payload. A Sync payload is a y-protocols sync message
//! (SyncStep1 with a state vector, SyncStep2 or Update with an update), encoded here by yrs's [`SyncMessage`].
//! Opening a document sends an Auth message (sub-type Token, then the token: empty, the server having no
//! `onAuthenticate`) and, as the provider does, SyncStep1 right behind it; the server queues the second until the
//! first is through, answers `Authenticated`, then sends its own SyncStep1 and a SyncStep2 with what we lack. It
//! answers each SyncStep2 or Update a peer sends with a SyncStatus (1: applied), and broadcasts every change it
//! applies to every connection of the document, the sender's included.
//!
//! Peers here carry no awareness (a provider built with `awareness: null`). Hocuspocus closes a connection that
//! sends nothing for its `timeout` (60 s), which a real provider's awareness renewals prevent; a peer here sends a
//! QueryAwareness (answered to it alone) after [`KEEP_ALIVE`] without sending anything else.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;
use yrs::sync::SyncMessage;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;

use crate::link::{Endpoint, HANDSHAKE_TIMEOUT, Socket, Traffic};

/// Silence after which a peer sends a QueryAwareness, well inside Hocuspocus's 60 s idle timeout.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Hocuspocus's message types that peers here send or read.
mod kind {
    pub const SYNC: u64 = 0;
    pub const AWARENESS: u64 = 1;
    pub const AUTH: u64 = 2;
    pub const QUERY_AWARENESS: u64 = 3;
    pub const SYNC_STATUS: u64 = 8;
}

/// Sub-types of an Auth message (`AuthMessageType` of `@hocuspocus/common`).
mod auth {
    pub const TOKEN: u64 = 0;
    pub const PERMISSION_DENIED: u64 = 1;
    pub const AUTHENTICATED: u64 = 2;
}

/// What a frame from the server means to a peer.
#[derive(Debug)]
pub enum Event {
    /// The document's Auth went through.
    Authenticated,
    /// A y-protocols sync message.
    Sync(SyncMessage),
    /// The server applied one SyncStep2 or Update we sent (`true`) or refused it (`false`, read-only).
    SyncStatus(bool),
    /// Awareness and anything else a peer without awareness ignores.
    Other,
}

/// Encodes a frame about `document` of message type `kind` with `payload` behind it.
fn frame(document: &str, kind: u64, payload: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.write_string(document);
    buf.write_var(kind);
    payload(&mut buf);
    buf
}

/// Decodes a frame from the server: its document name and what it means.
pub fn decode(bytes: &[u8]) -> anyhow::Result<(String, Event)> {
    let mut cursor = Cursor::new(bytes);
    let document = cursor
        .read_string()
        .context("a frame's document name")?
        .to_owned();
    let kind: u64 = cursor.read_var().context("a frame's message type")?;
    let event = match kind {
        kind::SYNC => Event::Sync(
            SyncMessage::decode_v1(&bytes[cursor.next..]).context("decoding a sync message")?,
        ),
        kind::AUTH => match cursor.read_var::<u64>()? {
            auth::AUTHENTICATED => Event::Authenticated,
            auth::PERMISSION_DENIED => bail!(
                "Hocuspocus denied access to {document}: {}",
                cursor.read_string().unwrap_or_default()
            ),
            other => bail!("an Auth message of unknown sub-type {other}"),
        },
        kind::SYNC_STATUS => Event::SyncStatus(cursor.read_var::<u64>()? == 1),
        kind::AWARENESS | kind::QUERY_AWARENESS => Event::Other,
        other => bail!("a Hocuspocus message of unexpected type {other}"),
    };
    Ok((document, event))
}

/// A connection to a Hocuspocus server with one document open.
pub struct YLink {
    /// The counted socket, shared with [`crate::link`].
    socket: Socket,
    /// The document's name.
    document: String,
    /// When we last sent anything, for the keep-alive.
    last_sent: Instant,
    /// SyncStep2 and Update messages sent that the server has not yet acknowledged with a SyncStatus.
    unacknowledged: u64,
}

impl YLink {
    /// Connects to `endpoint` and opens `document` as a provider does: Auth with an empty token, then SyncStep1
    /// with `state` (our state vector, encoded), without waiting in between. Returns once the server said
    /// `Authenticated`; its SyncStep1 and SyncStep2 follow.
    pub async fn open(
        endpoint: &Endpoint,
        document: &str,
        state: &yrs::StateVector,
        traffic: Arc<Traffic>,
    ) -> anyhow::Result<YLink> {
        let mut link = YLink {
            socket: Socket::connect(endpoint, traffic).await?,
            document: document.to_owned(),
            last_sent: Instant::now(),
            unacknowledged: 0,
        };
        link.send_frame(frame(document, kind::AUTH, |buf| {
            buf.write_var(auth::TOKEN);
            buf.write_string("");
        }))
        .await?;
        link.send_sync(&SyncMessage::SyncStep1(state.clone()))
            .await?;
        let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, link.recv())
            .await
            .context("no answer to Auth")?
            .context("authenticating")?;
        match answer {
            Event::Authenticated => Ok(link),
            other => bail!("expected Authenticated, got {other:?}"),
        }
    }

    /// Sends one frame.
    async fn send_frame(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.last_sent = Instant::now();
        self.socket.send(bytes).await
    }

    /// Sends a sync message about our document; a SyncStep2 or Update awaits the server's SyncStatus.
    pub async fn send_sync(&mut self, message: &SyncMessage) -> anyhow::Result<()> {
        if !matches!(message, SyncMessage::SyncStep1(_)) {
            self.unacknowledged += 1;
        }
        let bytes = frame(&self.document, kind::SYNC, |buf| {
            buf.extend_from_slice(&message.encode_v1())
        });
        self.send_frame(bytes).await
    }

    /// SyncStep2 and Update messages the server has not acknowledged yet.
    pub fn unacknowledged(&self) -> u64 {
        self.unacknowledged
    }

    /// What the server's next frame about our document means; SyncStatus acknowledgements are counted, pings and
    /// pongs skipped (see [`Socket::recv`]), and a QueryAwareness goes out after [`KEEP_ALIVE`] of silence.
    /// Cancel-safe as far as the protocol goes: a keep-alive cut short is either queued whole in the socket or not
    /// sent at all.
    pub async fn recv(&mut self) -> anyhow::Result<Event> {
        loop {
            let bytes = tokio::select! {
                bytes = self.socket.recv() => bytes?,
                () = tokio::time::sleep_until(self.last_sent + KEEP_ALIVE) => {
                    let query = frame(&self.document, kind::QUERY_AWARENESS, |_| {});
                    self.send_frame(query).await?;
                    continue;
                }
            };
            let (document, event) = decode(&bytes)?;
            if document != self.document {
                continue;
            }
            match event {
                Event::SyncStatus(false) => {
                    bail!("Hocuspocus refused an update (read-only connection)")
                }
                Event::SyncStatus(true) => {
                    self.unacknowledged = self.unacknowledged.saturating_sub(1);
                }
                _ => {}
            }
            return Ok(event);
        }
    }

    /// Closes the socket politely.
    pub async fn close(self) {
        self.socket.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_the_decoder() -> anyhow::Result<()> {
        let update = SyncMessage::Update(vec![1, 2, 3]);
        let bytes = frame("doc", kind::SYNC, |buf| {
            buf.extend_from_slice(&update.encode_v1())
        });
        let (document, event) = decode(&bytes)?;
        assert_eq!(document, "doc");
        assert!(matches!(event, Event::Sync(SyncMessage::Update(u)) if u == [1, 2, 3]));
        let ack = frame("doc", kind::SYNC_STATUS, |buf| buf.write_var(1u64));
        assert!(matches!(decode(&ack)?.1, Event::SyncStatus(true)));
        let authenticated = frame("doc", kind::AUTH, |buf| {
            buf.write_var(auth::AUTHENTICATED);
            buf.write_string("read-write");
        });
        assert!(matches!(decode(&authenticated)?.1, Event::Authenticated));
        let denied = frame("doc", kind::AUTH, |buf| {
            buf.write_var(auth::PERMISSION_DENIED);
            buf.write_string("nope");
        });
        assert!(decode(&denied).is_err());
        Ok(())
    }
}
