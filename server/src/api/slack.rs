//! Slack's requests to the app: the Events API (`POST /api/slack/events`: the `url_verification` challenge,
//! `message` events logged and their commands run, `reaction_added` with the configured reaction promoting the
//! line to the timeline) and the slash command (`POST /api/slack/commands`, form-encoded, answered with Slack's
//! `{"response_type", "text"}`). Both authenticate by the signing secret, not a token: a missing, forged or
//! stale signature (timestamp more than 5 minutes off: a replay) is 401 with our JSON error, counted in
//! `/metrics`. Without `[slack]` both answer 404. Replies to channel lines go out through the outbox, in order.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::openapi::BadRequest;
use crate::chat::slack::{SlackApp, verify};
use crate::chat::{Heard, Network, Speaker};
use crate::error::ApiError;
use crate::store::outbox::{NewDelivery, Sink};
use crate::webhooks::{random_hex, slack_escape};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(events))
        .routes(routes!(commands))
}

/// The Slack app, after checking that the request is Slack's: 404 without `[slack]`, 401 for a bad signature.
fn verified<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<&'a SlackApp, ApiError> {
    let slack = state.slack.as_deref().ok_or(ApiError::NotFound)?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    verify(
        &slack.settings.signing_secret,
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        body,
        Utc::now(),
    )
    .map_err(|e| {
        state.metrics.slack_requests_refused.inc();
        tracing::info!(reason = %e, "a request to /api/slack was refused");
        ApiError::BadSignature(e.to_string())
    })?;
    Ok(slack)
}

/// When a Slack `ts` (`1531420618.000200`) was said; now if it is not one.
fn ts_time(ts: &str) -> DateTime<Utc> {
    let (secs, micros) = ts.split_once('.').unwrap_or((ts, "0"));
    let secs: i64 = secs.parse().unwrap_or_default();
    let micros: u32 = micros
        .get(..6)
        .unwrap_or(micros)
        .parse()
        .unwrap_or_default();
    Utc.timestamp_opt(secs, micros.saturating_mul(1000))
        .single()
        .filter(|_| secs > 0)
        .unwrap_or_else(Utc::now)
}

/// A string field of an event, bounded: Slack's ids and texts, never megabytes.
fn field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value[key]
        .as_str()
        .filter(|s| !s.is_empty() && s.len() <= 40_000)
}

/// Says `lines` in the Slack channel `channel` (bound to an open incident), through the outbox.
async fn say(
    state: &AppState,
    slack: &SlackApp,
    channel: &str,
    lines: Vec<String>,
) -> Result<(), ApiError> {
    if lines.is_empty() {
        return Ok(());
    }
    let Some(incident) = state
        .store
        .incident_by_channel(Network::Slack, channel)
        .await?
    else {
        return Ok(());
    };
    let now = Utc::now();
    let posts = lines
        .into_iter()
        .map(|text| NewDelivery {
            payload: json!({"channel": channel, "text": text}).to_string(),
            endpoint: channel.to_owned(),
            event_id: format!("chat_{}", random_hex()),
            kind: "reply".to_owned(),
            doc: incident.id,
            not_before: now,
            coalesce: None,
            sink: Sink::Slack,
        })
        .collect();
    state.store.enqueue(posts).await?;
    slack.wake.notify_one();
    Ok(())
}

/// What the Events API route answers: `{"challenge"}` to the URL verification, `{"ok": true}` otherwise.
#[derive(Serialize, ToSchema)]
struct EventAnswer {
    /// The `url_verification` challenge, echoed.
    #[serde(skip_serializing_if = "Option::is_none")]
    challenge: Option<String>,
    /// Taken (also for events the app does not act on, so Slack does not retry them).
    #[serde(skip_serializing_if = "Option::is_none")]
    ok: Option<bool>,
}

/// `POST /api/slack/events` (Slack's signature): the Events API request URL. Lines said in bound channels are
/// logged (each Slack `ts` once, however often Slack retries) and their commands run as the `[[chat.people]]`
/// person; the configured reaction on a logged line makes it a timeline entry by the reacting person. Bot messages,
/// edits and other subtypes are not logged.
#[utoipa::path(
    post,
    path = "/api/slack/events",
    tag = "chat",
    request_body(content = Object, description = "A Slack Events API envelope (`url_verification` or `event_callback`)", content_type = "application/json"),
    responses(
        (status = 200, description = "Taken; `{\"challenge\"}` for the URL verification", body = EventAnswer),
        (status = 400, response = BadRequest),
        (status = 401, description = "No, a forged or a stale Slack signature", body = crate::error::ErrorBody),
        (status = 404, description = "No `[slack]` is configured", body = crate::error::ErrorBody),
    ),
    security(())
)]
async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<EventAnswer>, ApiError> {
    let slack = verified(&state, &headers, &body)?;
    let envelope: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a Slack event (JSON): {e}")))?;
    let taken = Json(EventAnswer {
        challenge: None,
        ok: Some(true),
    });
    match envelope["type"].as_str() {
        Some("url_verification") => {
            let challenge = field(&envelope, "challenge").ok_or_else(|| {
                ApiError::BadRequest("url_verification without a challenge".into())
            })?;
            return Ok(Json(EventAnswer {
                challenge: Some(challenge.to_owned()),
                ok: None,
            }));
        }
        Some("event_callback") => {}
        _ => return Ok(taken),
    }
    let event = &envelope["event"];
    match event["type"].as_str() {
        Some("message") => {
            // Edits, deletions, joins, bots (ours included) and files are not lines people said.
            if event.get("subtype").is_some() || event.get("bot_id").is_some() {
                return Ok(taken);
            }
            let (Some(channel), Some(user), Some(text), Some(ts)) = (
                field(event, "channel"),
                field(event, "user"),
                field(event, "text"),
                field(event, "ts"),
            ) else {
                return Ok(taken);
            };
            let heard = Heard {
                network: Network::Slack,
                channel: channel.to_owned(),
                id: Some(ts.to_owned()),
                speaker: Speaker {
                    name: user.to_owned(),
                    mask: None,
                    account: None,
                },
                text: text.to_owned(),
                at: ts_time(ts),
            };
            let lines = state.chat.hear(heard).await;
            say(&state, slack, channel, lines).await?;
        }
        Some("reaction_added") => {
            let item = &event["item"];
            let wanted = event["reaction"].as_str() == Some(slack.settings.reaction.as_str())
                && item["type"].as_str() == Some("message");
            let (Some(channel), Some(ts), Some(user)) = (
                field(item, "channel"),
                field(item, "ts"),
                field(event, "user"),
            ) else {
                return Ok(taken);
            };
            let id = field(&envelope, "event_id").unwrap_or(ts);
            if !wanted || !slack.first_time(&format!("{id} {user} {ts}")) {
                return Ok(taken);
            }
            let reactor = Speaker {
                name: user.to_owned(),
                mask: None,
                account: None,
            };
            let lines = state
                .chat
                .promote(Network::Slack, channel, ts, &reactor)
                .await;
            say(&state, slack, channel, lines).await?;
        }
        _ => {}
    }
    Ok(taken)
}

/// The fields of a slash command's form the app reads (Slack sends more, which are ignored).
#[derive(Deserialize, ToSchema)]
#[schema(as = SlackSlashCommand)]
struct SlashCommand {
    /// The command's text after `/incident`.
    #[serde(default)]
    text: String,
    /// Who ran it.
    user_id: String,
    /// Where.
    channel_id: String,
}

/// Slack's answer to a slash command.
#[derive(Serialize, ToSchema)]
struct SlashAnswer {
    /// `ephemeral` (only the caller sees it) or `in_channel`.
    response_type: &'static str,
    /// The answer, escaped for Slack.
    text: String,
}

/// `POST /api/slack/commands` (Slack's signature): the slash command (`/incident sev SEV1`, `/incident status`, …)
/// for the incident bound to the channel it is run in, as the `[[chat.people]]` person; answered to the caller
/// only, except `status` and `update`, which the channel sees.
#[utoipa::path(
    post,
    path = "/api/slack/commands",
    tag = "chat",
    request_body(content = SlashCommand, description = "Slack's slash command form (`text`, `user_id`, `channel_id`, …)", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Slack's `{response_type, text}`", body = SlashAnswer),
        (status = 400, response = BadRequest),
        (status = 401, description = "No, a forged or a stale Slack signature", body = crate::error::ErrorBody),
        (status = 404, description = "No `[slack]` is configured", body = crate::error::ErrorBody),
    ),
    security(())
)]
async fn commands(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SlashAnswer>, ApiError> {
    verified(&state, &headers, &body)?;
    let form: SlashCommand = serde_urlencoded::from_bytes(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a Slack slash command form: {e}")))?;
    let speaker = Speaker {
        name: form.user_id,
        mask: None,
        account: None,
    };
    let word = form
        .text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let lines = state
        .chat
        .command(Network::Slack, &form.channel_id, &speaker, &form.text)
        .await;
    let public =
        (word == "status" && form.text.split_whitespace().count() == 1) || word == "update";
    Ok(Json(SlashAnswer {
        response_type: if public { "in_channel" } else { "ephemeral" },
        text: slack_escape(&lines.join("\n")),
    }))
}
