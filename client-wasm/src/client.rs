//! [`IncidentClient`]: the one object the page holds per open incident.

use automerge::{ObjType, ROOT, ReadDoc, Value};
use chrono::{DateTime, Utc};
use incident_doc::{Editor, Incident, Operation, export};
use wasm_bindgen::prelude::wasm_bindgen;

use crate::ClientError;
use crate::utf16;

/// An incident document open in the browser. JavaScript sees it as `IncidentClient` with camelCase methods;
/// structured data crosses as JSON strings (the same shapes as the HTTP API), documents as `Uint8Array`s.
///
/// The page passes the editor's name and `Date.now()` with every edit because the model reads no clock: that keeps
/// the model deterministic, and makes the stamp say what the editor saw.
#[wasm_bindgen]
#[derive(Debug)]
pub struct IncidentClient {
    /// The document; every edit goes through its typed operations, so the browser enforces the schema's rules
    /// exactly as the server does.
    incident: Incident,
}

#[wasm_bindgen]
impl IncidentClient {
    /// Opens a saved document (as served by the server or kept in IndexedDB). Throws if the bytes are not an
    /// Automerge document.
    pub fn load(bytes: &[u8]) -> Result<IncidentClient, ClientError> {
        Ok(IncidentClient {
            incident: Incident::load(bytes)?,
        })
    }

    /// The whole incident as the `IncidentView` JSON (the documented JSON export, compact): what the page renders.
    #[wasm_bindgen(js_name = viewJson)]
    pub fn view_json(&self) -> Result<String, ClientError> {
        serde_json::to_string(&self.incident.view()).map_err(ClientError::ViewJson)
    }

    /// The Markdown export, byte for byte what the server exports for the same document.
    pub fn markdown(&self) -> String {
        export::markdown(&self.incident.view())
    }

    /// Applies an `Operation` in its JSON form (`{"op": "addItem", …}`), or a JSON array of them applied all
    /// together or not at all, as one change by `editor_name` at `now_ms` (milliseconds since the epoch, as
    /// `Date.now()` gives). Returns the JSON array `[{"id": …}, …]` with one entry per operation (the id of the
    /// item or entry it created, or `null`), the shape of the HTTP API's `applied`. Throws, changing nothing, when
    /// the JSON is not an operation or the model refuses it. Text positions in a `spliceText` here count code
    /// points; use [`IncidentClient::splice_text_utf16`] for offsets taken from the browser.
    pub fn apply(
        &mut self,
        op_json: &str,
        editor_name: &str,
        now_ms: f64,
    ) -> Result<String, ClientError> {
        let editor = editor(editor_name, now_ms)?;
        let value: serde_json::Value =
            serde_json::from_str(op_json).map_err(ClientError::OperationJson)?;
        // Parsed in two steps rather than through an untagged enum, so a bad operation gets serde's precise message.
        let ops: Vec<Operation> = if value.is_array() {
            serde_json::from_value(value)
        } else {
            serde_json::from_value(value).map(|op| vec![op])
        }
        .map_err(ClientError::OperationJson)?;
        let applied = self.incident.apply_all(&ops, &editor)?;
        serde_json::to_string(&applied).map_err(ClientError::OperationJson)
    }

    /// Splices a text or markdown field with positions in UTF-16 code units, as a `<textarea>` or `InputEvent`
    /// reports them: deletes `utf16_delete` units at `utf16_pos`, then inserts `insert`. The positions are converted
    /// to the model's code points against the field's current text, here and nowhere else (see [`utf16`]). Throws,
    /// changing nothing, when a position splits a surrogate pair or lies past the end.
    #[wasm_bindgen(js_name = spliceTextUtf16)]
    pub fn splice_text_utf16(
        &mut self,
        field: &str,
        utf16_pos: usize,
        utf16_delete: usize,
        insert: &str,
        editor_name: &str,
        now_ms: f64,
    ) -> Result<(), ClientError> {
        let editor = editor(editor_name, now_ms)?;
        let text = self.field_text(field)?;
        let (pos, delete) = utf16::splice_range_from_utf16(&text, utf16_pos, utf16_delete)
            .map_err(|source| ClientError::Position {
                field: field.to_owned(),
                source,
            })?;
        let op = Operation::SpliceText {
            field: field.to_owned(),
            pos,
            delete,
            insert: insert.to_owned(),
        };
        self.incident.apply(&op, &editor)?;
        Ok(())
    }

    /// The full document with its history, compressed: for IndexedDB, or to hand to a new tab.
    pub fn save(&mut self) -> Vec<u8> {
        self.incident.save()
    }

    /// The document's current heads as hex change hashes: what the page shows as a version, and what point-in-time
    /// views and sync start from.
    pub fn heads(&mut self) -> Vec<String> {
        self.incident
            .doc_mut()
            .get_heads()
            .iter()
            .map(ToString::to_string)
            .collect()
    }
}

impl IncidentClient {
    /// Wraps a document already in memory (Rust callers and tests; JavaScript starts from [`IncidentClient::load`]).
    pub fn from_incident(incident: Incident) -> IncidentClient {
        IncidentClient { incident }
    }

    /// The current text of `field`, read directly rather than through the whole view, since it runs per keystroke.
    fn field_text(&self, field: &str) -> Result<String, ClientError> {
        let doc = self.incident.doc();
        match doc.get(ROOT, field) {
            Ok(Some((Value::Object(ObjType::Text), id))) => doc
                .text(&id)
                .map_err(|_| ClientError::NotText(field.to_owned())),
            _ => Err(ClientError::NotText(field.to_owned())),
        }
    }
}

/// The editor of one call: the name the page passes and its clock, as an [`Editor`].
fn editor(name: &str, now_ms: f64) -> Result<Editor, ClientError> {
    let at = if now_ms.is_finite() {
        // `as` saturates; out-of-range values are then refused by chrono.
        DateTime::<Utc>::from_timestamp_millis(now_ms as i64)
    } else {
        None
    };
    at.map(|at| Editor::new(name, at))
        .ok_or(ClientError::Time(now_ms))
}

#[cfg(test)]
mod tests {
    use incident_doc::{Declaration, FieldValue, IncidentView, OpError, template};

    use super::*;

    /// 2026-11-25 10:00 UTC, in `Date.now()` form.
    const NOW_MS: f64 = 1_795_600_800_000.0;

    fn client() -> IncidentClient {
        let Some(template) = template::builtin().into_iter().next() else {
            panic!("the shipped templates parse");
        };
        let declaration = Declaration {
            name: "Checkout down".into(),
            number: Some(7),
        };
        let Ok(editor) = editor("alice", NOW_MS) else {
            panic!("a valid time");
        };
        match Incident::create(&template, &declaration, &editor, None) {
            Ok(incident) => IncidentClient::from_incident(incident),
            Err(e) => panic!("create: {e}"),
        }
    }

    fn view(c: &IncidentClient) -> IncidentView {
        match c.view_json().map(|j| serde_json::from_str(&j)) {
            Ok(Ok(v)) => v,
            other => panic!("view_json: {other:?}"),
        }
    }

    fn summary(c: &IncidentClient) -> String {
        match view(c).field("summary").map(|f| &f.value) {
            Some(FieldValue::Text(s)) => s.clone(),
            other => panic!("summary: {other:?}"),
        }
    }

    fn set_summary(c: &mut IncidentClient, text: &str) {
        let op = serde_json::json!({"op": "setText", "field": "summary", "text": text}).to_string();
        if let Err(e) = c.apply(&op, "alice", NOW_MS) {
            panic!("setText: {e}");
        }
    }

    #[test]
    fn splices_at_utf16_offsets_after_an_emoji() {
        let mut c = client();
        set_summary(&mut c, "\u{1F525} fire e\u{301}");
        // In JavaScript "🔥 fire é".indexOf("fire") is 3 (🔥 is two units); in code points it is 2.
        let done = c.splice_text_utf16("summary", 3, 4, "smoke", "bob", NOW_MS);
        assert!(done.is_ok(), "{done:?}");
        assert_eq!(summary(&c), "\u{1F525} smoke e\u{301}");
        // Delete only the combining mark at the end: UTF-16 offset 10 ("🔥" is 2 units, " smoke " 7, "e" 1).
        let done = c.splice_text_utf16("summary", 10, 1, "", "bob", NOW_MS);
        assert!(done.is_ok(), "{done:?}");
        assert_eq!(summary(&c), "\u{1F525} smoke e");
    }

    #[test]
    fn a_splice_inside_a_surrogate_pair_changes_nothing() {
        let mut c = client();
        set_summary(&mut c, "\u{1F525}!");
        let heads = c.heads();
        let err = c.splice_text_utf16("summary", 1, 0, "x", "bob", NOW_MS);
        assert!(
            matches!(err, Err(ClientError::Position { ref field, .. }) if field == "summary"),
            "{err:?}"
        );
        assert_eq!(c.heads(), heads);
        let err = c.splice_text_utf16("severity", 0, 0, "x", "bob", NOW_MS);
        assert!(matches!(err, Err(ClientError::NotText(_))), "{err:?}");
    }

    #[test]
    fn apply_takes_one_operation_or_an_atomic_array() {
        let mut c = client();
        let one = c.apply(
            r#"{"op": "addItem", "field": "todos", "text": "Roll back"}"#,
            "alice",
            NOW_MS,
        );
        let Ok(one) = one else {
            panic!("addItem: {one:?}");
        };
        let applied: serde_json::Value = serde_json::from_str(&one).unwrap_or_default();
        assert!(applied[0]["id"].is_string(), "{one}");

        let many = c.apply(
            r#"[{"op": "setChoice", "field": "severity", "value": "SEV1"}, {"op": "pin", "field": "summary"}]"#,
            "alice",
            NOW_MS,
        );
        assert_eq!(many.ok().as_deref(), Some(r#"[{"id":null},{"id":null}]"#));
        assert_eq!(view(&c).headline.severity.as_deref(), Some("SEV1"));

        // The second operation is refused, so the first does not happen either.
        let heads = c.heads();
        let refused = c.apply(
            r#"[{"op": "setChoice", "field": "severity", "value": "SEV2"}, {"op": "pin", "field": "nope"}]"#,
            "alice",
            NOW_MS,
        );
        assert!(
            matches!(
                refused,
                Err(ClientError::Operation(OpError::UnknownField(_)))
            ),
            "{refused:?}"
        );
        assert_eq!(c.heads(), heads);

        let bad = c.apply(r#"{"op": "launchRockets"}"#, "alice", NOW_MS);
        assert!(matches!(bad, Err(ClientError::OperationJson(_))), "{bad:?}");
        let bad_time = c.apply(r#"{"op": "pin", "field": "summary"}"#, "alice", f64::NAN);
        assert!(
            matches!(bad_time, Err(ClientError::Time(_))),
            "{bad_time:?}"
        );
    }

    #[test]
    fn save_load_round_trips_with_the_same_heads_and_exports() {
        let mut c = client();
        set_summary(&mut c, "Payments \u{1F4B3} failing");
        let bytes = c.save();
        let Ok(mut loaded) = IncidentClient::load(&bytes) else {
            panic!("load");
        };
        assert_eq!(loaded.heads(), c.heads());
        assert_eq!(loaded.heads().len(), 1);
        assert_eq!(loaded.heads()[0].len(), 64);
        assert_eq!(loaded.markdown(), c.markdown());
        assert!(loaded.markdown().contains("Payments \u{1F4B3} failing"));
        assert!(matches!(
            IncidentClient::load(b"not automerge"),
            Err(ClientError::Load(_))
        ));
    }
}
