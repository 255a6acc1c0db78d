//! The commandpost incident state document, shared by the server and the browser client.
//!
//! An incident is an Automerge document whose root map holds one key per template field (the summary under
//! `summary`, the timeline under `timeline`, …) plus a little bookkeeping: the field layout, *last updated* stamps
//! and pins. This crate owns that schema ([`schema`]), the Markdown templates documents are created from
//! ([`template`]), the typed edits ([`Operation`]), the read model ([`IncidentView`]) and the exports ([`export`]).
//!
//! It does no IO: no files, no sockets, no clock. Callers pass template text in and the current time with each
//! [`Editor`], which keeps the crate deterministic, testable, and small enough to compile to WebAssembly.
//!
//! Text positions everywhere count Unicode code points ([`schema::TEXT_ENCODING`]).

mod access;
pub mod analytics;
pub mod channel;
pub mod checkins;
mod edit;
pub mod export;
pub mod history;
mod incident;
mod operation;
mod read;
mod receive;
pub mod replay;
pub mod rules;
pub mod schema;
pub mod signals;
pub mod template;
mod touched;
pub mod update;
mod view;

pub use access::Access;
pub use edit::{Applied, Editor, MAX_SHORT_CHARS, MAX_TEXT_CHARS, OpError};
pub use incident::{Declaration, Incident, LoadError};
pub use operation::Operation;
pub use receive::{ReceiveError, Received, SyncMemo};
pub use template::{DEFAULT_TEMPLATE, Template, TemplateError};
pub use view::{
    AccessView, AuditEntry, Change, Deviation, Entry, FieldValue, FieldView, Handoff, Headline,
    IncidentView, Item, Pin, Stamp,
};
