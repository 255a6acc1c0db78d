//! Lenient typed reads of an Automerge document, now or at past heads.
//!
//! Any Automerge client may write the document, so a field can hold something the schema does not expect (a
//! string where Text belongs, a number where a string belongs). Reads here never fail on that: a value of the wrong
//! shape reads as absent, and the readers above decide what absent means.

use automerge::{ChangeHash, ObjId, ObjType, Prop, ReadDoc, ScalarValue, Value, ValueRef};
use chrono::{DateTime, TimeZone, Utc};

/// Reads one document, either as it is now or as it was at `heads`, through the same calls.
pub(crate) struct Reader<'a, D> {
    /// The document being read.
    pub(crate) doc: &'a D,
    /// `Some` to read the past: every read goes through the `_at` twin.
    pub(crate) heads: Option<&'a [ChangeHash]>,
}

impl<'a, D: ReadDoc> Reader<'a, D> {
    pub(crate) fn new(doc: &'a D, heads: Option<&'a [ChangeHash]>) -> Self {
        Reader { doc, heads }
    }

    pub(crate) fn get(&self, obj: &ObjId, prop: impl Into<Prop>) -> Option<(Value<'a>, ObjId)> {
        let got = match self.heads {
            Some(heads) => self.doc.get_at(obj, prop, heads),
            None => self.doc.get(obj, prop),
        };
        got.ok().flatten()
    }

    fn scalar(&self, obj: &ObjId, prop: impl Into<Prop>) -> Option<ScalarValue> {
        match self.get(obj, prop)? {
            (Value::Scalar(s), _) => Some(s.into_owned()),
            _ => None,
        }
    }

    fn object(&self, obj: &ObjId, prop: impl Into<Prop>, want: ObjType) -> Option<ObjId> {
        match self.get(obj, prop)? {
            (Value::Object(t), id) if t == want => Some(id),
            _ => None,
        }
    }

    pub(crate) fn map(&self, obj: &ObjId, prop: impl Into<Prop>) -> Option<ObjId> {
        self.object(obj, prop, ObjType::Map)
    }

    pub(crate) fn list(&self, obj: &ObjId, prop: impl Into<Prop>) -> Option<ObjId> {
        self.object(obj, prop, ObjType::List)
    }

    /// A string scalar, or the content of a Text object: JavaScript Automerge (2.x `next` and 3.x) stores every
    /// plain JS string it is given as Text, so `doc.severity = "SEV1"` or `{at, by: "alice"}` arrive as Text.
    pub(crate) fn str(&self, obj: &ObjId, prop: impl Into<Prop>) -> Option<String> {
        match self.get(obj, prop)? {
            (Value::Scalar(s), _) => match s.as_ref() {
                ScalarValue::Str(s) => Some(s.to_string()),
                _ => None,
            },
            (Value::Object(ObjType::Text), id) => {
                let text = match self.heads {
                    Some(heads) => self.doc.text_at(&id, heads),
                    None => self.doc.text(&id),
                };
                text.ok()
            }
            _ => None,
        }
    }

    pub(crate) fn int(&self, obj: &ObjId, prop: impl Into<Prop>) -> Option<i64> {
        match self.scalar(obj, prop)? {
            ScalarValue::Int(i) => Some(i),
            ScalarValue::Uint(u) => i64::try_from(u).ok(),
            // JavaScript numbers arrive as floats when a plain client writes them.
            ScalarValue::F64(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
            _ => None,
        }
    }

    pub(crate) fn bool(&self, obj: &ObjId, prop: impl Into<Prop>) -> Option<bool> {
        match self.scalar(obj, prop)? {
            ScalarValue::Boolean(b) => Some(b),
            _ => None,
        }
    }

    pub(crate) fn time(&self, obj: &ObjId, prop: impl Into<Prop>) -> Option<DateTime<Utc>> {
        match self.scalar(obj, prop)? {
            ScalarValue::Timestamp(ms) | ScalarValue::Int(ms) => {
                Utc.timestamp_millis_opt(ms).single()
            }
            ScalarValue::Str(s) => DateTime::parse_from_rfc3339(&s)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            _ => None,
        }
    }

    /// Text objects read as their content; a plain string written by another client reads as itself.
    pub(crate) fn text(&self, obj: &ObjId, prop: impl Into<Prop>) -> Option<String> {
        self.str(obj, prop)
    }

    /// Any value rendered for comparison: a scalar as Automerge prints it, a Text as its content, another object
    /// as its id (so replacing it reads as a change).
    pub(crate) fn render(&self, obj: &ObjId, prop: impl Into<Prop>) -> String {
        let prop = prop.into();
        match self.get(obj, prop.clone()) {
            None => String::new(),
            Some((Value::Scalar(s), _)) => format!("{s:?}"),
            Some((Value::Object(ObjType::Text), _)) => self.str(obj, prop).unwrap_or_default(),
            Some((Value::Object(_), id)) => id.to_string(),
        }
    }

    /// The strings of a list (Text items read as their content), skipping anything else.
    pub(crate) fn strings_in(&self, list: &ObjId) -> Vec<String> {
        let len = match self.heads {
            Some(heads) => self.doc.length_at(list, heads),
            None => self.doc.length(list),
        };
        (0..len).filter_map(|i| self.str(list, i)).collect()
    }

    /// The keys of a map, in order.
    pub(crate) fn keys(&self, map: &ObjId) -> Vec<String> {
        match self.heads {
            Some(heads) => self.doc.keys_at(map, heads).collect(),
            None => self.doc.keys(map).collect(),
        }
    }

    /// The map objects of a list, skipping anything else a client may have inserted. One pass over the list:
    /// looking items up by index would cost a search each.
    pub(crate) fn maps_in(&self, list: &ObjId) -> Vec<ObjId> {
        let items = match self.heads {
            Some(heads) => self.doc.list_range_at(list, .., heads),
            None => self.doc.list_range(list, ..),
        };
        items
            .filter(|item| matches!(item.value, ValueRef::Object(ObjType::Map)))
            .map(|item| item.id())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ObjType, ROOT, ScalarValue};

    use super::Reader;

    /// JavaScript Automerge writes plain strings as Text; string reads must see them, now and at past heads.
    #[test]
    fn str_reads_text_objects_as_strings() -> Result<(), automerge::AutomergeError> {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "scalar", "SEV2")?;
        let text = doc.put_object(ROOT, "text", ObjType::Text)?;
        doc.splice_text(&text, 0, 0, "SEV1")?;
        doc.put(ROOT, "number", ScalarValue::Int(3))?;
        let heads = doc.get_heads();
        doc.splice_text(&text, 3, 1, "3")?;
        let now = Reader::new(&doc, None);
        assert_eq!(now.str(&ROOT, "scalar").as_deref(), Some("SEV2"));
        assert_eq!(now.str(&ROOT, "text").as_deref(), Some("SEV3"));
        assert_eq!(now.str(&ROOT, "number"), None);
        assert_eq!(now.str(&ROOT, "missing"), None);
        let past = Reader::new(&doc, Some(&heads));
        assert_eq!(past.str(&ROOT, "text").as_deref(), Some("SEV1"));
        Ok(())
    }
}
