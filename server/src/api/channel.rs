//! What declaring and editing an incident do about its chat channel, shared by the incident routes and the
//! channel routes (`chat.rs`): the one-open-incident-per-channel check, the channel a template's rule gives a new
//! incident, and waking the bots when a binding changed.
//!
//! One open incident per channel is decided from the index before the change (two binds racing on two nodes could
//! both pass; the newest incident then gets the channel's lines).

use incident_doc::Operation;
use incident_doc::channel::{Channel, Network};

use super::AppState;
use crate::error::ApiError;
use wire::DocumentId;

/// Refuses (409) binding a channel another open incident is bound to; a channel the network would refuse is 422.
pub(super) async fn check_channels(
    state: &AppState,
    doc: DocumentId,
    ops: &[Operation],
) -> Result<(), ApiError> {
    for op in ops {
        let Operation::BindChannel { network, name, id } = op else {
            continue;
        };
        let channel = Channel::new(*network, name, id.as_deref())
            .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
        if let Some(holder) = state
            .store
            .incident_by_channel(channel.network, channel.address())
            .await?
            && holder.id != doc
        {
            return Err(ApiError::Conflict(format!(
                "the channel {} is the command post of another open incident: unbind it there, or close that \
                 incident, first",
                channel.display()
            )));
        }
    }
    Ok(())
}

/// The operations that bind a new incident to its template's channel (`rule`) and write it into the command post
/// field (`command_post`): on IRC the name the rule gives, or with `-2` … `-9` when another open incident holds
/// it; on Slack a channel created with `conversations.create` (`name_taken` handled there). Nothing when no channel
/// can be had (no `[slack]`, Slack refused): the incident is declared all the same, and the log says why.
pub(super) async fn declared_channel(
    state: &AppState,
    network: Network,
    rule: &str,
    number: i64,
    title: &str,
    command_post: bool,
) -> Vec<Operation> {
    let name = incident_doc::channel::channel_name(rule, network, Some(number), title);
    let channel = match network {
        Network::Irc => {
            let mut found = None;
            for n in 1..=9 {
                let candidate =
                    incident_doc::channel::suffixed(&name, n, incident_doc::channel::IRC_MAX);
                match state.store.incident_by_channel(network, &candidate).await {
                    Ok(None) => {
                        found = Channel::new(network, &candidate, None).ok();
                        break;
                    }
                    Ok(Some(_)) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "no channel for the new incident: the index is unavailable");
                        break;
                    }
                }
            }
            found
        }
        Network::Slack => match &state.slack {
            Some(slack) => match slack.api.create_channel(&name).await {
                Ok((id, created)) => Channel::new(network, &created, Some(&id)).ok(),
                Err(e) => {
                    tracing::warn!(error = %e, "no Slack channel for the new incident");
                    None
                }
            },
            None => {
                tracing::warn!("the template names a Slack channel but no [slack] is configured");
                None
            }
        },
    };
    let Some(channel) = channel else {
        return Vec::new();
    };
    let mut ops = vec![Operation::BindChannel {
        network,
        name: channel.name.clone(),
        id: channel.id.clone(),
    }];
    if command_post {
        ops.push(Operation::SetText {
            field: "commandPost".into(),
            text: match &channel.id {
                Some(id) => format!(
                    "{}: https://slack.com/app_redirect?channel={id}",
                    channel.display()
                ),
                None => channel.display(),
            },
        });
    }
    ops
}

/// Wakes the bots when a batch bound or unbound a channel, so they join or leave at once.
pub(super) fn channels_changed(state: &AppState, ops: &[Operation]) {
    if ops.iter().any(|op| {
        matches!(
            op,
            Operation::BindChannel { .. } | Operation::UnbindChannel {}
        )
    }) {
        state.chat.changed.notify_one();
        state.chat.changed.notify_waiters();
    }
}
