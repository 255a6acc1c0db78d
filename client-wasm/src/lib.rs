//! The browser client of commandpost, compiled to WebAssembly.
//!
//! The browser runs the same model as the server: [`IncidentClient`] wraps an [`incident_doc::Incident`], so every
//! edit made in the page goes through the schema's typed operations (same validation, same *last updated* stamps,
//! same commit messages) and every rendering comes from the same read model and exports. This crate only adapts
//! that model to JavaScript; it holds no schema rules of its own.
//!
//! Layout follows automerge-wasm: one `#[wasm_bindgen]` struct ([`IncidentClient`]), one error type
//! ([`ClientError`]) turned into a JavaScript `Error` in one place (`interop`), and positions converted from the
//! browser's UTF-16 offsets to the model's code points in one place ([`utf16`]). The crate is also an `rlib`, so
//! `cargo test -p client-wasm` exercises everything natively without a browser.
//!
//! Not here yet: automerge-repo's sync protocol over the browser's WebSocket (the browser-client work).

mod client;
mod error;
mod interop;
pub mod utf16;

pub use client::IncidentClient;
pub use error::ClientError;
pub use incident_doc;
