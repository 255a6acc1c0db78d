//! Template routes: the templates on offer (with where each came from, its version and the refused ones), one
//! template's source, and the admin's uploads to the store, which every node sharing it picks up.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use incident_doc::schema::FieldDef;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{BadRequest, ReadRefusals, Refusals, TooLarge, Unprocessable};
use super::{AppState, RawBody};
use crate::audit::{self, ClientAddr};
use crate::auth::{Identity, Scope};
use crate::error::ApiError;
use crate::templates::{Loaded, Origin, Problem, Source};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(read, upload, remove))
}

/// A template as the API shows it: what the declare form needs (name, description, fields) and what the admin
/// page adds (version, origin, file, the origins it overrides).
#[derive(Serialize, ToSchema)]
struct Entry<'a> {
    /// What `POST /api/incidents` names as `template`.
    id: &'a str,
    /// What people read.
    name: &'a str,
    /// What it is for.
    description: &'a str,
    /// Whether its incidents are drills (left out of analytics and webhooks by default).
    drill: bool,
    /// Whether its incidents are restricted to their members unless the declaration says otherwise.
    restricted: bool,
    /// A digest of its text: incidents record the version they were declared from.
    version: &'a str,
    /// Where it came from.
    origin: Origin,
    /// Its file name (in `templates-dir`; `<id>.md` otherwise).
    file: &'a str,
    /// The lower origins defining the same id, which this one hides.
    overrides: &'a [Origin],
    /// The fields, in the template's order.
    fields: Vec<&'a FieldDef>,
    /// Its Markdown: `GET /api/templates/{id}` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
}

fn entry(loaded: &Loaded) -> Entry<'_> {
    let t = &loaded.template;
    Entry {
        id: &t.id,
        name: &t.name,
        description: &t.description,
        drill: t.drill,
        restricted: t.restricted,
        version: &t.version,
        origin: loaded.origin,
        file: &loaded.file,
        overrides: &loaded.overrides,
        fields: t.fields.iter().map(|f| &f.def).collect(),
        source: None,
    }
}

/// The templates on offer and the refused ones.
#[derive(Serialize, ToSchema)]
struct Offered<'a> {
    /// The default first.
    templates: Vec<Entry<'a>>,
    /// Refused templates, each with `file:line: reason` and what serves its id meanwhile.
    errors: &'a [Problem],
}

/// A template's id, in a path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct TemplateId {
    /// The template's id (its file name without `.md`).
    id: String,
}

/// `GET /api/templates` (read): every template on offer, the default first, and `errors`: the refused ones, each
/// with `file:line: reason` and what serves its id meanwhile.
#[utoipa::path(
    get,
    path = "/api/templates",
    tag = "templates",
    operation_id = "list_templates",
    responses(
        (status = 200, body = Offered),
        Refusals,
    )
)]
async fn list(identity: Identity, State(state): State<AppState>) -> Result<Response, ApiError> {
    identity.require(Scope::Read, "read templates")?;
    let catalog = state.templates.current();
    let templates = catalog.templates().iter().map(entry).collect();
    Ok(Json(Offered {
        templates,
        errors: catalog.problems(),
    })
    .into_response())
}

/// `GET /api/templates/{id}` (read): one template on offer, with its Markdown `source`.
#[utoipa::path(
    get,
    path = "/api/templates/{id}",
    tag = "templates",
    operation_id = "read_template",
    params(TemplateId),
    responses(
        (status = 200, body = Entry),
        ReadRefusals,
    )
)]
async fn read(
    identity: Identity,
    State(state): State<AppState>,
    Path(TemplateId { id }): Path<TemplateId>,
) -> Result<Response, ApiError> {
    identity.require(Scope::Read, "read templates")?;
    let catalog = state.templates.current();
    let loaded = catalog.get(&id).ok_or(ApiError::NotFound)?;
    Ok(Json(Entry {
        source: Some(&loaded.source),
        ..entry(loaded)
    })
    .into_response())
}

/// `PUT /api/templates/{id}` with the Markdown as the body (admins): checked first, and refused whole with 422
/// `<id>.md:line: reason` if it does not parse; otherwise stored for every node and offered here at once.
#[utoipa::path(
    put,
    path = "/api/templates/{id}",
    tag = "templates",
    operation_id = "upload_template",
    params(TemplateId),
    request_body(content = String, content_type = "text/markdown", description = "The template's Markdown (docs/schema.md)"),
    responses(
        (status = 200, description = "Stored and offered", body = Entry),
        (status = 400, response = BadRequest),
        Refusals,
        (status = 413, response = TooLarge),
        (status = 422, response = Unprocessable),
    )
)]
async fn upload(
    identity: Identity,
    State(state): State<AppState>,
    Path(TemplateId { id }): Path<TemplateId>,
    ClientAddr(from): ClientAddr,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    identity.require(Scope::Admin, "change templates")?;
    let source = Source {
        file: format!("{id}.md"),
        id,
        text: body.to_vec(),
    };
    let template = source
        .parse()
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    // Lossless: the text parsed, so it is UTF-8.
    let text = String::from_utf8_lossy(&source.text);
    state
        .store
        .put_template(&template.id, &text, &identity.name)
        .await?;
    tracing::info!(template = %template.id, version = %template.version, by = %identity.name, "template uploaded");
    let event = audit::Event {
        actor: &identity.name,
        action: "template.uploaded",
        target: &template.id,
        detail: serde_json::json!({"version": template.version}),
        from,
    };
    audit::record(&*state.store, &state.metrics, event).await;
    state.templates.reload_store().await?;
    let catalog = state.templates.current();
    let loaded = catalog.get(&template.id).ok_or(ApiError::Internal)?;
    Ok(Json(entry(loaded)).into_response())
}

/// `DELETE /api/templates/{id}` (admins): removes an uploaded template; the id falls back to the directory's or
/// the built-in template, if there is one. 404 if nothing was uploaded under it.
#[utoipa::path(
    delete,
    path = "/api/templates/{id}",
    tag = "templates",
    operation_id = "delete_template",
    params(TemplateId),
    responses(
        (status = 204, description = "Deleted; the id falls back to a lower origin's template, if any"),
        ReadRefusals,
    )
)]
async fn remove(
    identity: Identity,
    State(state): State<AppState>,
    Path(TemplateId { id }): Path<TemplateId>,
    ClientAddr(from): ClientAddr,
) -> Result<StatusCode, ApiError> {
    identity.require(Scope::Admin, "change templates")?;
    if !state.store.delete_template(&id).await? {
        return Err(ApiError::NotFound);
    }
    tracing::info!(template = %id, by = %identity.name, "uploaded template deleted");
    let event = audit::Event {
        actor: &identity.name,
        action: "template.deleted",
        target: &id,
        detail: serde_json::Value::Null,
        from,
    };
    audit::record(&*state.store, &state.metrics, event).await;
    state.templates.reload_store().await?;
    Ok(StatusCode::NO_CONTENT)
}
