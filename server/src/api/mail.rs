//! Status updates by email (`crate::mail`): `POST /api/incidents/{id}/update/send` mails the update to the
//! incident's lists and records it as `…/update/sent` does, in one durable unit; `GET /api/incidents/{id}/mail` is the
//! incident's mail thread: each update mailed, to whom, and how its delivery stands.

use automerge::ChangeHash;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use incident_doc::Headline;
use incident_doc::Operation;
use incident_doc::update::UpdateFormat;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::incidents::{IncidentId, editor, handle};
use super::openapi::{ReadRefusals, WriteRefusals};
use super::update::update_heads;
use super::{AppState, JsonBody};
use crate::auth::{Identity, Scope};
use crate::error::ApiError;
use crate::export;
use crate::mail::{self, Mail, Outgoing, SubjectParts};
use crate::store::outbox::{DeliveryState, NewDelivery, Sink};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send))
        .routes(routes!(thread))
}

/// Body of `POST /api/incidents/{id}/update/send`; optional.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct SendUpdate {
    /// The heads of the update the sender read (the `Commandpost-Heads` header of `GET …/update`): the email says
    /// exactly that; now when absent.
    #[serde(default)]
    heads: Option<Vec<String>>,
}

/// What sending an update answers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct UpdateMailed {
    /// The id of the timeline entry recording it.
    id: Option<String>,
    /// When it was recorded as sent.
    at: DateTime<Utc>,
    /// The email's `Message-ID`.
    message_id: String,
    /// The lists it goes to.
    to: Vec<String>,
}

/// `POST /api/incidents/{id}/update/send` (write) → 201: the update is recorded as sent (timeline entry, the
/// Communications lead's cadence starts again) and its email is queued in the same transaction; the mailer sends it
/// (see `GET …/mail`). 409 when the server has no `[mail]`, no list receives this incident, or this very update (the
/// same heads) was mailed already.
#[utoipa::path(
    post,
    path = "/api/incidents/{id}/update/send",
    tag = "update",
    params(IncidentId),
    request_body = SendUpdate,
    responses(
        (status = 201, description = "Recorded, and the email queued, durably", body = UpdateMailed),
        WriteRefusals,
    )
)]
async fn send(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    JsonBody(body): JsonBody<SendUpdate>,
) -> Result<Response, ApiError> {
    identity.require(Scope::Write, "edit incidents")?;
    let handle = handle(&state, &identity, &id).await?;
    let Some(mail) = state.mail.clone() else {
        return Err(ApiError::Conflict(
            "this server sends no email (no [mail] in its configuration): copy the update and mark it as sent"
                .into(),
        ));
    };
    let heads = update_heads(&handle, body.heads).await?;
    let doc = handle.id;
    let message_id = mail.message_id(doc, &heads);
    let earlier: Vec<String> = state
        .store
        .deliveries_of(doc, Sink::Mail)
        .await?
        .into_iter()
        .map(|c| c.record.event_id)
        .collect();
    if earlier.contains(&message_id) {
        return Err(ApiError::Conflict(
            "this update was mailed already: nothing changed in the incident since".into(),
        ));
    }
    let now = Utc::now();
    let at_heads: Vec<ChangeHash> = heads.iter().filter_map(|h| h.parse().ok()).collect();
    let (text, markdown, headline, restricted) = state
        .reads
        .run_waiting(&handle, move |incident| {
            // The update as the sender read it, even if the incident moved on since.
            let mut then = export::fork_at(incident, &at_heads)?;
            let mut written = export::status_updates(
                &mut then,
                now,
                &[UpdateFormat::Text, UpdateFormat::Markdown],
            )?;
            let markdown = written.pop().unwrap_or_default();
            let text = written.pop().unwrap_or_default();
            let restricted = then.restriction().0;
            Ok((text, markdown, Headline::read(then.doc()), restricted))
        })
        .await?;
    let to = recipients(&state, &mail, &headline, restricted);
    if to.is_empty() {
        return Err(ApiError::Conflict(format!(
            "no mailing list receives incidents of template {:?} at severity {}: copy the update and mark it as sent",
            headline.template,
            headline.severity.as_deref().unwrap_or("(none)")
        )));
    }
    let (in_reply_to, references) = mail::thread(&earlier);
    let outgoing = Outgoing {
        message_id: message_id.clone(),
        in_reply_to,
        references,
        subject: mail::subject(&SubjectParts {
            title: &headline.title,
            number: headline.number,
            severity: headline.severity.as_deref(),
            drill: headline.drill,
        }),
        to: to.clone(),
        date: now,
        text,
        html: mail::html_part(&headline.title, &markdown),
    };
    let payload = serde_json::to_string(&outgoing).map_err(|_| ApiError::Internal)?;
    let delivery = NewDelivery {
        endpoint: mail::ENDPOINT.into(),
        event_id: message_id.clone(),
        kind: mail::KIND.into(),
        doc,
        payload,
        not_before: now,
        coalesce: None,
        sink: Sink::Mail,
    };
    let editor = editor(&identity);
    let at = editor.at;
    let note = format!("by email to {}", to.join(", "));
    let applied = handle
        .apply_with(
            vec![Operation::MarkUpdateSent {
                heads,
                note: Some(note),
            }],
            editor,
            None,
            vec![delivery],
        )
        .await?;
    mail.wake.notify_one();
    let entry = applied.into_iter().next().and_then(|a| a.id);
    Ok((
        StatusCode::CREATED,
        Json(UpdateMailed {
            id: entry,
            at,
            message_id,
            to,
        }),
    )
        .into_response())
}

/// The lists an update of the incident goes to now: the configured ones that take its template and severity (and,
/// for a restricted incident, opted in to restricted ones), and its template's own (`mail-to=…`), read from the
/// template as the server offers it now.
fn recipients(state: &AppState, mail: &Mail, headline: &Headline, restricted: bool) -> Vec<String> {
    let catalog = state.templates.current();
    let own = catalog
        .get(&headline.template)
        .map_or(&[][..], |loaded| &loaded.template.mail_to[..]);
    mail.recipients(
        &headline.template,
        own,
        headline.severity.as_deref(),
        restricted,
    )
}

/// An incident's mail thread.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct MailThread {
    /// Whether this server sends email at all (`[mail]`).
    configured: bool,
    /// The lists an update sent now would go to (by the incident's template and severity); empty: "Mark as sent".
    to: Vec<String>,
    /// The updates mailed, oldest first.
    messages: Vec<MailedUpdate>,
}

/// One update's email and how its delivery stands.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct MailedUpdate {
    /// Its `Message-ID`.
    message_id: String,
    /// Its subject.
    subject: String,
    /// The lists it went to.
    to: Vec<String>,
    /// When it was sent (queued).
    sent_at: DateTime<Utc>,
    /// Delivered, pending (retried) or failed (given up).
    state: DeliveryState,
    /// Attempts so far.
    attempts: u32,
    /// When it was last tried.
    last_attempt_at: Option<DateTime<Utc>>,
    /// When it is tried next, while pending.
    next_attempt_at: Option<DateTime<Utc>>,
    /// The relay's last reply code (250, 451, 550, …).
    last_status: Option<u16>,
    /// Why the last attempt failed.
    last_error: Option<String>,
    /// When the relay accepted it.
    delivered_at: Option<DateTime<Utc>>,
}

/// `GET /api/incidents/{id}/mail` (read): the lists an update would go to now, and every update mailed with its
/// delivery state (the incident page's mail section).
#[utoipa::path(
    get,
    path = "/api/incidents/{id}/mail",
    tag = "update",
    params(IncidentId),
    responses(
        (status = 200, description = "The incident's mail thread", body = MailThread),
        ReadRefusals,
    )
)]
async fn thread(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
) -> Result<Response, ApiError> {
    identity.require(Scope::Read, "read incidents")?;
    let handle = handle(&state, &identity, &id).await?;
    let (headline, restricted) = handle
        .read(|incident| (Headline::read(incident.doc()), incident.restriction().0))
        .await?;
    let to = state.mail.as_ref().map_or_else(Vec::new, |mail| {
        recipients(&state, mail, &headline, restricted)
    });
    let messages = state
        .store
        .deliveries_of(handle.id, Sink::Mail)
        .await?
        .into_iter()
        .map(|carried| {
            let outgoing = serde_json::from_str::<Outgoing>(&carried.payload).ok();
            let r = carried.record;
            MailedUpdate {
                message_id: r.event_id,
                subject: outgoing
                    .as_ref()
                    .map(|o| o.subject.clone())
                    .unwrap_or_default(),
                to: outgoing.map(|o| o.to).unwrap_or_default(),
                sent_at: r.created_at,
                state: r.state,
                attempts: r.attempts,
                last_attempt_at: r.last_attempt_at,
                next_attempt_at: r.next_attempt_at,
                last_status: r.last_status,
                last_error: r.last_error,
                delivered_at: r.delivered_at,
            }
        })
        .collect();
    Ok(Json(MailThread {
        configured: state.mail.is_some(),
        to,
        messages,
    })
    .into_response())
}
