//! The browser client of commandpost, compiled to WebAssembly: wraps the shared `incident-doc` model and speaks
//! automerge-repo's sync protocol over the browser's WebSocket. (The bindings arrive with the browser-client work;
//! for now the crate only ties the model into the workspace build.)

pub use incident_doc;
