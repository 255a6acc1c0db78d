//! The browser client of commandpost, compiled to WebAssembly.
//!
//! The browser runs the same model as the server: [`LiveIncident`] wraps an [`incident_doc::Incident`], so every
//! edit made in the page goes through the schema's typed operations (same validation, same *last updated* stamps,
//! same commit messages) and every rendering comes from the same read model and exports. It also speaks
//! automerge-repo's protocol with the server through the server's own codec (`wire`), and carries presence. This
//! crate adapts those to JavaScript; it holds no schema rules and does no I/O of its own: the page owns the
//! WebSocket, timers and IndexedDB (see `docs/web-client.md`).
//!
//! Layout follows automerge-wasm: one `#[wasm_bindgen]` struct ([`LiveIncident`]), one error type
//! ([`ClientError`]) turned into a JavaScript `Error` in one place (`interop`), positions converted from the
//! browser's UTF-16 offsets to the model's code points in one place ([`utf16`]), and the protocol ([`link`]) and
//! presence ([`presence`]) as plain state machines. The crate is also an `rlib`, so `cargo test -p client-wasm`
//! exercises everything natively; `tests/web.rs` runs under `wasm-bindgen-test` to check the JavaScript boundary.

mod error;
mod history;
mod interop;
pub mod link;
mod live;
pub mod presence;
pub mod utf16;

pub use error::ClientError;
pub use incident_doc;
pub use live::LiveIncident;
