//! A webhook receiver for tests: a real axum server on a loopback port that records every request (headers and
//! body), answers 503 to as many requests as a test asks, and can stop and start again on the same port to play
//! an endpoint that is down and comes back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Header names in lower case → values.
    pub headers: BTreeMap<String, String>,
    /// The body as sent.
    pub body: String,
    /// Whether the receiver accepted it (2xx) or answered 503.
    pub accepted: bool,
}

impl Delivery {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// Whether `Commandpost-Signature` is `sha256=` and the HMAC-SHA256 under `secret` of the
    /// `Commandpost-Timestamp` value, a dot and the body, computed here independently of the server's code.
    pub fn signed_with(&self, secret: &str) -> bool {
        let (Some(timestamp), Some(signature)) = (
            self.header("commandpost-timestamp"),
            self.header("commandpost-signature"),
        ) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(format!("{timestamp}.{}", self.body).as_bytes());
        let Some(hex) = signature.strip_prefix("sha256=") else {
            return false;
        };
        let Ok(bytes) = hex::decode(hex) else {
            return false;
        };
        mac.verify_slice(&bytes).is_ok()
    }
}

/// What the server task shares with the test.
#[derive(Default)]
struct Shared {
    /// Every request, in arrival order.
    received: Mutex<Vec<Delivery>>,
    /// Requests still to be refused with 503.
    fail: AtomicUsize,
}

/// A running (or stopped) receiver.
pub struct Receiver {
    /// Where it listens; the same after a restart.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    /// Stops the server; `None` while stopped.
    stop: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Receiver {
    /// A receiver on a fresh loopback port.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let addr = listener.local_addr().expect("address");
        let mut receiver = Receiver {
            addr,
            shared: Arc::default(),
            stop: None,
        };
        receiver.serve(listener);
        receiver
    }

    /// A port nobody listens on (bound, then released): a receiver that is down until [`Receiver::restart`].
    pub async fn down() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let addr = listener.local_addr().expect("address");
        drop(listener);
        Receiver {
            addr,
            shared: Arc::default(),
            stop: None,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers 503 to the next `n` requests.
    pub fn fail_next(&self, n: usize) {
        self.shared.fail.store(n, Ordering::SeqCst);
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Delivery> {
        self.shared
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The requests it accepted.
    pub fn accepted(&self) -> Vec<Delivery> {
        self.received().into_iter().filter(|d| d.accepted).collect()
    }

    /// Stops listening and closes its connections: the endpoint is down.
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.stop.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("binding the receiver's port again");
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let app = Router::new()
            .route("/{*path}", post(record))
            .with_state(self.shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        self.stop = Some((stop, task));
    }
}

async fn record(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> StatusCode {
    let refuse = shared
        .fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    shared
        .received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Delivery {
            headers,
            body,
            accepted: !refuse,
        });
    if refuse {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NO_CONTENT
    }
}
