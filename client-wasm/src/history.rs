//! [`History`]: undo and redo of this tab's own text edits, per field.
//!
//! A `<textarea>`'s own undo stack is useless in a shared field: setting its value when remote text arrives empties
//! it, and what it would undo is a diff of whole values that includes other people's typing. So the client keeps
//! its own: every splice this tab makes is recorded as Automerge-stable addresses (a cursor per inserted character,
//! the caret cursor of where the deletion was) with the deleted text. Undoing removes exactly our own characters
//! that are still there, wherever others' edits moved them, and puts back what we deleted where it was; it never
//! touches anyone else's text. The inverse goes through the model's `spliceText` operations like any other edit,
//! so the schema's rules, the *last updated* stamp and the server's checks apply to it too.

use std::collections::HashMap;

use automerge::Cursor;

/// Keystrokes less than this far apart in one field undo together, as a browser groups typing into words.
const GROUP_MS: f64 = 1_000.0;

/// Steps kept per field and direction; older ones are forgotten.
const MAX_STEPS: usize = 100;

/// One splice as it was made, in stable addresses.
#[derive(Debug, Clone)]
pub struct Splice {
    /// The caret cursor of the splice's position (see [`crate::utf16::caret_cursor`]): where deleted text goes
    /// back.
    pub at: Cursor,
    /// The text it deleted.
    pub deleted: String,
    /// A cursor on each character it deleted, in order: when undo puts them back as new characters, every
    /// address that named the old ones moves onto the new ones ([`History::remap`]).
    pub deleted_ids: Vec<Cursor>,
    /// One cursor per character it inserted, in order.
    pub inserted: Vec<Cursor>,
}

impl Splice {
    /// Moves every address naming a character of `moved` onto its replacement.
    pub fn remap(&mut self, moved: &[(Cursor, Cursor)]) {
        let find = |c: &mut Cursor| {
            if let Some((_, new)) = moved.iter().find(|(old, _)| old == c) {
                *c = new.clone();
            }
        };
        find(&mut self.at);
        self.deleted_ids.iter_mut().for_each(find);
        self.inserted.iter_mut().for_each(find);
    }
}

/// Splices undone or redone together.
type Step = Vec<Splice>;

/// The undo and redo stacks of one field.
#[derive(Debug, Default)]
struct Stacks {
    undo: Vec<Step>,
    redo: Vec<Step>,
    /// When the last splice was recorded, and whether it only inserted: typing continues its step.
    last: Option<(f64, bool)>,
}

/// This tab's own edits of each text field, for undo and redo.
#[derive(Debug, Default)]
pub struct History {
    fields: HashMap<String, Stacks>,
}

impl History {
    /// Records a splice made by the person at `now_ms`. A new edit forgets what was undone (as every editor does).
    pub fn record(&mut self, field: &str, splice: Splice, now_ms: f64) {
        let stacks = self.fields.entry(field.to_owned()).or_default();
        let typing = splice.deleted.is_empty();
        let continues = stacks
            .last
            .is_some_and(|(at, was_typing)| was_typing == typing && now_ms - at < GROUP_MS);
        stacks.last = Some((now_ms, typing));
        stacks.redo.clear();
        match stacks.undo.last_mut() {
            Some(step) if continues => match step.last_mut() {
                // A keystroke right after the previous one's text extends it: the run is undone as one piece and
                // redone as one piece, whatever others typed around it meanwhile.
                Some(last) if typing && last.inserted.last() == Some(&splice.at) => {
                    last.inserted.extend(splice.inserted);
                }
                _ => step.push(splice),
            },
            _ => push(&mut stacks.undo, vec![splice]),
        }
    }

    /// The step to undo next in `field`, taken off its stack.
    pub fn take_undo(&mut self, field: &str) -> Option<Step> {
        let stacks = self.fields.get_mut(field)?;
        stacks.last = None;
        stacks.undo.pop()
    }

    /// The step to redo next in `field`, taken off its stack.
    pub fn take_redo(&mut self, field: &str) -> Option<Step> {
        let stacks = self.fields.get_mut(field)?;
        stacks.last = None;
        stacks.redo.pop()
    }

    /// Files the inverse of an undone step, for redo.
    pub fn undone(&mut self, field: &str, inverse: Step) {
        push(
            &mut self.fields.entry(field.to_owned()).or_default().redo,
            inverse,
        );
    }

    /// Characters put back by undo or redo are new characters: moves every address of `field`'s history that
    /// named the old ones onto them, so that later steps still find their text and their place.
    pub fn remap(&mut self, field: &str, moved: &[(Cursor, Cursor)]) {
        if let Some(stacks) = self.fields.get_mut(field) {
            for splice in stacks.undo.iter_mut().chain(&mut stacks.redo).flatten() {
                splice.remap(moved);
            }
        }
    }

    /// Files the inverse of a redone step, for undo.
    pub fn redone(&mut self, field: &str, inverse: Step) {
        push(
            &mut self.fields.entry(field.to_owned()).or_default().undo,
            inverse,
        );
    }
}

/// Pushes `step`, forgetting the oldest beyond [`MAX_STEPS`].
fn push(stack: &mut Vec<Step>, step: Step) {
    if stack.len() == MAX_STEPS {
        stack.remove(0);
    }
    stack.push(step);
}
