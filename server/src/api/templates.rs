//! Template routes: the templates on offer (with where each came from, its version and the refused ones), one
//! template's source, and the admin's uploads to the store, which every node sharing it picks up.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;
use crate::auth::{Identity, Scope};
use crate::error::ApiError;
use crate::templates::{Loaded, Source};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/templates", get(list))
        .route("/api/templates/{id}", get(read).put(upload).delete(remove))
}

/// A template as the API shows it: what the declare form needs (name, description, fields) and what the admin
/// page adds (version, origin, file, the origins it overrides).
fn entry(loaded: &Loaded) -> Value {
    let t = &loaded.template;
    let fields: Vec<_> = t.fields.iter().map(|f| &f.def).collect();
    json!({
        "id": t.id,
        "name": t.name,
        "description": t.description,
        "drill": t.drill,
        "version": t.version,
        "origin": loaded.origin,
        "file": loaded.file,
        "overrides": loaded.overrides,
        "fields": fields,
    })
}

/// `GET /api/templates`: every template on offer, the default first, and `errors`: the refused ones, each with
/// `file:line: reason` and what serves its id meanwhile.
async fn list(identity: Identity, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    identity.require(Scope::Read, "read templates")?;
    let catalog = state.templates.current();
    let templates: Vec<_> = catalog.templates().iter().map(entry).collect();
    Ok(Json(
        json!({ "templates": templates, "errors": catalog.problems() }),
    ))
}

/// `GET /api/templates/{id}`: one template on offer, with its Markdown `source`.
async fn read(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    identity.require(Scope::Read, "read templates")?;
    let catalog = state.templates.current();
    let loaded = catalog.get(&id).ok_or(ApiError::NotFound)?;
    let mut body = entry(loaded);
    body["source"] = json!(&*loaded.source);
    Ok(Json(body))
}

/// `PUT /api/templates/{id}` with the Markdown as the body (admins): checked first, and refused whole with 422
/// `<id>.md:line: reason` if it does not parse; otherwise stored for every node and offered here at once.
async fn upload(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
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
    state.templates.reload_store().await?;
    let catalog = state.templates.current();
    let loaded = catalog.get(&template.id).ok_or(ApiError::Internal)?;
    Ok(Json(entry(loaded)))
}

/// `DELETE /api/templates/{id}` (admins): removes an uploaded template; the id falls back to the directory's or
/// the built-in template, if there is one. 404 if nothing was uploaded under it.
async fn remove(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    identity.require(Scope::Admin, "change templates")?;
    if !state.store.delete_template(&id).await? {
        return Err(ApiError::NotFound);
    }
    tracing::info!(template = %id, by = %identity.name, "uploaded template deleted");
    state.templates.reload_store().await?;
    Ok(StatusCode::NO_CONTENT)
}
