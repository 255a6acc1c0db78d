//! Replay drill routes: start a replay of a closed incident (`POST /api/incidents/{id}/replay`), read where it is,
//! pause, resume and jump it, and compare the drill with the original (`crate::replay` runs it).
//!
//! The starter is the facilitator: an administrator, or the source incident's last commander. Only they (and
//! administrators) control the replay; anyone who may see the drill reads it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use incident_doc::replay::{Comparison, MAX_SPEED, MIN_SPEED, compare, valid_speed};
use incident_doc::schema::{SERVER_NAME, Status};
use incident_doc::{Declaration, Editor, Incident, MAX_SHORT_CHARS, Operation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::incidents::{IncidentId, editor, handle, visible};
use super::openapi::{BadRequest, ReadRefusals, TooLarge, Unprocessable};
use super::{AppState, JsonBody};
use crate::audit::{self, ClientAddr};
use crate::auth::{Identity, Scope};
use crate::error::ApiError;
use crate::replay::{Control, ControlError, steps};
use crate::store::replays::{ReplayRecord, ReplayState, whole_micros};
use wire::DocumentId;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start, status))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(jump))
        .routes(routes!(comparison))
}

/// Body of `POST /api/incidents/{id}/replay`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Start {
    /// How many times faster than the original (0.5 to 100, in hundredths); 1 when absent.
    #[schema(minimum = 0.5, maximum = 100.0)]
    #[serde(default)]
    speed: Option<f64>,
}

/// A replay drill just started.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Started {
    /// The drill's id.
    id: String,
    /// Its `automerge:` URL.
    url: String,
    /// Its number.
    number: i64,
    /// Its title: a replay of the source, with today's date.
    title: String,
    /// How many timeline entries it replays.
    steps: usize,
}

/// Where a replay is, as `GET …/replay` and the controls answer.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ReplayStatus {
    /// The incident replayed.
    source: String,
    /// Who started it (with admins, the one who controls it).
    facilitator: String,
    /// How many times faster than the original.
    speed: f64,
    /// Running, paused or finished.
    state: ReplayState,
    /// How far into the original it is, in milliseconds of the original's time.
    position_ms: i64,
    /// Steps delivered.
    delivered: i64,
    /// Steps in all.
    total: i64,
    /// When the next step comes if nobody pauses (absent when paused or finished).
    next_due_at: Option<DateTime<Utc>>,
    /// The original's time of the last step, in milliseconds: where the replay ends.
    length_ms: i64,
}

impl ReplayStatus {
    fn of(replay: &ReplayRecord, now: DateTime<Utc>) -> ReplayStatus {
        let steps = steps(replay);
        let next = usize::try_from(replay.next_step)
            .ok()
            .and_then(|i| steps.get(i));
        ReplayStatus {
            source: replay.source.to_string(),
            facilitator: replay.facilitator.clone(),
            speed: replay.speed_centi as f64 / 100.0,
            state: replay.state,
            position_ms: replay.position_ms(now),
            delivered: replay.next_step,
            total: replay.total,
            next_due_at: next
                .filter(|_| replay.state == ReplayState::Running)
                .map(|step| replay.due_at(step.offset_ms, now)),
            length_ms: steps.last().map_or(0, |s| s.offset_ms),
        }
    }
}

/// What the source says about itself, for starting its replay.
struct Source {
    closed: bool,
    commander: Option<String>,
    number: Option<i64>,
    title: String,
    /// Whether it is restricted, and then its members.
    access: Option<Vec<String>>,
    steps: Vec<incident_doc::replay::Step>,
}

/// The drill's name: the source's title without its date (the drill's title gets today's), marked as a replay.
fn drill_name(number: Option<i64>, title: &str) -> String {
    let name = match title.rsplit_once(": ") {
        Some((name, date)) if NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok() => name,
        _ => title,
    };
    let source = number.map_or_else(String::new, |n| format!(" #{n}"));
    format!("Replay of{source}: {name}")
        .chars()
        .take(MAX_SHORT_CHARS)
        .collect()
}

/// `POST /api/incidents/{id}/replay` (write; an admin or the incident's commander) → 201: a new drill replaying the
/// closed incident `id` at `speed`, durable, its first step due at once.
#[utoipa::path(
    post,
    path = "/api/incidents/{id}/replay",
    operation_id = "start_replay",
    tag = "replay",
    params(IncidentId),
    request_body = Start,
    responses(
        (status = 201, description = "The drill, declared and durable; its replay runs", body = Started,
            headers(("location" = String, description = "/api/incidents/{drill}/replay"))),
        (status = 400, response = BadRequest),
        (status = 413, response = TooLarge),
        (status = 422, description = "The incident is not closed, the speed is out of range, or no drill template is offered", body = crate::error::ErrorBody),
        ReadRefusals,
    )
)]
async fn start(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    ClientAddr(from): ClientAddr,
    JsonBody(body): JsonBody<Start>,
) -> Result<Response, ApiError> {
    identity.require(Scope::Write, "start replay drills")?;
    let source = handle(&state, &identity, &id).await?;
    let read = state
        .reads
        .run(&source, |incident| {
            let view = incident.view();
            Ok(Source {
                closed: view.headline.status.as_deref() == Some(Status::Closed.as_str()),
                commander: incident.commander(),
                number: view.headline.number,
                title: view.headline.title.clone(),
                access: Some(incident.access())
                    .filter(|a| a.restricted)
                    .map(|a| a.members),
                steps: incident.replay_schedule().steps,
            })
        })
        .await?;
    if identity.scope != Scope::Admin && read.commander.as_deref() != Some(identity.name.as_str()) {
        return Err(ApiError::Forbidden(
            "start a replay of this incident (its commander or an admin may)",
        ));
    }
    if !read.closed {
        return Err(ApiError::Unprocessable(
            "only a closed incident can be replayed".into(),
        ));
    }
    let speed = body.speed.unwrap_or(1.0);
    if !valid_speed(speed) {
        return Err(ApiError::Unprocessable(format!(
            "speed must be from {MIN_SPEED} to {MAX_SPEED}, in hundredths (e.g. 2, 10, 0.5)"
        )));
    }
    let catalog = state.templates.current();
    let template = &catalog
        .get("drill")
        .filter(|t| t.template.drill)
        .ok_or_else(|| ApiError::Unprocessable("this server offers no drill template".into()))?
        .template;
    let facilitator = editor(&identity);
    let number = state.store.next_incident_number().await?;
    let name = drill_name(read.number, &read.title);
    let mut drill = Incident::create(
        template,
        &Declaration {
            name,
            number: Some(number),
        },
        &facilitator,
        None,
    )
    .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    // A restricted incident's timeline stays among the people who could see it: the drill is restricted to them.
    if let Some(members) = &read.access {
        let mut ops = vec![Operation::SetRestricted { restricted: true }];
        ops.extend(
            members
                .iter()
                .filter(|m| **m != identity.name)
                .map(|person| Operation::AddMember {
                    person: person.clone(),
                }),
        );
        drill
            .apply_all(&ops, &facilitator)
            .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    }
    let total = u32::try_from(read.steps.len()).unwrap_or(u32::MAX);
    let begin = Operation::BeginReplay {
        source: source.id.to_string(),
        source_number: read.number,
        speed,
        total,
    };
    drill
        .apply(&begin, &Editor::new(SERVER_NAME, facilitator.at))
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let title = drill.view().headline.title;
    let id = DocumentId::random();
    state.registry.create(id, drill).await?;
    let now = whole_micros(Utc::now());
    let record = ReplayRecord {
        drill: id,
        source: source.id,
        facilitator: identity.name.clone(),
        speed_centi: (speed * 100.0).round() as i64,
        state: ReplayState::Running,
        elapsed_ms: 0,
        since: now,
        next_step: 0,
        total: i64::from(total),
        steps: serde_json::to_string(&read.steps).map_err(|_| ApiError::Internal)?,
        version: 0,
        created_at: now,
    };
    state.store.create_replay(&record).await?;
    let event = audit::Event {
        actor: &identity.name,
        action: "incident.replay_started",
        target: &id.to_string(),
        detail: serde_json::json!({"source": source.id.to_string(), "speed": speed}),
        from,
    };
    audit::record(&*state.store, &state.metrics, event).await;
    let body = Started {
        id: id.to_string(),
        url: id.url(),
        number,
        title,
        steps: read.steps.len(),
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/incidents/{id}/replay"))],
        Json(body),
    )
        .into_response())
}

/// The replay of drill `id`, for `identity`: 404 for an incident they may not see, 409 for one they see that is no
/// replay (the incident exists; it is its state that does not fit the request).
async fn replay_of(
    state: &AppState,
    identity: &Identity,
    id: &str,
) -> Result<ReplayRecord, ApiError> {
    let drill = crate::input::parse_incident(id).ok_or(ApiError::NotFound)?;
    visible(state, identity, drill).await?;
    match state.store.replay(drill).await? {
        Some(replay) => Ok(replay),
        // `visible` lets an unknown id through (it has no restriction to keep); it is still unknown.
        None if state.store.summary(drill).await?.is_none() => Err(ApiError::NotFound),
        None => Err(ApiError::Conflict(format!(
            "incident {id} is not a replay drill: a replay starts from a closed incident \
             (POST /api/incidents/{{source}}/replay)"
        ))),
    }
}

/// `GET /api/incidents/{id}/replay` (read): where the replay of drill `id` is.
#[utoipa::path(
    get,
    path = "/api/incidents/{id}/replay",
    operation_id = "replay_status",
    tag = "replay",
    params(IncidentId),
    responses(
        (status = 200, body = ReplayStatus),
        (status = 409, description = "Not a replay drill", body = crate::error::ErrorBody),
        ReadRefusals,
    )
)]
async fn status(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
) -> Result<Json<ReplayStatus>, ApiError> {
    identity.require(Scope::Read, "read incidents")?;
    let replay = replay_of(&state, &identity, &id).await?;
    Ok(Json(ReplayStatus::of(&replay, Utc::now())))
}

/// Applies a facilitator's control to the replay of drill `id`.
async fn steer(
    state: &AppState,
    identity: &Identity,
    id: &str,
    control: Control,
) -> Result<Json<ReplayStatus>, ApiError> {
    identity.require(Scope::Write, "control replay drills")?;
    let replay = replay_of(state, identity, id).await?;
    if identity.scope != Scope::Admin && identity.name != replay.facilitator {
        return Err(ApiError::Forbidden(
            "control this replay (its facilitator or an admin may)",
        ));
    }
    let now = Utc::now();
    match crate::replay::control(&*state.store, replay, control, now).await {
        Ok(replay) => Ok(Json(ReplayStatus::of(&replay, now))),
        Err(ControlError::Conflict(message)) => Err(ApiError::Conflict(message)),
        Err(ControlError::Store(error)) => Err(error.into()),
    }
}

/// `POST /api/incidents/{id}/replay/pause` (the facilitator or an admin): stops the clock; 409 when paused or
/// finished.
#[utoipa::path(
    post,
    path = "/api/incidents/{id}/replay/pause",
    operation_id = "pause_replay",
    tag = "replay",
    params(IncidentId),
    responses(
        (status = 200, body = ReplayStatus),
        (status = 409, description = "Paused already, finished, or not a replay drill", body = crate::error::ErrorBody),
        ReadRefusals,
    )
)]
async fn pause(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
) -> Result<Json<ReplayStatus>, ApiError> {
    steer(&state, &identity, &id, Control::Pause).await
}

/// `POST /api/incidents/{id}/replay/resume` (the facilitator or an admin): starts the clock again; 409 when
/// running or finished.
#[utoipa::path(
    post,
    path = "/api/incidents/{id}/replay/resume",
    operation_id = "resume_replay",
    tag = "replay",
    params(IncidentId),
    responses(
        (status = 200, body = ReplayStatus),
        (status = 409, description = "Running already, finished, or not a replay drill", body = crate::error::ErrorBody),
        ReadRefusals,
    )
)]
async fn resume(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
) -> Result<Json<ReplayStatus>, ApiError> {
    steer(&state, &identity, &id, Control::Resume).await
}

/// Body of `POST …/replay/jump`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Jump {
    /// Move on by this many seconds of the original's time; absent: to the next step.
    #[schema(minimum = 1, maximum = 604800)]
    #[serde(default)]
    seconds: Option<u32>,
}

/// `POST /api/incidents/{id}/replay/jump` (the facilitator or an admin): moves the clock to the next step (or on by
/// `seconds` of the original's time), so what falls due comes at once (on resuming, when paused); 409 when
/// finished.
#[utoipa::path(
    post,
    path = "/api/incidents/{id}/replay/jump",
    operation_id = "jump_replay",
    tag = "replay",
    params(IncidentId),
    request_body = Jump,
    responses(
        (status = 200, body = ReplayStatus),
        (status = 400, response = BadRequest),
        (status = 409, description = "Finished, or not a replay drill", body = crate::error::ErrorBody),
        (status = 413, response = TooLarge),
        (status = 422, response = Unprocessable),
        ReadRefusals,
    )
)]
async fn jump(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    JsonBody(body): JsonBody<Jump>,
) -> Result<Json<ReplayStatus>, ApiError> {
    let control = match body.seconds {
        None => Control::JumpToNext,
        Some(s) if (1..=604_800).contains(&s) => Control::JumpBy(i64::from(s) * 1000),
        Some(_) => {
            return Err(ApiError::Unprocessable(
                "seconds must be from 1 to 604800 (a week)".into(),
            ));
        }
    };
    steer(&state, &identity, &id, control).await
}

/// `GET /api/incidents/{id}/replay/compare` (read; the original must be visible too): the drill beside the incident
/// it replays: time from declaration to mitigation, handoffs, commanders, and what each team wrote as summary and
/// detailed status.
#[utoipa::path(
    get,
    path = "/api/incidents/{id}/replay/compare",
    operation_id = "compare_replay",
    tag = "replay",
    params(IncidentId),
    responses(
        (status = 200, body = Comparison),
        (status = 409, description = "Not a replay drill", body = crate::error::ErrorBody),
        ReadRefusals,
    )
)]
async fn comparison(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
) -> Result<Json<Comparison>, ApiError> {
    identity.require(Scope::Read, "read incidents")?;
    let replay = replay_of(&state, &identity, &id).await?;
    let drill = handle(&state, &identity, &id).await?;
    let original = handle(&state, &identity, &replay.source.to_string()).await?;
    let drill = state
        .reads
        .run(&drill, |incident| {
            Ok(std::mem::replace(incident, Incident::empty(None)))
        })
        .await?;
    let comparison = state
        .reads
        .run(&original, move |original| {
            let mut drill = drill;
            compare(&mut drill, original).ok_or(ApiError::NotFound)
        })
        .await?;
    Ok(Json(comparison))
}
