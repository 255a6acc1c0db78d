//! One peer's WebSocket to a sync server, speaking through the shared sans-IO peer ([`wire::peer::Peer`]: the
//! handshake, sync state, what each frame means) and counting bytes for the report.
//! The counted socket below it, [`Socket`], also carries the Yjs peers' frames ([`crate::hocuspocus`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use automerge::AutoCommit;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wire::peer::{Event, Peer};
use wire::{DocumentId, PeerId};

/// How long connecting and the handshake may take. Generous: a join storm queues hundreds of handshakes on a
/// two-core machine.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// The socket library's read buffer per connection. Its default (128 KiB) would put 128 MiB into the load
/// generator for 1,000 viewers; frames are read into their own allocation anyway.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Bytes every link of a run sent and received (WebSocket payloads), shared so the report can give bytes/s.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Payload bytes received by all links.
    pub received: AtomicU64,
    /// Payload bytes sent by all links.
    pub sent: AtomicU64,
}

/// Where a peer connects and as whom: the sync server's WebSocket URL and, for commandpost, the token sent in the
/// `Authorization` header (never in the URL, which the server refuses).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The WebSocket URL.
    pub url: String,
    /// The token for `Authorization: Bearer`, if the server wants one.
    pub bearer: Option<String>,
    /// The token's name: the author an editor writes on its timeline entries, which commandpost requires to be
    /// the sender's (it puts back entries naming anyone else).
    pub author: Option<String>,
}

impl IntoClientRequest for &Endpoint {
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

/// A WebSocket that counts its bytes into [`Traffic`]: what the links of both protocols (this module's and
/// [`crate::hocuspocus`]'s) share below their own framing.
pub struct Socket {
    /// The socket.
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Where byte counts go.
    traffic: Arc<Traffic>,
}

impl Socket {
    /// Connects to `endpoint` (at most [`HANDSHAKE_TIMEOUT`]) with the small read buffer.
    pub async fn connect(endpoint: &Endpoint, traffic: Arc<Traffic>) -> anyhow::Result<Socket> {
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
        let (socket, _) = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(endpoint, Some(config), true),
        )
        .await
        .context("connecting timed out")?
        .with_context(|| format!("connecting to {}", endpoint.url))?;
        Ok(Socket { socket, traffic })
    }

    /// Sends one binary frame.
    pub async fn send(&mut self, frame: Vec<u8>) -> anyhow::Result<()> {
        self.traffic
            .sent
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        self.socket
            .send(WsMessage::Binary(frame.into()))
            .await
            .context("sending a frame")
    }

    /// The next binary frame; pings and pongs are skipped (the socket library answers pings). Cancel-safe. A
    /// close is an error: peers of a benchmark never expect one.
    pub async fn recv(&mut self) -> anyhow::Result<Bytes> {
        loop {
            let frame = self
                .socket
                .next()
                .await
                .context("the server closed the connection")?
                .context("reading a frame")?;
            match frame {
                WsMessage::Binary(bytes) => {
                    self.traffic
                        .received
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    return Ok(bytes);
                }
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                WsMessage::Close(frame) => bail!("the server closed the connection: {frame:?}"),
                other => bail!("unexpected frame {other:?}"),
            }
        }
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// A joined connection to a sync server: the counted socket and the shared protocol peer ([`Peer`]).
pub struct Link {
    /// The socket.
    socket: Socket,
    /// The protocol: our peer id, the server's, and each document's sync state.
    peer: Peer,
}

impl Link {
    /// Connects to `endpoint`, sends `join` as an ephemeral peer (as a browser tab does) and waits for `peer`.
    pub async fn connect(
        endpoint: &Endpoint,
        me: PeerId,
        traffic: Arc<Traffic>,
    ) -> anyhow::Result<Link> {
        let mut link = Link {
            socket: Socket::connect(endpoint, traffic).await?,
            peer: Peer::new(me),
        };
        let join = link.peer.join();
        link.send(join).await?;
        let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, link.recv())
            .await
            .context("no answer to join")?
            .context("joining")?;
        match answer {
            Event::Joined => Ok(link),
            other => bail!("expected peer, got {other:?}"),
        }
    }

    /// Sends one frame.
    async fn send(&mut self, frame: Vec<u8>) -> anyhow::Result<()> {
        self.socket.send(frame).await
    }

    /// Sends the server whatever our copy `doc` of `document` has that it lacks (see [`Peer::sync`]).
    pub async fn flush(
        &mut self,
        document: DocumentId,
        doc: &mut AutoCommit,
    ) -> anyhow::Result<()> {
        while let Some(frame) = self.peer.sync(document, doc) {
            self.send(frame).await?;
        }
        Ok(())
    }

    /// Sends an encoded Automerge sync message about `document`, for peers that keep no replica: a `request` when
    /// it is our first word about a document we do not hold yet, else `sync` (see [`Peer::wrap`]).
    pub async fn send_sync(
        &mut self,
        document: DocumentId,
        data: Vec<u8>,
        holds_nothing: bool,
    ) -> anyhow::Result<()> {
        let frame = self
            .peer
            .wrap(document, data, holds_nothing)
            .context("sending before the handshake")?;
        self.send(frame).await
    }

    /// The protocol state: the server's heads.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The protocol state, to apply what [`Link::recv`] returned.
    pub fn peer_mut(&mut self) -> &mut Peer {
        &mut self.peer
    }

    /// What the server's next frame means; pings and pongs are skipped (see [`Socket::recv`]). Cancel-safe. An
    /// `error` or `doc-unavailable` is an error: peers of a benchmark never expect one.
    pub async fn recv(&mut self) -> anyhow::Result<Event> {
        let bytes = self.socket.recv().await?;
        match self.peer.receive(&bytes)? {
            Event::Unavailable(document) => {
                bail!("the server says document {document} is unavailable")
            }
            event => Ok(event),
        }
    }

    /// Closes the socket politely.
    pub async fn close(self) {
        self.socket.close().await;
    }
}
