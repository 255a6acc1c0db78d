//! Slack: verifying what Slack sends (`X-Slack-Signature`, v0: the hex HMAC-SHA256 of `v0:{timestamp}:{raw body}`
//! keyed with the app's signing secret, and a timestamp within five minutes, so a captured request cannot be
//! replayed), the Web API calls the app makes (`chat.postMessage`, `conversations.create`), and the sender task
//! that posts the outbox's `Sink::Slack` rows in order, recording each attempt in the delivery log and
//! `/metrics`. Any node may send: rows are claimed under a lease, so each post goes out once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::SlackSettings;
use crate::error::error_chain;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::outbox::{Attempt, Next, Sink};
use crate::webhooks::slack_escape;

/// How far a request's timestamp may be from our clock (Slack's own advice: five minutes).
pub const REPLAY_WINDOW_SECS: i64 = 300;

/// How often the outbox is polled when nothing wakes the sender.
const POLL: Duration = Duration::from_secs(1);

/// Posts claimed per round.
const BATCH: usize = 32;

/// How long a claim holds: longer than an attempt, so only a node that died mid-attempt leaves one to expire.
const LEASE_SECS: i64 = 60;

/// Attempts after which a post is given up.
const MAX_ATTEMPTS: u32 = 12;

/// Why a request is not Slack's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsigned {
    /// No or unreadable `X-Slack-Request-Timestamp` / `X-Slack-Signature`.
    #[error("the request carries no readable X-Slack-Request-Timestamp and X-Slack-Signature")]
    Missing,
    /// The timestamp is more than five minutes away from now: too old (a replay) or from the future.
    #[error(
        "X-Slack-Request-Timestamp is more than 5 minutes from the server's clock (a replayed or delayed request)"
    )]
    Stale,
    /// The signature does not match the body.
    #[error(
        "X-Slack-Signature does not match the request (wrong signing secret, or a changed body)"
    )]
    Mismatch,
}

/// The `X-Slack-Signature` of `body` sent at `timestamp`: `v0=` and the hex HMAC-SHA256 of `v0:{timestamp}:{body}`.
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a request's headers against its raw body at `now`: the timestamp within [`REPLAY_WINDOW_SECS`], then
/// the signature, compared in constant time.
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    signed: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), Unsigned> {
    let (Some(timestamp), Some(signed)) = (timestamp, signed) else {
        return Err(Unsigned::Missing);
    };
    let seconds: i64 = timestamp.trim().parse().map_err(|_| Unsigned::Missing)?;
    if (now.timestamp() - seconds).abs() > REPLAY_WINDOW_SECS {
        return Err(Unsigned::Stale);
    }
    let given = signed
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(Unsigned::Mismatch)?;
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return Err(Unsigned::Mismatch);
    };
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| Unsigned::Mismatch)
}

/// A Web API call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiFailure {
    /// Slack answered `{"ok": false, "error": …}` (`channel_not_found`, `not_in_channel`, `name_taken`, …).
    Refused(String),
    /// HTTP 429: retry after this many seconds.
    RateLimited(u64),
    /// No usable answer (connection, timeout, another status, a body that is not Slack's).
    Failed(Option<u16>, String),
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiFailure::Refused(error) => write!(f, "Slack refused: {error}"),
            ApiFailure::RateLimited(secs) => {
                write!(f, "rate limited by Slack (retry after {secs} s)")
            }
            ApiFailure::Failed(_, why) => f.write_str(why),
        }
    }
}

/// The Slack Web API as the app calls it.
#[derive(Clone)]
pub struct SlackApi {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl SlackApi {
    /// A client for `settings` (its `api-url` and bot token).
    pub fn new(settings: &SlackSettings) -> Result<SlackApi, reqwest::Error> {
        Ok(SlackApi {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .user_agent(concat!("commandpost/", env!("CARGO_PKG_VERSION")))
                .build()?,
            base: settings.api_url.trim_end_matches('/').to_owned(),
            token: settings.bot_token.clone(),
        })
    }

    /// Calls `method` with a JSON body; the answer's JSON when `ok`.
    async fn call(&self, method: &str, body: &Value) -> Result<Value, ApiFailure> {
        let response = self
            .client
            .post(format!("{}/{method}", self.base))
            .bearer_auth(&self.token)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| ApiFailure::Failed(None, error_chain(&e.without_url())))?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(30);
            return Err(ApiFailure::RateLimited(after));
        }
        if !status.is_success() {
            return Err(ApiFailure::Failed(
                Some(status.as_u16()),
                format!("Slack answered HTTP {status}"),
            ));
        }
        let answer: Value = response.json().await.map_err(|e| {
            ApiFailure::Failed(
                Some(status.as_u16()),
                format!("not Slack's answer: {}", error_chain(&e.without_url())),
            )
        })?;
        if answer["ok"].as_bool() == Some(true) {
            Ok(answer)
        } else {
            let error = answer["error"].as_str().unwrap_or("unknown_error");
            Err(ApiFailure::Refused(error.chars().take(100).collect()))
        }
    }

    /// `chat.postMessage`: posts `text` (escaped: nothing in it is markup or a mention) in `channel`.
    pub async fn post_message(&self, channel: &str, text: &str) -> Result<(), ApiFailure> {
        let body = json!({"channel": channel, "text": slack_escape(text)});
        self.call("chat.postMessage", &body).await.map(drop)
    }

    /// `conversations.create`: a public channel named `name`, or, when the name is taken, `name-2` … `name-9`.
    /// Returns the channel's id and name.
    pub async fn create_channel(&self, name: &str) -> Result<(String, String), ApiFailure> {
        let mut last = ApiFailure::Refused("name_taken".into());
        for n in 1..=9 {
            let candidate =
                incident_doc::channel::suffixed(name, n, incident_doc::channel::SLACK_MAX);
            match self
                .call(
                    "conversations.create",
                    &json!({"name": candidate, "is_private": false}),
                )
                .await
            {
                Ok(answer) => {
                    let id = answer["channel"]["id"].as_str().unwrap_or_default();
                    let created = answer["channel"]["name"].as_str().unwrap_or(&candidate);
                    if !incident_doc::channel::is_slack_id(id) {
                        return Err(ApiFailure::Failed(
                            None,
                            "Slack's answer names no channel id".into(),
                        ));
                    }
                    return Ok((id.to_owned(), created.to_owned()));
                }
                Err(ApiFailure::Refused(e)) if e == "name_taken" => last = ApiFailure::Refused(e),
                Err(other) => return Err(other),
            }
        }
        Err(last)
    }
}

/// The Slack app of a server: its settings, its Web API client, the sender's wake-up, and the reactions already
/// handled (Slack retries an event it thinks we missed; a reaction's line is promoted once per node).
pub struct SlackApp {
    /// `[slack]`.
    pub settings: SlackSettings,
    /// The Web API.
    pub api: SlackApi,
    /// Wakes the sender when posts were queued.
    pub wake: Arc<tokio::sync::Notify>,
    /// The `event_id`s of the last reactions handled, oldest first.
    seen: std::sync::Mutex<std::collections::VecDeque<String>>,
}

/// How many reaction event ids are remembered against Slack's retries (it retries three times within minutes).
const SEEN: usize = 1024;

impl SlackApp {
    /// The app of `settings`, checked: a bot token and a signing secret are needed, and an http(s) API address.
    pub fn new(settings: SlackSettings) -> Result<SlackApp, String> {
        if settings.bot_token.trim().is_empty() || settings.signing_secret.trim().is_empty() {
            return Err("[slack] needs bot-token and signing-secret".into());
        }
        let url =
            reqwest::Url::parse(&settings.api_url).map_err(|e| format!("[slack] api-url: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("[slack] api-url must be http:// or https://".into());
        }
        if settings.reaction.trim().is_empty() || settings.reaction.contains(':') {
            return Err("[slack] reaction is an emoji name without colons (pushpin)".into());
        }
        let api = SlackApi::new(&settings).map_err(|e| format!("[slack]: {e}"))?;
        Ok(SlackApp {
            settings,
            api,
            wake: Arc::new(tokio::sync::Notify::new()),
            seen: std::sync::Mutex::new(std::collections::VecDeque::new()),
        })
    }

    /// Whether the reaction event `id` is new to this node (and remembers it).
    pub fn first_time(&self, id: &str) -> bool {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.iter().any(|s| s == id) {
            return false;
        }
        if seen.len() >= SEEN {
            seen.pop_front();
        }
        seen.push_back(id.to_owned());
        true
    }
}

/// Starts the sender of Slack posts; it stops when `shutdown` is cancelled, after the post under way.
pub fn spawn(
    store: Arc<dyn Store>,
    api: SlackApi,
    metrics: Arc<Metrics>,
    wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while !shutdown.is_cancelled() {
            let full = match round(&*store, &api, &metrics).await {
                Ok(claimed) => claimed == BATCH,
                Err(e) => {
                    debug!(error = %e, "Slack outbox unavailable");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    })
}

/// Claims the due posts and sends them in id order (a channel reads them in the order they happened); a channel
/// whose post failed gets none of its later ones this round, so they never overtake it.
async fn round(
    store: &dyn Store,
    api: &SlackApi,
    metrics: &Metrics,
) -> Result<usize, crate::store::StoreError> {
    let now = Utc::now();
    let claimed = store
        .claim_deliveries(
            Sink::Slack,
            now,
            now + chrono::Duration::seconds(LEASE_SECS),
            BATCH,
        )
        .await?;
    let count = claimed.len();
    let mut held: Vec<String> = Vec::new();
    for delivery in claimed {
        if held.contains(&delivery.endpoint) {
            // Put back as it was: due again at once, after the earlier post.
            let attempt = Attempt {
                at: Utc::now(),
                status: None,
                error: Some("waiting for an earlier post to this channel".into()),
                next: Next::RetryAt(Utc::now()),
            };
            store.finish_delivery(delivery.id, &attempt).await?;
            continue;
        }
        let text = serde_json::from_str::<Value>(&delivery.payload)
            .ok()
            .and_then(|p| p["text"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let outcome = api.post_message(&delivery.endpoint, &text).await;
        let at = Utc::now();
        let attempt = match outcome {
            Ok(()) => {
                metrics.slack_posts_delivered.inc();
                Attempt {
                    at,
                    status: Some(200),
                    error: None,
                    next: Next::Done,
                }
            }
            Err(failure) => {
                metrics.slack_posts_failed.inc();
                held.push(delivery.endpoint.clone());
                let status = match &failure {
                    ApiFailure::RateLimited(_) => Some(429),
                    ApiFailure::Failed(status, _) => *status,
                    ApiFailure::Refused(_) => Some(200),
                };
                let next = match &failure {
                    _ if delivery.attempts >= MAX_ATTEMPTS => Next::GiveUp,
                    ApiFailure::RateLimited(secs) => Next::RetryAt(
                        at + chrono::Duration::seconds(
                            i64::try_from(*secs).unwrap_or(60).clamp(1, 3600),
                        ),
                    ),
                    _ => Next::RetryAt(at + backoff(delivery.attempts)),
                };
                warn!(channel = %delivery.endpoint, error = %failure, "a Slack post failed");
                Attempt {
                    at,
                    status,
                    error: Some(failure.to_string()),
                    next,
                }
            }
        };
        store.finish_delivery(delivery.id, &attempt).await?;
    }
    Ok(count)
}

/// The delay before retry `attempts` + 1: one second doubling, at most ten minutes.
fn backoff(attempts: u32) -> chrono::Duration {
    let secs = 1_i64 << attempts.saturating_sub(1).min(10);
    chrono::Duration::seconds(secs.min(600))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// Slack's published example ("Verifying requests from Slack").
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&\
        channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=\
        https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=\
        398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const EXPECTED: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn the_published_test_vector_is_reproduced() {
        assert_eq!(signature(SECRET, TIMESTAMP, BODY.as_bytes()), EXPECTED);
        let then = Utc.timestamp_opt(1_531_420_618, 0).single().expect("valid");
        assert_eq!(
            verify(
                SECRET,
                Some(TIMESTAMP),
                Some(EXPECTED),
                BODY.as_bytes(),
                then
            ),
            Ok(())
        );
    }

    #[test]
    fn forged_stale_and_missing_signatures_are_refused() {
        let then = Utc.timestamp_opt(1_531_420_618, 0).single().expect("valid");
        let body = BODY.as_bytes();
        let check = |ts: Option<&str>, sig: Option<&str>, body: &[u8], now| {
            verify(SECRET, ts, sig, body, now)
        };
        assert_eq!(
            check(None, Some(EXPECTED), body, then),
            Err(Unsigned::Missing)
        );
        assert_eq!(
            check(Some(TIMESTAMP), None, body, then),
            Err(Unsigned::Missing)
        );
        assert_eq!(
            check(Some("soon"), Some(EXPECTED), body, then),
            Err(Unsigned::Missing)
        );
        // Five minutes and a second later, or earlier: a replay, or a clock far off.
        let late = then + chrono::Duration::seconds(301);
        assert_eq!(
            check(Some(TIMESTAMP), Some(EXPECTED), body, late),
            Err(Unsigned::Stale)
        );
        let early = then - chrono::Duration::seconds(301);
        assert_eq!(
            check(Some(TIMESTAMP), Some(EXPECTED), body, early),
            Err(Unsigned::Stale)
        );
        assert_eq!(
            check(Some(TIMESTAMP), Some(EXPECTED), b"token=changed", then),
            Err(Unsigned::Mismatch)
        );
        // Signed at another time than it says.
        let other = signature(SECRET, "1531420619", body);
        assert_eq!(
            check(Some(TIMESTAMP), Some(&other), body, then),
            Err(Unsigned::Mismatch)
        );
        for bad in [
            "",
            "v0=",
            "v1=a2114d57",
            "v0=zz",
            &EXPECTED.to_uppercase().replacen("V0", "v0", 1)[..10],
        ] {
            assert_eq!(
                check(Some(TIMESTAMP), Some(bad), body, then),
                Err(Unsigned::Mismatch),
                "{bad:?}"
            );
        }
        assert_eq!(
            verify(
                "another secret",
                Some(TIMESTAMP),
                Some(EXPECTED),
                body,
                then
            ),
            Err(Unsigned::Mismatch)
        );
    }

    #[test]
    fn backoff_doubles_to_ten_minutes() {
        let secs: Vec<i64> = (1..=12).map(|a| backoff(a).num_seconds()).collect();
        assert_eq!(secs[..4], [1, 2, 4, 8]);
        assert_eq!(secs[11], 600);
    }
}
