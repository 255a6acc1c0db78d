//! One peer's WebSocket to a sync server: the automerge-repo handshake, then frames in and out through the shared
//! [`wire`] codec, with byte counts for the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wire::{DocumentId, Message, PeerId, PeerMetadata};

/// How long connecting and the handshake may take. Generous: a join storm queues hundreds of handshakes on a
/// two-core machine.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

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

/// A joined connection to a sync server.
pub struct Link {
    /// The socket.
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Our peer id, the `senderId` of everything we send.
    me: PeerId,
    /// The server's peer id, from its `peer` answer.
    server: PeerId,
    /// Where byte counts go.
    traffic: Arc<Traffic>,
}

impl Link {
    /// Connects to `endpoint`, sends `join` as an ephemeral peer (as a browser tab does) and waits for `peer`.
    pub async fn connect(
        endpoint: &Endpoint,
        me: PeerId,
        traffic: Arc<Traffic>,
    ) -> anyhow::Result<Link> {
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
        let (socket, _) = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(endpoint, Some(config), true),
        )
        .await
        .context("connecting timed out")?
        .with_context(|| format!("connecting to {}", endpoint.url))?;
        let mut link = Link {
            socket,
            server: PeerId::from(""),
            me,
            traffic,
        };
        link.send(&Message::Join {
            sender_id: link.me.clone(),
            supported_protocol_versions: vec![wire::PROTOCOL_VERSION.to_owned()],
            metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: true,
            }),
        })
        .await?;
        let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, link.recv())
            .await
            .context("no answer to join")??;
        match answer {
            Message::Peer { sender_id, .. } => link.server = sender_id,
            Message::Error { message } => bail!("the server refused the join: {message}"),
            other => bail!("expected peer, got {}", other.message_type()),
        }
        Ok(link)
    }

    /// Sends one message in one binary frame.
    pub async fn send(&mut self, message: &Message) -> anyhow::Result<()> {
        let frame = message.encode();
        self.traffic
            .sent
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        self.socket
            .send(WsMessage::Binary(frame.into()))
            .await
            .context("sending a frame")
    }

    /// Sends an Automerge sync message about `document`: `request` when we do not hold it yet, else `sync`.
    pub async fn send_sync(
        &mut self,
        document: DocumentId,
        data: Vec<u8>,
        request: bool,
    ) -> anyhow::Result<()> {
        let (sender_id, target_id) = (self.me.clone(), self.server.clone());
        let message = if request {
            Message::Request {
                sender_id,
                target_id,
                document_id: document,
                data,
            }
        } else {
            Message::Sync {
                sender_id,
                target_id,
                document_id: document,
                data,
            }
        };
        self.send(&message).await
    }

    /// The next protocol message; pings and pongs are skipped (the socket library answers pings). A close is an
    /// error: peers of a benchmark never expect one.
    pub async fn recv(&mut self) -> anyhow::Result<Message> {
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
                    return wire::decode(&bytes).context("decoding a frame");
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
