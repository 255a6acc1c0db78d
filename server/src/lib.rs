//! The commandpost server: hosts live incident documents over automerge-repo's sync protocol, with an HTTP API,
//! token auth and pluggable storage.

pub mod auth;
pub mod store;
pub mod wire;
