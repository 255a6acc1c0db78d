//! The audit log: who created or revoked a credential, signed in or was refused, reopened or deleted an incident,
//! changed who may see one, when and from where. It is kept in the store (every node writes the same log), never in
//! a document: documents are exported and shared, and an incident's own record of rule violations (its `audit`
//! list) is a different thing. Admins read it with `GET /api/audit` (`api/audit.rs`).
//!
//! Recording never fails the action it records: the action has already happened when it is recorded, and refusing
//! to answer would not undo it. A failed write is logged as an error and counted in
//! `commandpost_audit_failures_total`, which deployments alert on.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use serde_json::Value;

use crate::metrics::Metrics;
use crate::store::Store;

/// The actor of what the server does by itself (retention, the first admin token).
pub const SERVER_ACTOR: &str = incident_doc::schema::SERVER_NAME;

/// The actor of a command run on the server's machine (`commandpost token create`): it has the store itself, so no
/// token names it; the entry's `from` says which user ran it.
pub const CLI_ACTOR: &str = "cli";

/// One thing to record: the store's type, named here where callers build it.
pub use crate::store::AuditEvent as Event;

/// Appends `event` to the log; a failure is logged and counted, never returned (see the module documentation).
pub async fn record(store: &dyn Store, metrics: &Metrics, event: Event<'_>) {
    if let Err(error) = store.record_audit(&event).await {
        metrics.audit_failures.inc();
        tracing::error!(
            action = event.action,
            actor = event.actor,
            target = event.target,
            %error,
            "could not write to the audit log"
        );
    }
}

/// Where a request came from, for the log: the address of the peer that connected (the proxy, behind one) and,
/// when the request carries one, its `X-Forwarded-For` as sent. The header is written as the client or proxy gave
/// it, marked as such, since anyone can send it; `None` only when the server was driven without a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.to_string());
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(200).collect::<String>());
        Ok(ClientAddr(match (peer, forwarded) {
            (Some(peer), Some(forwarded)) => Some(format!("{peer} (X-Forwarded-For: {forwarded})")),
            (peer, None) => peer,
            (None, Some(forwarded)) => Some(format!("X-Forwarded-For: {forwarded}")),
        }))
    }
}

/// Records what a command run on the server's machine did, as `actor` ([`CLI_ACTOR`], or [`SERVER_ACTOR`] for
/// `serve`'s first token), from the local user. The command's work is done by then, so a failure is a warning on
/// stderr, not the command's failure.
pub async fn record_local(
    store: &dyn Store,
    actor: &str,
    action: &'static str,
    target: &str,
    detail: Value,
) {
    let event = Event {
        actor,
        action,
        target,
        detail,
        from: local_user(),
    };
    if let Err(error) = store.record_audit(&event).await {
        eprintln!("warning: the audit log could not record {action} of {target:?}: {error}");
    }
}

/// Who ran a local command: the operating system's user, as the environment names them.
fn local_user() -> Option<String> {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()?;
    Some(format!("{user} (command line)"))
}
