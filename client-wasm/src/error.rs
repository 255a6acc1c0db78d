//! [`ClientError`]: why a call from JavaScript was refused.

use incident_doc::{LoadError, OpError};

use crate::utf16::PositionError;

/// Why a [`LiveIncident`](crate::LiveIncident) call failed. One small enum rather than one per method: the
/// page shows the message and keeps its state, it does not branch on the cause. Crosses into JavaScript as an
/// `Error` (see `interop`). Whatever failed, the document is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The bytes given to `load` are not an Automerge document.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The model refused the operation (unknown field, wrong kind, value out of range, …).
    #[error(transparent)]
    Operation(#[from] OpError),
    /// The operation JSON does not parse as an `Operation` (or an array of them).
    #[error("not a valid operation: {0}")]
    OperationJson(serde_json::Error),
    /// The view could not be written as JSON (not expected: the view is plain data).
    #[error("could not encode the view as JSON: {0}")]
    ViewJson(serde_json::Error),
    /// `now_ms` is not a representable moment (NaN, infinite, or out of chrono's range).
    #[error("{0} is not a valid time in milliseconds since the epoch")]
    Time(f64),
    /// A text splice named a field that holds no text in this document.
    #[error("field {0:?} holds no text")]
    NotText(String),
    /// `open` got a string that is not a document id.
    #[error("{0:?} is not an incident id: {1}")]
    DocumentId(String, wire::DocumentIdError),
    /// `exportDoc` got a format it does not make.
    #[error("unknown export format {0:?} (expected markdown, html or json)")]
    Format(String),
    /// `cursorPosition` got a string that is not a cursor of that field.
    #[error("{0:?} is not a cursor of this field")]
    Cursor(String),
    /// The presence JSON is not `{"name", "role"?, "field"?}`.
    #[error("not valid presence: {0}")]
    PresenceJson(serde_json::Error),
    /// Bytes kept on this device do not merge into the replica.
    #[error("the copy kept on this device cannot be read: {0}")]
    Kept(automerge::AutomergeError),
    /// The server sent something the protocol does not allow, or refused us; the page reconnects.
    #[error("{0}")]
    Protocol(String),
    /// A UTF-16 position does not fall on a character boundary of the field's text.
    #[error("in field {field:?}: {source}")]
    Position {
        /// The field key.
        field: String,
        /// What is wrong with the position.
        source: PositionError,
    },
}
