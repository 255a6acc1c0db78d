//! [`LiveIncident`]: the one object the page holds per open incident: the document, its link to the server and
//! presence.

use automerge::{AutoCommit, ObjId, ROOT, ReadDoc};
use chrono::{DateTime, Utc};
use incident_doc::{Editor, Incident, Operation, export};
use wasm_bindgen::prelude::wasm_bindgen;
use wire::peer::Changed;
use wire::{DocumentId, PeerId};

use crate::ClientError;
use crate::history::{History, Splice};
use crate::link::Link;
use crate::presence::{Presence, PresenceInfo};
use crate::utf16;

/// An incident open in the browser. JavaScript sees it as `LiveIncident` with camelCase methods; structured data
/// crosses as JSON strings (the same shapes as the HTTP API), documents and frames as `Uint8Array`s. It does no
/// I/O: the page passes in frames, times and random numbers, and sends what [`LiveIncident::take_outgoing`] gives.
///
/// The page passes the editor's name and `Date.now()` with every edit because the model reads no clock: that keeps
/// the model deterministic, and makes the stamp say what the editor saw.
///
/// The text methods (`spliceTextUtf16`, `undo`, `redo`, `text`, `cursor`, `cursorPosition`) name their text by a
/// *text address* in `field`: a text or markdown field's key, or `field/item` for the text of one checklist item,
/// so an item's text is co-edited, anchored and undone exactly as a field's.
#[wasm_bindgen]
#[derive(Debug)]
pub struct LiveIncident {
    /// The document; every edit goes through its typed operations, so the browser enforces the schema's rules
    /// exactly as the server does.
    incident: Incident,
    /// The protocol with the server.
    link: Link,
    /// Who else is here.
    presence: Presence,
    /// Why the server last reverted one of our changes (a command rule), until the page reads it.
    refused: Option<String>,
    /// This tab's own text edits, for undo and redo.
    history: History,
}

#[wasm_bindgen]
impl LiveIncident {
    /// Opens incident `document_id` as peer `peer_id` (one per tab), from bytes saved earlier (IndexedDB) or, with
    /// none, as an empty replica that fills at the first sync. Throws if the id or the bytes are invalid.
    pub fn open(
        document_id: &str,
        peer_id: &str,
        saved: Option<Vec<u8>>,
    ) -> Result<LiveIncident, ClientError> {
        let document: DocumentId = document_id
            .parse()
            .map_err(|e| ClientError::DocumentId(document_id.to_owned(), e))?;
        let incident = match saved {
            Some(bytes) => Incident::load(&bytes)?,
            None => Incident::empty(None),
        };
        Ok(LiveIncident::with_incident(incident, document, peer_id))
    }

    /// Whether the replica holds the incident yet (a fresh empty replica does not until the first sync).
    #[wasm_bindgen(js_name = hasContent)]
    pub fn has_content(&mut self) -> bool {
        !self.incident.doc_mut().get_heads().is_empty()
    }

    /// The whole incident as the `IncidentView` JSON (the documented JSON export, compact): what the page renders.
    #[wasm_bindgen(js_name = viewJson)]
    pub fn view_json(&self) -> Result<String, ClientError> {
        serde_json::to_string(&self.incident.view()).map_err(ClientError::ViewJson)
    }

    /// An export, byte for byte what the server exports for the same document: `markdown`, `html` or `json`.
    /// Made here rather than fetched so that it also works offline.
    #[wasm_bindgen(js_name = exportDoc)]
    pub fn export_doc(&self, format: &str) -> Result<String, ClientError> {
        let view = self.incident.view();
        match format {
            "markdown" => Ok(export::markdown(&view)),
            "html" => Ok(export::html(&view)),
            "json" => Ok(export::json(&view)),
            other => Err(ClientError::Format(other.to_owned())),
        }
    }

    /// Applies an `Operation` in its JSON form (`{"op": "addItem", …}`), or a JSON array of them applied all
    /// together or not at all, as one change by `editor_name` at `now_ms` (milliseconds since the epoch, as
    /// `Date.now()` gives). Returns the JSON array `[{"id": …}, …]` with one entry per operation (the id of the
    /// item or entry it created, or `null`), the shape of the HTTP API's `applied`. Throws, changing nothing, when
    /// the JSON is not an operation or the model refuses it. Text positions in a `spliceText` here count code
    /// points; use [`LiveIncident::splice_text_utf16`] for offsets taken from the browser.
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
        self.link.flush(self.incident.doc_mut());
        serde_json::to_string(&applied).map_err(ClientError::OperationJson)
    }

    /// Splices a text (a field's or a checklist item's) with positions in UTF-16 code units, as a `<textarea>` or `InputEvent`
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
        let text = self.text(field)?;
        let (pos, delete) = utf16::splice_range_from_utf16(&text, utf16_pos, utf16_delete)
            .map_err(|source| ClientError::Position {
                field: field.to_owned(),
                source,
            })?;
        let at = self.caret_cursor(field, pos)?;
        let deleted: String = text.chars().skip(pos).take(delete).collect();
        let deleted_ids = self.char_cursors(field, pos, delete)?;
        self.incident
            .apply(&splice_op(field, pos, delete, insert), &editor)?;
        self.link.flush(self.incident.doc_mut());
        let inserted = self.char_cursors(field, pos, insert.chars().count())?;
        let splice = Splice {
            at,
            deleted,
            deleted_ids,
            inserted,
        };
        self.history.record(field, splice, now_ms);
        Ok(())
    }

    /// Undoes this tab's last step of edits in a text (keystrokes typed in one go, or one
    /// deletion): removes the characters it inserted that are still there and puts back what it deleted, leaving
    /// everyone else's edits alone, made afresh by `editor_name` through the model like any edit. Returns where the
    /// caret goes (a UTF-16 offset), or `undefined` when there is nothing to undo.
    pub fn undo(
        &mut self,
        field: &str,
        editor_name: &str,
        now_ms: f64,
    ) -> Result<Option<usize>, ClientError> {
        let Some(step) = self.history.take_undo(field) else {
            return Ok(None);
        };
        let (inverse, caret) = self.invert(field, step, &editor(editor_name, now_ms)?)?;
        self.history.undone(field, inverse);
        Ok(Some(caret))
    }

    /// Redoes the step [`LiveIncident::undo`] last undid in the field. Returns where the caret goes, or
    /// `undefined` when there is nothing to redo (a new edit in the field forgets what was undone).
    pub fn redo(
        &mut self,
        field: &str,
        editor_name: &str,
        now_ms: f64,
    ) -> Result<Option<usize>, ClientError> {
        let Some(step) = self.history.take_redo(field) else {
            return Ok(None);
        };
        let (inverse, caret) = self.invert(field, step, &editor(editor_name, now_ms)?)?;
        self.history.redone(field, inverse);
        Ok(Some(caret))
    }

    /// The current text at a text address, read directly rather than through the whole view, since the
    /// page reads it per keystroke.
    pub fn text(&self, field: &str) -> Result<String, ClientError> {
        let (doc, obj) = self.text_obj(field)?;
        doc.text(&obj)
            .map_err(|_| ClientError::NotText(field.to_owned()))
    }

    /// A stable address for the caret at UTF-16 offset `utf16_pos` of a text field: it follows its character
    /// through remote edits, which is how the caret stays put while others type in the field. It is anchored to
    /// the character before the caret (see [`utf16::caret_cursor`]), so text others type at the same spot goes
    /// after it and our next keystroke stays with our own. With `selection_start` true, it is the start of a
    /// non-empty selection instead, anchored to the first selected character
    /// ([`utf16::selection_start_cursor`]), so that what others type at either end of a selection stays outside
    /// it. Every caret and selection end the page keeps, restores or shows to others is one of these.
    pub fn cursor(
        &self,
        field: &str,
        utf16_pos: usize,
        selection_start: Option<bool>,
    ) -> Result<String, ClientError> {
        let text = self.text(field)?;
        let pos = utf16::code_points_from_utf16(&text, utf16_pos).map_err(|source| {
            ClientError::Position {
                field: field.to_owned(),
                source,
            }
        })?;
        if selection_start == Some(true) && pos < text.chars().count() {
            let (doc, obj) = self.text_obj(field)?;
            return utf16::selection_start_cursor(doc, &obj, pos)
                .map(|c| c.to_string())
                .map_err(|_| ClientError::NotText(field.to_owned()));
        }
        self.caret_cursor(field, pos).map(|c| c.to_string())
    }

    /// Where a cursor from [`LiveIncident::cursor`] (ours or another tab's) is now, as a UTF-16 offset. Throws on
    /// a cursor that is not one of this field's, or names a change this replica has not received yet.
    #[wasm_bindgen(js_name = cursorPosition)]
    pub fn cursor_position(&self, field: &str, cursor: &str) -> Result<usize, ClientError> {
        let parsed = automerge::Cursor::try_from(cursor)
            .map_err(|_| ClientError::Cursor(cursor.to_owned()))?;
        let (doc, obj) = self.text_obj(field)?;
        let pos = utf16::caret_position(doc, &obj, &parsed)
            .map_err(|_| ClientError::Cursor(cursor.to_owned()))?;
        Ok(utf16::utf16_from_code_points(&self.text(field)?, pos))
    }

    /// The full document with its history, compressed: for IndexedDB, or to hand to a new tab.
    pub fn save(&mut self) -> Vec<u8> {
        self.incident.save()
    }

    /// The changes made or received since the last `save` or `saveIncremental` (empty when there are none): cheap
    /// enough to write to IndexedDB after every keystroke, so an edit is on the device moments after it is made.
    #[wasm_bindgen(js_name = saveIncremental)]
    pub fn save_incremental(&mut self) -> Vec<u8> {
        self.incident.doc_mut().save_incremental()
    }

    /// Merges bytes kept on this device (from `saveIncremental` or `save`) into the replica, before rendering.
    /// Applying changes the replica already has is harmless.
    #[wasm_bindgen(js_name = loadIncremental)]
    pub fn load_incremental(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.incident
            .doc_mut()
            .load_incremental(bytes)
            .map(|_| ())
            .map_err(ClientError::Kept)
    }

    /// The document's current heads as hex change hashes: what the page shows as a version.
    pub fn heads(&mut self) -> Vec<String> {
        self.incident
            .doc_mut()
            .get_heads()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The page's socket opened: the handshake starts.
    pub fn connected(&mut self) {
        self.presence.reset();
        self.link.connected();
    }

    /// The page's socket closed: returns how many milliseconds to wait before reconnecting (`random01` from
    /// `Math.random()` spreads a war room's reconnects).
    pub fn disconnected(&mut self, _now_ms: f64, random01: f64) -> f64 {
        self.presence.reset();
        self.link.disconnected(random01)
    }

    /// Handles one binary frame from the server; returns what changed, for the page to re-render: top-level
    /// document keys (field keys, `pins`, `updated`, …) and `"@presence"`. Throws on a protocol error (the page
    /// then closes the socket and reconnects); the document is unchanged by a refused frame.
    pub fn receive(&mut self, frame: &[u8], now_ms: f64) -> Result<Vec<String>, ClientError> {
        let received = self.link.receive(frame, self.incident.doc_mut())?;
        let mut changed = Vec::new();
        if let Some(Changed { before, after }) = received.changed {
            changed = changed_keys(self.incident.doc_mut(), &before, &after);
        }
        // Only the server speaks for the server: a refusal counts when it came under the server's peer id, and
        // what other peers send is presence at most.
        if let Some(reason) = received
            .notice
            .as_deref()
            .and_then(|notice| wire::map_text(notice, wire::REFUSED_KEY))
        {
            self.refused = Some(reason);
            changed.push(REFUSED_KEY.to_owned());
        }
        if let Some((peer, payload)) = received.ephemeral
            && self.presence.heard(peer, &payload, now_ms)
        {
            changed.push(PRESENCE_KEY.to_owned());
        }
        self.send_presence(now_ms);
        Ok(changed)
    }

    /// The frames to send now, in order; call after every other method.
    #[wasm_bindgen(js_name = takeOutgoing)]
    pub fn take_outgoing_js(&mut self) -> js_sys::Array {
        self.take_outgoing()
            .into_iter()
            .map(|frame| js_sys::Uint8Array::from(frame.as_slice()))
            .collect()
    }

    /// Why the server reverted our last refused change (a command rule: only the commander changes roles and
    /// pins, …), once; `undefined` when there is nothing new to tell.
    #[wasm_bindgen(js_name = takeRefusal)]
    pub fn take_refusal(&mut self) -> Option<String> {
        self.refused.take()
    }

    /// `offline`, `connecting`, `syncing` or `synced` (the server holds every local change, durably).
    pub fn status(&mut self) -> String {
        self.link
            .status(self.incident.doc_mut())
            .as_str()
            .to_owned()
    }

    /// The last protocol error, if the last connection ended in one.
    #[wasm_bindgen(js_name = lastError)]
    pub fn last_error(&self) -> Option<String> {
        self.link.last_error().map(str::to_owned)
    }

    /// Sets what this tab says about itself, `{"name", "role", "field", "caret"?, "anchor"?}` as JSON (the caret
    /// and the selection's other end as [`LiveIncident::cursor`]s of the field); sent now if connected, and
    /// repeated by [`LiveIncident::tick`].
    #[wasm_bindgen(js_name = setPresence)]
    pub fn set_presence(&mut self, json: &str, now_ms: f64) -> Result<(), ClientError> {
        let info: PresenceInfo = serde_json::from_str(json).map_err(ClientError::PresenceJson)?;
        self.presence.set(info);
        self.send_presence(now_ms);
        Ok(())
    }

    /// The tab is closing (`pagehide`) or leaving the incident: queues the message that takes us off the other
    /// tabs' lists at once, rather than after their expiry. Send it with [`LiveIncident::take_outgoing_js`] right
    /// away, while the socket is still open.
    pub fn leave(&mut self) {
        if !self.link.joined() {
            return;
        }
        if let Some((session, count, payload)) = self.presence.leave() {
            self.link.broadcast(&session, count, payload);
        }
    }

    /// Periodic upkeep (every few seconds): repeats our presence when due and drops silent peers. Returns whether
    /// the presence list changed.
    pub fn tick(&mut self, now_ms: f64) -> bool {
        self.send_presence(now_ms);
        self.presence.expire(now_ms)
    }

    /// The other tabs on this incident as JSON: `[{"peer", "name", "role", "field", "seenMs"}]`, sorted by name.
    #[wasm_bindgen(js_name = presenceJson)]
    pub fn presence_json(&mut self, now_ms: f64) -> String {
        self.presence.expire(now_ms);
        serde_json::to_string(&self.presence.peers()).unwrap_or_else(|_| "[]".to_owned())
    }
}

/// The key `receive` reports when the presence list changed; `@` cannot start a template field key.
const PRESENCE_KEY: &str = "@presence";
/// The key `receive` reports when the server reverted one of our changes; `takeRefusal` says why.
const REFUSED_KEY: &str = "@refused";

impl LiveIncident {
    /// A live incident around a document already in memory (Rust callers and tests; JavaScript uses `open`).
    pub fn with_incident(incident: Incident, document: DocumentId, peer_id: &str) -> LiveIncident {
        LiveIncident {
            incident,
            link: Link::new(PeerId::from(peer_id), document),
            presence: Presence::new(peer_id.to_owned()),
            refused: None,
            history: History::default(),
        }
    }

    /// This tab's peer id, as the server knows it.
    pub fn link_peer(&self) -> String {
        self.link.peer().to_string()
    }

    /// The frames to send now, in order (the Rust form of `takeOutgoing`).
    pub fn take_outgoing(&mut self) -> Vec<Vec<u8>> {
        self.link.take_outgoing()
    }

    /// Queues our presence if it is new or its heartbeat is due, once joined.
    fn send_presence(&mut self, now_ms: f64) {
        if !self.link.joined() {
            return;
        }
        if let Some((session, count, payload)) = self.presence.due(now_ms) {
            self.link.broadcast(&session, count, payload);
        }
    }

    /// The caret cursor at code point `pos` of a text field.
    fn caret_cursor(&self, field: &str, pos: usize) -> Result<automerge::Cursor, ClientError> {
        let (doc, obj) = self.text_obj(field)?;
        utf16::caret_cursor(doc, &obj, pos).map_err(|_| ClientError::NotText(field.to_owned()))
    }

    /// A cursor on each of the `count` characters from code point `pos` of a text field.
    fn char_cursors(
        &self,
        field: &str,
        pos: usize,
        count: usize,
    ) -> Result<Vec<automerge::Cursor>, ClientError> {
        let (doc, obj) = self.text_obj(field)?;
        (pos..pos + count)
            .map(|i| doc.get_cursor(&obj, i, None))
            .collect::<Result<_, _>>()
            .map_err(|_| ClientError::NotText(field.to_owned()))
    }

    /// Applies the inverse of `step` (its splices undone last first): deletes the characters each inserted that are
    /// still there and re-inserts what it deleted at its caret cursor. Returns the inverse's own record, for the
    /// opposite stack, and where the caret goes (UTF-16).
    fn invert(
        &mut self,
        field: &str,
        step: Vec<Splice>,
        editor: &Editor,
    ) -> Result<(Vec<Splice>, usize), ClientError> {
        let mut step = step;
        let mut inverse: Vec<Splice> = Vec::with_capacity(step.len());
        let mut caret = 0;
        while let Some(splice) = step.pop() {
            let (doc, obj) = self.text_obj(field)?;
            let text: Vec<char> = doc
                .text(&obj)
                .map_err(|_| ClientError::NotText(field.to_owned()))?
                .chars()
                .collect();
            // Our characters still there, by their index now; someone else may have deleted some.
            let mut ours = Vec::with_capacity(splice.inserted.len());
            for cursor in &splice.inserted {
                let index = doc.get_cursor_position(&obj, cursor, None).ok();
                if let Some(index) = index.filter(|&i| {
                    i < text.len() && doc.get_cursor(&obj, i, None).ok().as_ref() == Some(cursor)
                }) {
                    ours.push((index, cursor.clone()));
                }
            }
            ours.sort_unstable_by_key(|(i, _)| *i);
            let at = utf16::caret_position(doc, &obj, &splice.at)
                .map_err(|_| ClientError::NotText(field.to_owned()))?;
            let at = at - ours.iter().filter(|(i, _)| *i < at).count();
            let removed: String = ours.iter().map(|(i, _)| text[*i]).collect();
            // Runs of adjacent indices, deleted from the last so the earlier indices still hold.
            let mut ops = Vec::new();
            let mut runs: Vec<(usize, usize)> = Vec::new();
            for (i, _) in &ours {
                match runs.last_mut() {
                    Some((start, len)) if *start + *len == *i => *len += 1,
                    _ => runs.push((*i, 1)),
                }
            }
            for &(pos, delete) in runs.iter().rev() {
                ops.push(splice_op(field, pos, delete, ""));
            }
            if !splice.deleted.is_empty() {
                ops.push(splice_op(field, at, 0, &splice.deleted));
            }
            if !ops.is_empty() {
                self.incident.apply_all(&ops, editor)?;
                self.link.flush(self.incident.doc_mut());
            }
            let reinserted = self.char_cursors(field, at, splice.deleted.chars().count())?;
            let moved: Vec<(automerge::Cursor, automerge::Cursor)> = splice
                .deleted_ids
                .into_iter()
                .zip(reinserted.iter().cloned())
                .collect();
            self.history.remap(field, &moved);
            for other in step.iter_mut().chain(&mut inverse) {
                other.remap(&moved);
            }
            caret = utf16::utf16_from_code_points(&self.text(field)?, at + reinserted.len());
            inverse.push(Splice {
                at: self.caret_cursor(field, at)?,
                deleted: removed,
                deleted_ids: ours.into_iter().map(|(_, c)| c).collect(),
                inserted: reinserted,
            });
        }
        // Kept in the order made here: inverting it again takes the last made first.
        Ok((inverse, caret))
    }

    /// The document and the Text object at a text address.
    fn text_obj(&self, address: &str) -> Result<(&AutoCommit, ObjId), ClientError> {
        let (field, item) = split_address(address);
        self.incident
            .text_object(field, item)
            .map(|obj| (self.incident.doc(), obj))
            .ok_or_else(|| ClientError::NotText(address.to_owned()))
    }
}

/// Splits a text address, the name every text method here takes for the text it works on: a text or markdown
/// field's key (`summary`), or `field/item` for the text of one item of a checklist field (`actions/7@4f…`).
/// Field keys are letters and digits, so the first `/` ends the key.
fn split_address(address: &str) -> (&str, Option<&str>) {
    match address.split_once('/') {
        Some((field, item)) => (field, Some(item)),
        None => (address, None),
    }
}

/// The top-level keys a remote change touched, so the page re-renders only those sections. A replica filling
/// from nothing reports every key without diffing (the first sync of a long incident would otherwise diff its
/// whole history).
fn changed_keys(
    doc: &mut AutoCommit,
    before: &[automerge::ChangeHash],
    after: &[automerge::ChangeHash],
) -> Vec<String> {
    let mut keys: Vec<String> = if before.is_empty() {
        doc.keys(ROOT).collect()
    } else {
        doc.diff(before, after)
            .into_iter()
            .filter_map(|patch| match (patch.path.first(), patch.action) {
                (Some((_, automerge::Prop::Map(key))), _) => Some(key.clone()),
                (
                    None,
                    automerge::PatchAction::PutMap { key, .. }
                    | automerge::PatchAction::DeleteMap { key },
                ) => Some(key),
                _ => None,
            })
            .collect()
    };
    keys.sort();
    keys.dedup();
    keys
}

/// A `spliceText` operation of the text at `address`, at code-point positions.
fn splice_op(address: &str, pos: usize, delete: usize, insert: &str) -> Operation {
    let (field, item) = split_address(address);
    Operation::SpliceText {
        field: field.to_owned(),
        item: item.map(str::to_owned),
        pos,
        delete,
        insert: insert.to_owned(),
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

    fn client() -> LiveIncident {
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
            Ok(incident) => {
                LiveIncident::with_incident(incident, DocumentId::from_bytes([7; 16]), "tab-1")
            }
            Err(e) => panic!("create: {e}"),
        }
    }

    fn view(c: &LiveIncident) -> IncidentView {
        match c.view_json().map(|j| serde_json::from_str(&j)) {
            Ok(Ok(v)) => v,
            other => panic!("view_json: {other:?}"),
        }
    }

    fn summary(c: &LiveIncident) -> String {
        match view(c).field("summary").map(|f| &f.value) {
            Some(FieldValue::Text(s)) => s.clone(),
            other => panic!("summary: {other:?}"),
        }
    }

    fn set_summary(c: &mut LiveIncident, text: &str) {
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
    fn save_open_round_trips_with_the_same_heads_and_exports() {
        let mut c = client();
        set_summary(&mut c, "Payments \u{1F4B3} failing");
        let bytes = c.save();
        let id = DocumentId::from_bytes([7; 16]).to_string();
        let Ok(mut loaded) = LiveIncident::open(&id, "tab-2", Some(bytes)) else {
            panic!("open");
        };
        assert_eq!(loaded.heads(), c.heads());
        assert_eq!(loaded.heads().len(), 1);
        assert_eq!(loaded.heads()[0].len(), 64);
        for format in ["markdown", "html", "json"] {
            assert_eq!(loaded.export_doc(format).ok(), c.export_doc(format).ok());
        }
        assert!(matches!(
            loaded.export_doc("pdf"),
            Err(ClientError::Format(_))
        ));
        assert!(
            loaded
                .export_doc("markdown")
                .is_ok_and(|md| md.contains("Payments \u{1F4B3} failing"))
        );
        assert!(matches!(
            LiveIncident::open(&id, "tab-3", Some(b"not automerge".to_vec())),
            Err(ClientError::Load(_))
        ));
        assert!(matches!(
            LiveIncident::open("nope", "tab-3", None),
            Err(ClientError::DocumentId(..))
        ));
    }

    #[test]
    fn incremental_saves_rebuild_the_replica() {
        let mut a = client();
        let id = DocumentId::from_bytes([7; 16]).to_string();
        let snapshot = a.save();
        assert!(a.save_incremental().is_empty());
        set_summary(&mut a, "one");
        let first = a.save_incremental();
        assert!(
            a.splice_text_utf16("summary", 3, 0, " two", "bob", NOW_MS)
                .is_ok()
        );
        let second = a.save_incremental();
        assert!(!first.is_empty() && !second.is_empty());
        let Ok(mut b) = LiveIncident::open(&id, "tab-2", Some(snapshot)) else {
            panic!("open");
        };
        // Kept chunks may come back in any order and more than once.
        for chunk in [&second, &first, &second] {
            assert!(b.load_incremental(chunk).is_ok());
        }
        assert_eq!(b.heads(), a.heads());
        assert_eq!(b.text("summary").ok().as_deref(), Some("one two"));
    }

    #[test]
    fn a_cursor_keeps_the_caret_on_its_character_through_remote_edits() {
        let mut a = client();
        set_summary(&mut a, "\u{1F525} fire spreading");
        let id = DocumentId::from_bytes([7; 16]).to_string();
        let Ok(mut b) = LiveIncident::open(&id, "tab-2", Some(a.save())) else {
            panic!("open");
        };
        // A's caret sits before "spreading" (UTF-16 offset 8: the emoji is two units) and at the very end.
        let (Ok(mid), Ok(end)) = (a.cursor("summary", 8, None), a.cursor("summary", 17, None))
        else {
            panic!("cursors");
        };
        // B inserts at the start and appends at the end; A merges.
        assert!(
            b.splice_text_utf16("summary", 0, 0, "BIG ", "bob", NOW_MS)
                .is_ok()
        );
        assert!(
            b.splice_text_utf16("summary", 21, 0, "!", "bob", NOW_MS)
                .is_ok()
        );
        let Ok(()) = a.incident.doc_mut().merge(b.incident.doc_mut()).map(|_| ()) else {
            panic!("merge");
        };
        assert_eq!(
            a.text("summary").ok().as_deref(),
            Some("BIG \u{1F525} fire spreading!")
        );
        assert_eq!(a.cursor_position("summary", &mid).ok(), Some(12));
        // The caret at the end stays behind the last character it followed: Bob's "!" went after it.
        assert_eq!(a.cursor_position("summary", &end).ok(), Some(21));
        assert!(matches!(
            a.cursor_position("summary", "garbage"),
            Err(ClientError::Cursor(_))
        ));
        assert!(matches!(
            a.cursor("summary", 5, None),
            Err(ClientError::Position { .. })
        ));
    }

    /// Types `text` at UTF-16 offset `pos`, one key every 100 ms from `start_ms`, as the page splices keystrokes.
    fn type_at(c: &mut LiveIncident, who: &str, pos: usize, text: &str, start_ms: f64) {
        for (i, key) in text.chars().enumerate() {
            let done = c.splice_text_utf16(
                "summary",
                pos + i,
                0,
                &key.to_string(),
                who,
                start_ms + 100.0 * i as f64,
            );
            assert!(done.is_ok(), "{done:?}");
        }
    }

    /// Two tabs append to the same checklist item's text at once, key by key, through its text address
    /// (`todos/<id>`): each run stays whole, and undo takes back only the tab's own, as in a field.
    #[test]
    fn a_checklist_item_text_is_co_edited_and_undone_like_a_field() {
        let mut a = client();
        let add = r#"{"op": "addItem", "field": "todos", "text": "Roll back"}"#;
        let applied: serde_json::Value = match a.apply(add, "alice", NOW_MS) {
            Ok(json) => serde_json::from_str(&json).unwrap_or_default(),
            Err(e) => panic!("addItem: {e}"),
        };
        let Some(item) = applied[0]["id"].as_str() else {
            panic!("addItem gives the item's id: {applied}");
        };
        let address = format!("todos/{item}");
        let id = DocumentId::from_bytes([7; 16]).to_string();
        let Ok(mut b) = LiveIncident::open(&id, "tab-2", Some(a.save())) else {
            panic!("open");
        };
        for (i, (x, y)) in " web"
            .chars()
            .zip(" db".chars().chain(Some('!')))
            .enumerate()
        {
            let at = NOW_MS + 100.0 * i as f64;
            let (x, y) = (x.to_string(), y.to_string());
            assert!(
                a.splice_text_utf16(&address, 9 + i, 0, &x, "alice", at)
                    .is_ok()
            );
            assert!(
                b.splice_text_utf16(&address, 9 + i, 0, &y, "bob", at)
                    .is_ok()
            );
        }
        let (Ok(_), Ok(_)) = (
            a.incident.doc_mut().merge(b.incident.doc_mut()),
            b.incident.doc_mut().merge(a.incident.doc_mut()),
        ) else {
            panic!("merge");
        };
        let merged = a.text(&address).unwrap_or_default();
        assert_eq!(b.text(&address).ok().as_ref(), Some(&merged));
        assert!(
            ["Roll back web db!", "Roll back db! web"].contains(&merged.as_str()),
            "each tab's run stays whole: {merged:?}"
        );
        assert_eq!(
            a.undo(&address, "alice", NOW_MS).ok().map(|c| c.is_some()),
            Some(true)
        );
        assert_eq!(a.text(&address).ok().as_deref(), Some("Roll back db!"));
        // The summary's history is its own; an unknown item is no text.
        assert_eq!(a.undo("summary", "alice", NOW_MS).ok(), Some(None));
        assert!(matches!(a.text("todos/1@00"), Err(ClientError::NotText(_))));
        assert!(matches!(
            a.splice_text_utf16(&address, 0, 0, "a\nb", "alice", NOW_MS),
            Err(ClientError::Operation(_))
        ));
    }

    #[test]
    fn undo_takes_back_only_our_own_edits_after_remote_ones_arrived() {
        let mut a = client();
        set_summary(&mut a, "Checkout errors.");
        let id = DocumentId::from_bytes([7; 16]).to_string();
        let Ok(mut b) = LiveIncident::open(&id, "tab-2", Some(a.save())) else {
            panic!("open");
        };
        assert_eq!(a.undo("summary", "alice", NOW_MS).ok(), Some(None));
        // Alice types two words with a pause between them, and deletes "errors"; Bob types in between.
        type_at(&mut a, "alice", 16, " alpha", NOW_MS);
        type_at(&mut a, "alice", 22, " two", NOW_MS + 5_000.0);
        assert!(
            a.splice_text_utf16("summary", 9, 6, "", "alice", NOW_MS + 9_000.0)
                .is_ok()
        );
        type_at(&mut b, "bob", 0, "bravo ", NOW_MS);
        type_at(&mut b, "bob", 22, "!", NOW_MS);
        let Ok(_) = a.incident.doc_mut().merge(b.incident.doc_mut()) else {
            panic!("merge");
        };
        // Bob's "!" and Alice's words went after the same "."; the merge put his first, and hers stayed whole.
        assert_eq!(
            a.text("summary").ok().as_deref(),
            Some("bravo Checkout .! alpha two")
        );
        assert_eq!(a.undo("summary", "alice", NOW_MS).ok(), Some(Some(21)));
        assert_eq!(
            a.text("summary").ok().as_deref(),
            Some("bravo Checkout errors.! alpha two")
        );
        assert_eq!(a.undo("summary", "alice", NOW_MS).ok(), Some(Some(29)));
        assert_eq!(
            a.text("summary").ok().as_deref(),
            Some("bravo Checkout errors.! alpha")
        );
        // The caret goes where the words were typed: after the "." they followed.
        assert_eq!(a.undo("summary", "alice", NOW_MS).ok(), Some(Some(22)));
        assert_eq!(
            a.text("summary").ok().as_deref(),
            Some("bravo Checkout errors.!")
        );
        // Nothing of Bob's is ever undone.
        assert_eq!(a.undo("summary", "alice", NOW_MS).ok(), Some(None));
        // Redone, each run goes back whole after the character it followed ("two" follows the "alpha" put back).
        assert_eq!(a.redo("summary", "alice", NOW_MS).ok(), Some(Some(28)));
        assert_eq!(a.redo("summary", "alice", NOW_MS).ok(), Some(Some(32)));
        assert_eq!(
            a.text("summary").ok().as_deref(),
            Some("bravo Checkout errors. alpha two!")
        );
        // A new edit forgets what is left to redo.
        type_at(&mut a, "alice", 0, ">", NOW_MS + 20_000.0);
        assert_eq!(a.redo("summary", "alice", NOW_MS).ok(), Some(None));
        assert_eq!(a.undo("summary", "alice", NOW_MS).ok(), Some(Some(0)));
        assert_eq!(
            a.text("summary").ok().as_deref(),
            Some("bravo Checkout errors. alpha two!")
        );
        // Undo again goes back through the redone steps (the deletion was forgotten with the redo stack).
        assert_eq!(a.undo("summary", "alice", NOW_MS).ok(), Some(Some(28)));
        assert_eq!(a.undo("summary", "alice", NOW_MS).ok(), Some(Some(22)));
        assert_eq!(a.undo("summary", "alice", NOW_MS).ok(), Some(None));
        assert_eq!(
            a.text("summary").ok().as_deref(),
            Some("bravo Checkout errors.!")
        );
    }

    #[test]
    fn replacing_a_selection_keeps_what_others_typed_at_its_ends() {
        let mut a = client();
        set_summary(&mut a, "Checkout errors.");
        let id = DocumentId::from_bytes([7; 16]).to_string();
        let Ok(mut b) = LiveIncident::open(&id, "tab-2", Some(a.save())) else {
            panic!("open");
        };
        // Alice selects "errors" (9 to 15) as the page does before `receive`.
        let (Ok(start), Ok(end)) = (
            a.cursor("summary", 9, Some(true)),
            a.cursor("summary", 15, None),
        ) else {
            panic!("cursors");
        };
        type_at(&mut b, "bob", 15, " 500", NOW_MS);
        type_at(&mut b, "bob", 9, "HTTP ", NOW_MS);
        let Ok(_) = a.incident.doc_mut().merge(b.incident.doc_mut()) else {
            panic!("merge");
        };
        assert_eq!(
            a.text("summary").ok().as_deref(),
            Some("Checkout HTTP errors 500.")
        );
        let (Ok(from), Ok(to)) = (
            a.cursor_position("summary", &start),
            a.cursor_position("summary", &end),
        ) else {
            panic!("positions");
        };
        assert_eq!((from, to), (14, 20));
        assert!(
            a.splice_text_utf16("summary", from, to - from, "failures", "alice", NOW_MS)
                .is_ok()
        );
        assert_eq!(
            a.text("summary").ok().as_deref(),
            Some("Checkout HTTP failures 500.")
        );
    }

    /// The server's side of the protocol, reduced to what the link needs: answer `join`, keep one document, sync
    /// it with every tab and relay ephemeral messages, as `server::document` does (without storage).
    struct Relay {
        doc: automerge::AutoCommit,
        tabs: Vec<(wire::PeerId, automerge::sync::State)>,
    }

    impl Relay {
        fn new(doc: automerge::AutoCommit) -> Relay {
            Relay {
                doc,
                tabs: Vec::new(),
            }
        }

        /// Delivers `frames` from tab `from`; returns frames addressed by peer id.
        fn deliver(&mut self, from: &str, frames: Vec<Vec<u8>>) -> Vec<(String, Vec<u8>)> {
            use automerge::sync::SyncDoc;
            use wire::{Message, PeerId};
            let server = PeerId::from("server");
            let mut out = Vec::new();
            for frame in frames {
                let Ok(message) = wire::decode(&frame) else {
                    panic!("the link sent a frame that does not decode");
                };
                match message {
                    Message::Join { sender_id, .. } => {
                        self.tabs.retain(|(p, _)| *p != sender_id);
                        self.tabs
                            .push((sender_id.clone(), automerge::sync::State::new()));
                        out.push((
                            sender_id.to_string(),
                            Message::Peer {
                                sender_id: server.clone(),
                                target_id: sender_id,
                                selected_protocol_version: wire::PROTOCOL_VERSION.into(),
                                metadata: None,
                            }
                            .encode(),
                        ));
                    }
                    Message::Request { data, .. } | Message::Sync { data, .. } => {
                        let Some(i) = self.tabs.iter().position(|(p, _)| p.as_str() == from) else {
                            panic!("sync before join");
                        };
                        let Ok(msg) = automerge::sync::Message::decode(&data) else {
                            panic!("bad sync message");
                        };
                        let received = self
                            .doc
                            .sync()
                            .receive_sync_message(&mut self.tabs[i].1, msg);
                        assert!(received.is_ok(), "{received:?}");
                        for (peer, state) in &mut self.tabs {
                            while let Some(m) = self.doc.sync().generate_sync_message(state) {
                                out.push((
                                    peer.to_string(),
                                    Message::Sync {
                                        sender_id: server.clone(),
                                        target_id: peer.clone(),
                                        document_id: DocumentId::from_bytes([7; 16]),
                                        data: m.encode(),
                                    }
                                    .encode(),
                                ));
                            }
                        }
                    }
                    Message::Ephemeral {
                        sender_id,
                        document_id,
                        session_id,
                        count,
                        data,
                        ..
                    } => {
                        for (peer, _) in &self.tabs {
                            if *peer != sender_id {
                                out.push((
                                    peer.to_string(),
                                    Message::Ephemeral {
                                        sender_id: sender_id.clone(),
                                        target_id: peer.clone(),
                                        document_id,
                                        session_id: session_id.clone(),
                                        count,
                                        data: data.clone(),
                                    }
                                    .encode(),
                                ));
                            }
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            out
        }
    }

    /// Runs frames between the relay and the tabs until nobody has anything left to say; returns the keys each tab
    /// reported changed.
    fn pump(relay: &mut Relay, tabs: &mut [&mut LiveIncident]) -> Vec<Vec<String>> {
        let mut changed = vec![Vec::new(); tabs.len()];
        for _ in 0..50 {
            let mut quiet = true;
            for i in 0..tabs.len() {
                let frames = tabs[i].take_outgoing();
                if frames.is_empty() {
                    continue;
                }
                quiet = false;
                let from = tabs[i].link_peer();
                for (peer, frame) in relay.deliver(&from, frames) {
                    let Some(to) = tabs.iter().position(|t| t.link_peer() == peer) else {
                        panic!("no tab {peer}");
                    };
                    match tabs[to].receive(&frame, NOW_MS) {
                        Ok(keys) => changed[to].extend(keys),
                        Err(e) => panic!("receive: {e}"),
                    }
                }
            }
            if quiet {
                return changed;
            }
        }
        panic!("the exchange did not settle");
    }

    #[test]
    fn two_tabs_sync_through_the_server_and_see_each_other() {
        let mut origin = client();
        let id = DocumentId::from_bytes([7; 16]).to_string();
        let Ok(saved) = automerge::AutoCommit::load(&origin.save()) else {
            panic!("load");
        };
        let mut relay = Relay::new(saved);
        // Tab A starts from a saved copy, tab B from nothing (it sends `request`).
        let (Ok(mut a), Ok(mut b)) = (
            LiveIncident::open(&id, "tab-a", Some(origin.save())),
            LiveIncident::open(&id, "tab-b", None),
        ) else {
            panic!("open");
        };
        assert!(!b.has_content());
        assert_eq!(a.status(), "offline");
        a.connected();
        b.connected();
        assert_eq!(a.status(), "connecting");
        let changed = pump(&mut relay, &mut [&mut a, &mut b]);
        assert!(b.has_content());
        assert!(changed[1].contains(&"summary".to_owned()), "{changed:?}");
        assert_eq!(
            (a.status().as_str(), b.status().as_str()),
            ("synced", "synced")
        );

        // A types; B hears exactly which field changed; both end synced on the same heads.
        assert!(
            a.splice_text_utf16("summary", 0, 0, "Payments down", "alice", NOW_MS)
                .is_ok()
        );
        assert_eq!(a.status(), "syncing");
        let changed = pump(&mut relay, &mut [&mut a, &mut b]);
        assert!(
            changed[1].contains(&"summary".to_owned())
                && !changed[1].contains(&"timeline".to_owned()),
            "{changed:?}"
        );
        assert_eq!(b.text("summary").ok().as_deref(), Some("Payments down"));
        assert_eq!(a.heads(), b.heads());
        assert_eq!(
            (a.status().as_str(), b.status().as_str()),
            ("synced", "synced")
        );

        // Presence: B announces itself editing the summary; A lists it, and it expires after silence.
        assert!(
            b.set_presence(
                r#"{"name": "bob", "role": "Operations lead", "field": "summary"}"#,
                NOW_MS
            )
            .is_ok()
        );
        let changed = pump(&mut relay, &mut [&mut a, &mut b]);
        assert!(changed[0].contains(&PRESENCE_KEY.to_owned()), "{changed:?}");
        let listed: serde_json::Value =
            serde_json::from_str(&a.presence_json(NOW_MS)).unwrap_or_default();
        assert_eq!(listed[0]["name"], "bob");
        assert_eq!(listed[0]["field"], "summary");
        assert_eq!(listed[0]["peer"], "tab-b");
        assert_eq!(b.presence_json(NOW_MS), "[]");
        assert!(a.tick(NOW_MS + 31_000.0));
        assert_eq!(a.presence_json(NOW_MS + 31_000.0), "[]");
        assert!(b.set_presence("{}", NOW_MS).is_err());

        // Offline edits stay local, then merge on reconnect.
        let delay = a.disconnected(NOW_MS, 0.5);
        assert!((100.0..=250.0).contains(&delay), "{delay}");
        assert!(a.disconnected(NOW_MS, 1.0) >= 999.0);
        assert_eq!(a.status(), "offline");
        assert!(
            a.apply(
                r#"{"op": "addTimelineEntry", "text": "offline note"}"#,
                "alice",
                NOW_MS
            )
            .is_ok()
        );
        assert!(a.take_outgoing().is_empty());
        a.connected();
        pump(&mut relay, &mut [&mut a, &mut b]);
        assert!(
            b.export_doc("markdown")
                .is_ok_and(|md| md.contains("offline note"))
        );
        assert_eq!(a.heads(), b.heads());
        assert_eq!(a.status(), "synced");
    }

    /// A `{"refused": …}` payload as the server sends it.
    fn refusal_payload(reason: &str) -> Vec<u8> {
        let mut payload = Vec::new();
        let value = ciborium::Value::Map(vec![(wire::REFUSED_KEY.into(), reason.into())]);
        assert!(ciborium::into_writer(&value, &mut payload).is_ok());
        payload
    }

    #[test]
    fn a_refusal_counts_only_from_the_servers_peer_id() {
        let mut origin = client();
        let id = DocumentId::from_bytes([7; 16]);
        let Ok(saved) = automerge::AutoCommit::load(&origin.save()) else {
            panic!("load");
        };
        let mut relay = Relay::new(saved);
        let (Ok(mut a), Ok(mut b)) = (
            LiveIncident::open(&id.to_string(), "tab-a", Some(origin.save())),
            LiveIncident::open(&id.to_string(), "tab-b", Some(origin.save())),
        ) else {
            panic!("open");
        };
        a.connected();
        b.connected();
        pump(&mut relay, &mut [&mut a, &mut b]);

        // Another peer's forged notice, relayed with that peer as sender: neither a refusal nor presence.
        b.link
            .broadcast("tab-b", 1, refusal_payload("forged by tab-b"));
        let changed = pump(&mut relay, &mut [&mut a, &mut b]);
        assert!(changed[0].is_empty(), "{changed:?}");
        assert_eq!(a.take_refusal(), None);
        assert_eq!(a.presence_json(NOW_MS), "[]");

        // The same payload under a peer id that merely looks like a server's is no better.
        let posing = wire::Message::Ephemeral {
            sender_id: wire::PeerId::from("commandpost-imposter"),
            target_id: wire::PeerId::from("tab-a"),
            document_id: id,
            session_id: "s".into(),
            count: 1,
            data: refusal_payload("forged again"),
        };
        assert_eq!(a.receive(&posing.encode(), NOW_MS).ok(), Some(Vec::new()));
        assert_eq!(a.take_refusal(), None);

        // From the peer id the relay answered `join` with, it is the server's refusal.
        let notice = wire::Message::Ephemeral {
            sender_id: wire::PeerId::from("server"),
            target_id: wire::PeerId::from("tab-a"),
            document_id: id,
            session_id: "server".into(),
            count: 1,
            data: refusal_payload("only the Incident Commander assigns roles"),
        };
        assert_eq!(
            a.receive(&notice.encode(), NOW_MS).ok(),
            Some(vec![REFUSED_KEY.to_owned()])
        );
        assert_eq!(
            a.take_refusal().as_deref(),
            Some("only the Incident Commander assigns roles")
        );

        // After a reconnect and before the handshake, nobody is the server.
        a.disconnected(NOW_MS, 0.5);
        a.connected();
        assert_eq!(a.receive(&notice.encode(), NOW_MS).ok(), Some(Vec::new()));
        assert_eq!(a.take_refusal(), None);
    }

    #[test]
    fn a_server_error_or_garbage_is_a_protocol_error_that_changes_nothing() {
        let mut a = client();
        let heads = a.heads();
        a.connected();
        let refused = a.receive(&wire::Message::error("go away").encode(), NOW_MS);
        assert!(
            matches!(refused, Err(ClientError::Protocol(ref m)) if m.contains("go away")),
            "{refused:?}"
        );
        assert_eq!(
            a.last_error().as_deref(),
            Some("the server refused: go away")
        );
        assert!(matches!(
            a.receive(b"\xff\x00", NOW_MS),
            Err(ClientError::Protocol(_))
        ));
        assert_eq!(a.heads(), heads);
    }
}
