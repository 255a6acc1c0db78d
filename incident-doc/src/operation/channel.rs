//! Binding the incident to a chat channel and unbinding it ([`crate::channel`]): root key `chatChannel`. Each
//! change is recorded in the timeline; the command rules let only the commander or an administrator make it.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ROOT};

use crate::channel::{Channel, Network, read_channel};
use crate::edit::{Applied, Edited, Editor, OpError};
use crate::read::Reader;
use crate::schema::{FieldDef, keys};

use super::timeline;

/// Binds the incident to a channel, replacing any other; binding the channel already bound writes nothing.
pub(super) fn bind(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    network: Network,
    name: &str,
    id: Option<&str>,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let channel = Channel::new(network, name, id)?;
    if read_channel(&Reader::new(&*doc, None)).as_ref() == Some(&channel) {
        return Ok((Applied::default(), Vec::new()));
    }
    let map = doc.put_object(ROOT, keys::CHAT_CHANNEL, ObjType::Map)?;
    doc.put(&map, "network", network.as_str())?;
    doc.put(&map, "name", channel.name.as_str())?;
    if let Some(id) = &channel.id {
        doc.put(&map, "id", id.as_str())?;
    }
    let text = format!(
        "{} bound the incident to the channel {}.",
        editor.name,
        channel.display()
    );
    timeline::record(doc, layout, editor, &text)
}

/// Unbinds the incident from its channel; without one, nothing changes.
pub(super) fn unbind(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    editor: &Editor,
) -> Result<Edited, OpError> {
    let Some(channel) = read_channel(&Reader::new(&*doc, None)) else {
        return Ok((Applied::default(), Vec::new()));
    };
    doc.delete(ROOT, keys::CHAT_CHANNEL)?;
    let text = format!(
        "{} unbound the incident from the channel {}.",
        editor.name,
        channel.display()
    );
    timeline::record(doc, layout, editor, &text)
}
