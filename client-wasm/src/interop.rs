//! The one place where Rust values become JavaScript values that `wasm-bindgen` cannot derive by itself.
//!
//! Everything else crosses the boundary as strings, numbers and byte arrays (JSON for structured data), so this
//! module stays small: errors become real JavaScript `Error` objects, which keep a stack trace and show their
//! message in the console, where a thrown string would not.

use wasm_bindgen::JsValue;

use crate::ClientError;

impl From<ClientError> for JsValue {
    fn from(e: ClientError) -> JsValue {
        js_sys::Error::new(&e.to_string()).into()
    }
}
