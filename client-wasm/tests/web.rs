//! The client in a real WebAssembly runtime (Node, under `wasm-bindgen-test-runner`; run by `scripts/test.sh`):
//! what native tests cannot see. Automerge takes its actor ids from the JavaScript crypto API here, frames leave
//! as `Uint8Array`s, and refusals become JavaScript `Error`s carrying the message.
#![cfg(target_arch = "wasm32")]

use client_wasm::incident_doc::{Declaration, Editor, Incident, template};
use client_wasm::{ClientError, LiveIncident};
use js_sys::{Array, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::wasm_bindgen_test;

/// 2026-11-25 10:00 UTC, in `Date.now()` form.
const NOW_MS: f64 = 1_795_600_800_000.0;
/// A well-formed incident id.
const ID: &str = "4NMNnkMhL8jXrdJ9jamS58PAVdXu";

fn saved_incident() -> Vec<u8> {
    let templates = template::builtin();
    let template = templates.first().expect("the shipped templates parse");
    let at = chrono::DateTime::from_timestamp_millis(NOW_MS as i64).expect("a valid time");
    let mut incident = Incident::create(
        template,
        &Declaration {
            name: "Checkout down".into(),
            number: Some(3),
        },
        &Editor::new("alice", at),
        None,
    )
    .expect("create");
    incident.save()
}

#[wasm_bindgen_test]
fn edits_save_and_reopen_inside_webassembly() {
    let mut live = LiveIncident::open(ID, "tab-1", Some(saved_incident())).expect("open");
    live.splice_text_utf16("summary", 0, 0, "\u{1F525} checkout", "bob", NOW_MS)
        .expect("splice");
    let cursor = live.cursor("summary", 2, None).expect("cursor");
    live.splice_text_utf16("summary", 0, 0, ">> ", "carol", NOW_MS)
        .expect("splice");
    assert_eq!(
        live.cursor_position("summary", &cursor).expect("position"),
        5
    );
    let bytes = live.save();
    let mut again = LiveIncident::open(ID, "tab-2", Some(bytes)).expect("reopen");
    assert_eq!(again.heads(), live.heads());
    assert!(
        again
            .export_doc("markdown")
            .expect("markdown")
            .contains(">> \u{1F525} checkout")
    );
    // Two replicas opened from the same bytes got distinct random actors from the JS crypto API: both edit, and
    // their changes stay distinct.
    again
        .apply(
            r#"{"op": "addTimelineEntry", "text": "rolled back"}"#,
            "dave",
            NOW_MS,
        )
        .expect("apply");
    live.apply(
        r#"{"op": "addTimelineEntry", "text": "paged"}"#,
        "erin",
        NOW_MS,
    )
    .expect("apply");
    assert_ne!(again.heads(), live.heads());
}

#[wasm_bindgen_test]
fn frames_cross_as_uint8_arrays() {
    let mut live = LiveIncident::open(ID, "tab-1", None).expect("open empty");
    assert!(!live.has_content());
    assert_eq!(live.status(), "offline");
    live.connected();
    let frames: Array = live.take_outgoing_js();
    assert_eq!(frames.length(), 1);
    let join = frames
        .get(0)
        .dyn_into::<Uint8Array>()
        .expect("a Uint8Array");
    let message = wire::decode(&join.to_vec()).expect("a protocol frame");
    assert_eq!(message.message_type(), "join");
    assert_eq!(live.take_outgoing_js().length(), 0);
}

#[wasm_bindgen_test]
fn refusals_become_javascript_errors_with_the_message() {
    let error = match LiveIncident::open("not-an-id", "tab-1", None) {
        Err(e) => JsValue::from(e),
        Ok(_) => panic!("a bad id opened"),
    };
    let error = error.dyn_into::<js_sys::Error>().expect("an Error");
    assert!(String::from(error.message()).contains("not an incident id"));
    let mut live = LiveIncident::open(ID, "tab-1", Some(saved_incident())).expect("open");
    let refused = live.apply(r#"{"op": "pin", "field": "nope"}"#, "bob", NOW_MS);
    assert!(matches!(refused, Err(ClientError::Operation(_))));
}
