//! A Slack Web API stand-in for tests: a real axum server on a loopback port implementing the calls commandpost
//! makes (`chat.postMessage`, `conversations.create`) and checking each request against Slack's documented
//! shapes: `POST`, `Content-Type: application/json` (Slack takes JSON bodies on write methods with a bearer
//! token), `Authorization: Bearer <bot token>`, the required fields with their types, the channel existing. It
//! answers as Slack does (HTTP 200 with `{"ok": false, "error": …}` for `not_authed`, `invalid_auth`,
//! `channel_not_found`, `no_text`, `msg_too_long`, `name_taken`, `invalid_name_specials`, …), and can answer
//! HTTP 429 with `Retry-After` once. Anything not as documented is also recorded as a problem, which tests assert
//! is empty.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The bot token the stand-in accepts.
pub const SLACK_BOT_TOKEN: &str = "xoxb-0000000000-test-token";

/// One message posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The channel id.
    pub channel: String,
    /// The text as sent (escaped by the sender).
    pub text: String,
}

#[derive(Default)]
struct Shared {
    /// Channel id → name.
    channels: Mutex<BTreeMap<String, String>>,
    posts: Mutex<Vec<Posted>>,
    /// Requests not as Slack documents them.
    problems: Mutex<Vec<String>>,
    /// 429s still to answer.
    rate_limits: AtomicUsize,
    /// Every call, by method name.
    calls: Mutex<Vec<String>>,
}

/// A running stand-in.
pub struct SlackStandIn {
    /// Where it listens; the Web API's base is `http://{addr}/api`.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl SlackStandIn {
    /// Starts it on a loopback port.
    pub async fn start() -> SlackStandIn {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/api/{method}", post(call))
            .with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SlackStandIn { addr, shared }
    }

    /// The Web API base URL, as `[slack] api-url` takes it.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Creates a channel as a person would in Slack; returns its id.
    pub fn add_channel(&self, name: &str) -> String {
        add(&self.shared, name)
    }

    /// The messages posted so far, in order.
    pub fn posts(&self) -> Vec<Posted> {
        lock(&self.shared.posts).clone()
    }

    /// The texts posted to `channel`, in order.
    pub fn texts(&self, channel: &str) -> Vec<String> {
        self.posts()
            .into_iter()
            .filter(|p| p.channel == channel)
            .map(|p| p.text)
            .collect()
    }

    /// Requests that were not as Slack documents them.
    pub fn problems(&self) -> Vec<String> {
        lock(&self.shared.problems).clone()
    }

    /// The methods called, in order.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.shared.calls).clone()
    }

    /// Answers the next `n` calls with HTTP 429 and `Retry-After: 1`.
    pub fn rate_limit(&self, n: usize) {
        self.shared.rate_limits.store(n, Ordering::SeqCst);
    }

    /// The channels, id → name.
    pub fn channels(&self) -> BTreeMap<String, String> {
        lock(&self.shared.channels).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn add(shared: &Shared, name: &str) -> String {
    let mut channels = lock(&shared.channels);
    let id = format!("C{:010}", channels.len() + 1);
    channels.insert(id.clone(), name.to_owned());
    id
}

fn slack_error(error: &str) -> Response {
    (
        StatusCode::OK,
        axum::Json(json!({"ok": false, "error": error})),
    )
        .into_response()
}

async fn call(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    lock(&shared.calls).push(method.clone());
    let problem = |what: String| lock(&shared.problems).push(format!("{method}: {what}"));
    if shared
        .rate_limits
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "",
        )
            .into_response();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/json") {
        problem(format!(
            "Content-Type {content_type:?}, not application/json"
        ));
        return slack_error("invalid_form_data");
    }
    match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        None => {
            problem("no Authorization header".into());
            return slack_error("not_authed");
        }
        Some(auth) if auth != format!("Bearer {SLACK_BOT_TOKEN}") => {
            problem(format!("Authorization {auth:?}"));
            return slack_error("invalid_auth");
        }
        Some(_) => {}
    }
    let Ok(Value::Object(args)) = serde_json::from_str::<Value>(&body) else {
        problem(format!("body is no JSON object: {body:?}"));
        return slack_error("invalid_json");
    };
    match method.as_str() {
        "chat.postMessage" => {
            let Some(channel) = args.get("channel").and_then(Value::as_str) else {
                problem("no channel".into());
                return slack_error("channel_not_found");
            };
            let Some(text) = args.get("text").and_then(Value::as_str) else {
                problem("no text (and no blocks)".into());
                return slack_error("no_text");
            };
            if text.trim().is_empty() {
                problem("empty text".into());
                return slack_error("no_text");
            }
            if text.chars().count() > 40_000 {
                return slack_error("msg_too_long");
            }
            if !lock(&shared.channels).contains_key(channel) {
                return slack_error("channel_not_found");
            }
            lock(&shared.posts).push(Posted {
                channel: channel.to_owned(),
                text: text.to_owned(),
            });
            let ts = format!("{}.000100", chrono::Utc::now().timestamp());
            axum::Json(json!({"ok": true, "channel": channel, "ts": ts})).into_response()
        }
        "conversations.create" => {
            let Some(name) = args.get("name").and_then(Value::as_str) else {
                problem("no name".into());
                return slack_error("invalid_name_required");
            };
            if name.chars().count() > 80 {
                return slack_error("invalid_name_maxlength");
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            {
                return slack_error("invalid_name_specials");
            }
            if args.get("is_private").is_some_and(|v| !v.is_boolean()) {
                problem("is_private is not a boolean".into());
            }
            if lock(&shared.channels).values().any(|n| n == name) {
                return slack_error("name_taken");
            }
            let id = add(&shared, name);
            axum::Json(json!({"ok": true, "channel": {"id": id, "name": name, "is_channel": true}}))
                .into_response()
        }
        other => {
            problem(format!("a method the stand-in does not know: {other}"));
            slack_error("unknown_method")
        }
    }
}
