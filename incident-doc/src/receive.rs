//! What a server replica does with one Automerge sync message from a peer: decode it, merge it, hold the merged
//! changes to the command rules, and generate the answers, as one pure step.
//!
//! The server's document actor runs this for every `sync`/`request` message a connection delivers; it is here,
//! without IO, so that the fuzz target `sync_message` (in `fuzz/`) drives exactly the server's handling of hostile
//! bytes, and so that the step's result (answers to send, violations to report) is plain data the actor acts on.

use std::collections::{BTreeSet, HashMap};

use automerge::ChangeHash;
use automerge::sync::{self, Capability, MessageFlags, SyncDoc};

use crate::rules::Violation;
use crate::{Editor, Incident};

/// The outcome of one accepted sync message.
#[derive(Debug, Default)]
pub struct Received {
    /// What broke a command rule and was reverted (in one change by the server's editor), for the sender.
    pub violations: Vec<Violation>,
    /// The encoded sync message that answers a message which carried changes, generated right after it as a
    /// sequential Automerge peer would (see the document actor for why it must not wait for the end of a batch).
    /// At most one: see [`Incident::receive_sync`]. A message without changes gets none here: the caller's next
    /// [`Incident::generate_sync`] for the peer answers it, from a state at least as recent, so in a war room a
    /// viewer's acknowledgements cost no generation each, and a batch of them one at the end.
    pub answer: Option<Vec<u8>>,
    /// The root keys the message's changes wrote, when they stand as they came: empty for a message without
    /// changes, `None` when the server wrote a change of its own in answer (a revert, the authorship record).
    pub touched: Option<BTreeSet<String>>,
}

/// Why a sync message was refused; the document is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The bytes are not an Automerge sync message.
    #[error("not a sync message: {0}")]
    Decode(String),
    /// The message decoded but Automerge could not apply it (bad changes, missing dependencies it cannot wait for).
    #[error("the sync message does not apply: {0}")]
    Apply(String),
    /// The message carries changes under an Automerge actor the authorship record gives to someone else: the
    /// sender is writing as another person. Nothing of it was applied.
    #[error(
        "the sync message carries changes of actor {actor}, which is {owner}'s, not the sender's; nothing was applied"
    )]
    Forged {
        /// The actor (hex).
        actor: String,
        /// Whose it is.
        owner: String,
    },
}

/// Automerge's sync computations for one version of the document, shared between peers whose sync states are
/// equal. Generating a message, and receiving one that carries no changes, are deterministic functions of the
/// document and the peer's state (and the message); in a war room hundreds of caught-up viewers are in the same
/// state, so each keystroke costs one computation per distinct state instead of one per viewer, and the viewers'
/// identical acknowledgements one history walk instead of one each (BENCHMARKS.md, "Where the time goes").
/// Everything is forgotten when the document moves: new heads, or changes held back for a missing dependency
/// (they change what we ask peers for).
#[derive(Debug, Default)]
pub struct SyncMemo {
    /// The document version the entries were computed at: heads and missing dependencies.
    version: (Vec<ChangeHash>, Vec<ChangeHash>),
    /// State before → (state after, the encoded message, if any) of `generate_sync_message`.
    generated: HashMap<sync::State, (sync::State, Option<Vec<u8>>), StateHasher>,
    /// State before → (encoded message without changes, state after) of `receive_sync_message`.
    received: HashMap<sync::State, Vec<(Vec<u8>, sync::State)>, StateHasher>,
    /// The changes peers' messages brought lately, as they sent them: what a caught-up peer gets next.
    fresh: Fresh,
}

/// The last few merges of peers' changes, each with the heads it started from, in a chain that ends at `tip`. A
/// peer whose acknowledged heads are where one of them started lacks exactly the changes from there on, so its next
/// message can be built from their bytes ([`generate_caught_up`]) instead of by automerge, which finds them by
/// walking back from its heads and rebuilds each change from the document's operations (a fifth of a keystroke's
/// cost with a few typists). Anything else that moves the document (the server's own changes, HTTP edits, other
/// nodes' chunks) breaks the chain, and those peers' messages come from automerge again.
#[derive(Debug, Default)]
struct Fresh {
    /// Each merge: the heads before it and the changes it brought, oldest first.
    steps: std::collections::VecDeque<(Vec<ChangeHash>, Vec<automerge::Change>)>,
    /// The heads after the last merge.
    tip: Vec<ChangeHash>,
}

/// Merges [`Fresh`] keeps: a peer further behind than this gets automerge's message.
const FRESH_STEPS: usize = 64;

impl Fresh {
    /// Records that `changes`, exactly, took the document from `before` to `after`.
    fn record(
        &mut self,
        before: Vec<ChangeHash>,
        after: Vec<ChangeHash>,
        changes: Vec<automerge::Change>,
    ) {
        if self.tip != before {
            self.steps.clear();
        }
        if self.steps.len() == FRESH_STEPS {
            self.steps.pop_front();
        }
        self.steps.push_back((before, changes));
        self.tip = after;
    }
}

/// The message automerge would generate for a caught-up peer, built from [`Fresh`]'s bytes: a peer that
/// acknowledged heads where a recorded merge started, with nothing in flight and nothing it asked for, gets every
/// change from there on, our heads, and a Bloom filter of those changes as our `have`, and its state moves on as
/// automerge moves it. `None` when the peer is not in that state (automerge then generates). Where automerge's
/// filter holds a false positive for one of the changes, automerge leaves it out and the peer asks for it; this
/// sends it, which is what the peer needs anyway.
fn generate_caught_up(
    fresh: &Fresh,
    heads: &[ChangeHash],
    doc: &automerge::Automerge,
    state: &mut sync::State,
) -> Option<sync::Message> {
    if fresh.tip != heads
        || state.needs_reset
        || state.is_peer_read_only()
        || !state.have_responded
        || state.in_flight
        || !state.sent_hashes.is_empty()
        || !state.their_need.as_ref().is_some_and(Vec::is_empty)
    {
        return None;
    }
    let their = state.their_heads.as_ref()?;
    if their.is_empty() || *their != state.shared_heads || *their != state.last_sent_heads {
        return None;
    }
    let first = state.their_have.as_ref()?.first()?;
    if !first
        .last_sync
        .iter()
        .all(|hash| doc.get_change_meta_by_hash(hash).is_some())
    {
        return None;
    }
    let from = fresh.steps.iter().position(|(before, _)| before == their)?;
    let changes: Vec<&automerge::Change> = fresh.steps.range(from..).flat_map(|(_, c)| c).collect();
    let hashes: Vec<ChangeHash> = changes.iter().map(|c| c.hash()).collect();
    let v2 = state
        .their_capabilities
        .as_ref()
        .is_some_and(|caps| caps.contains(&Capability::MessageV2));
    let chunks: Vec<Vec<u8>> = if v2 {
        vec![
            changes
                .iter()
                .flat_map(|c| c.raw_bytes())
                .copied()
                .collect(),
        ]
    } else {
        changes.iter().map(|c| c.raw_bytes().to_vec()).collect()
    };
    let mut flags = MessageFlags::new();
    flags.set(MessageFlags::SUPPORTS_SYNC_RESET);
    if state.read_only {
        flags.set(MessageFlags::READ_ONLY);
    }
    let message = sync::Message {
        heads: heads.to_vec(),
        need: Vec::new(),
        have: vec![sync::Have {
            last_sync: their.clone(),
            bloom: sync::BloomFilter::from_hashes(hashes.iter()),
        }],
        changes: chunks.into(),
        flags: Some(flags),
        version: if v2 {
            sync::MessageVersion::V2
        } else {
            sync::MessageVersion::V1
        },
    };
    state.have_responded = true;
    state.last_sent_heads = heads.to_vec();
    state.sent_hashes.extend(hashes);
    state.in_flight = true;
    Some(message)
}

/// The memo's hasher: with a thousand viewers, hashing sync states for every lookup took 15% of the server's CPU
/// with the standard library's SipHash; foldhash is several times faster and still seeded per map, so peers cannot
/// choose states that collide.
type StateHasher = foldhash::fast::RandomState;

/// Entries one memo holds at most, so peers in ever-different states cannot grow it without bound.
const MEMO_ENTRIES: usize = 4096;

impl SyncMemo {
    /// Forgets everything if the document is no longer at the version the entries were computed at.
    fn at(&mut self, incident: &mut Incident) -> &mut Self {
        let doc = incident.doc_mut();
        let version = (doc.get_heads(), doc.get_missing_deps(&[]));
        if version != self.version || self.generated.len() + self.received.len() > MEMO_ENTRIES {
            self.version = version;
            self.generated.clear();
            self.received.clear();
        }
        self
    }

    /// How many distinct computations the memo holds (generated, received).
    pub fn len(&self) -> (usize, usize) {
        (
            self.generated.len(),
            self.received.values().map(Vec::len).sum(),
        )
    }

    /// Whether the memo holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

/// Changes under actors the authorship record does not know yet, by hash, with their actor.
type Newcomers = Vec<(ChangeHash, automerge::ActorId)>;

/// Bloom filter parameters no honest peer exceeds (automerge writes 10 bits per entry and 7 probes).
const MAX_BLOOM_PARAMETER: u64 = 64;

/// Refuses `have` Bloom filters that Automerge 0.12 would panic or exhaust memory on when it next generates a
/// message for the peer: zero bits per entry (a remainder by zero) or an absurd probe count (one allocation per
/// probe). Found by the `sync_message` fuzz target. The filter is read from its encoding: its fields are private.
fn check_blooms(message: &sync::Message) -> Result<(), ReceiveError> {
    for have in &message.have {
        let bytes = have.bloom.to_bytes();
        let mut rest = bytes.as_slice();
        let mut next = || {
            let mut value: u64 = 0;
            for shift in (0..64).step_by(7) {
                let (&byte, tail) = rest.split_first()?;
                rest = tail;
                value |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    return Some(value);
                }
            }
            None
        };
        let Some(entries) = next() else {
            continue;
        };
        let (bits, probes) = (next(), next());
        let sane = |v: Option<u64>| v.is_some_and(|v| (1..=MAX_BLOOM_PARAMETER).contains(&v));
        if entries > 0 && !(sane(bits) && sane(probes)) {
            return Err(ReceiveError::Decode(format!(
                "a Bloom filter with {bits:?} bits per entry and {probes:?} probes"
            )));
        }
    }
    Ok(())
}

/// The changes in one entry of a sync message's change list, without applying them: the entry is a sequence of
/// Automerge storage chunks (usually one change; a whole document when automerge sends its document because the
/// peer lacks more than a third of it, followed by any changes it holds back). Each chunk is `magic (4) checksum
/// (4) type (1) length (LEB128) data`; a change chunk (type 1, or 2 compressed) parses alone, a document chunk
/// (type 0) loads alone. Split here because loading the whole entry would hide its held-back changes, whose
/// actors must be checked like any other's.
fn chunk_changes(entry: &[u8]) -> Result<Vec<automerge::Change>, ReceiveError> {
    const HEADER: usize = 9;
    let bad = |why: &str| ReceiveError::Apply(format!("a change chunk {why}"));
    let mut changes = Vec::new();
    let mut rest = entry;
    while !rest.is_empty() {
        let header = rest.get(..HEADER).ok_or_else(|| bad("is truncated"))?;
        let (mut length, mut shift, mut used) = (0usize, 0u32, 0usize);
        loop {
            let byte = *rest
                .get(HEADER + used)
                .ok_or_else(|| bad("has a truncated length"))?;
            used += 1;
            length |= usize::from(byte & 0x7f)
                .checked_shl(shift)
                .filter(|_| shift < 63)
                .ok_or_else(|| bad("has an absurd length"))?;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let end = (HEADER + used)
            .checked_add(length)
            .filter(|end| *end <= rest.len())
            .ok_or_else(|| bad("is longer than the message"))?;
        let (chunk, tail) = rest.split_at(end);
        if header[8] == 0 {
            let doc = automerge::Automerge::load(chunk)
                .map_err(|e| ReceiveError::Apply(e.to_string()))?;
            changes.extend(doc.get_changes(&[]));
        } else {
            // automerge 0.12 parses a change's operations before it checks the checksum, and panics on some
            // malformed ones (an operation counter past 32 bits, found by the `sync_message` fuzz target): hostile
            // bytes must be an error, not a dead document actor.
            let parsed = std::panic::catch_unwind(|| automerge::Change::try_from(chunk));
            match parsed {
                Ok(Ok(change)) => changes.push(change),
                Ok(Err(e)) => return Err(ReceiveError::Apply(e.to_string())),
                Err(_) => return Err(bad("is malformed")),
            }
        }
        rest = tail;
    }
    Ok(changes)
}

/// Automerge's `receive_sync_message` for the commonest message, an acknowledgement: no changes, and heads that
/// are ours, now or as we last sent them to this peer. Automerge walks the whole history on every message to find
/// which of the hashes it sent the peer the peer now holds (linear in the history, and most of a busy war room's
/// CPU: BENCHMARKS.md); for these heads the answer needs no walk: all of them, since every hash we sent was in
/// the document when we last sent heads, and so is an ancestor of those heads and of ours. The rest is
/// automerge 0.12's receive, field by field; the test `receives_end_as_automerge_would` holds the two
/// equal over whole conversations. Gives the message back, untouched, when it is not such a one.
fn receive_acknowledgement(
    our_heads: &[ChangeHash],
    state: &mut sync::State,
    message: sync::Message,
) -> Result<(), sync::Message> {
    let fits = message.changes.is_empty()
        && !message.heads.is_empty()
        && (message.heads == our_heads || message.heads == state.last_sent_heads)
        && !message
            .flags
            .is_some_and(|flags| flags.contains(MessageFlags::SYNC_RESET));
    if !fits {
        return Err(message);
    }
    state.in_flight = false;
    if let Some(flags) = message.flags {
        let mut capabilities = vec![Capability::MessageV2];
        if flags.contains(MessageFlags::SUPPORTS_SYNC_RESET) {
            capabilities.push(Capability::SyncReset);
        }
        state.their_capabilities = Some(capabilities);
        state.peer_read_only = flags.contains(MessageFlags::READ_ONLY);
    }
    state.sent_hashes.clear();
    if message.heads == our_heads {
        state.last_sent_heads.clone_from(&message.heads);
    }
    state.shared_heads.clone_from(&message.heads);
    state.their_have = Some(message.have);
    state.their_heads = Some(message.heads);
    state.their_need = Some(message.need);
    Ok(())
}

/// Automerge's `receive_sync_message` for any message, without its whole-history walk: automerge then drops from
/// the hashes it sent the peer those the peer's heads now cover by visiting every ancestor of those heads
/// (`remove_ancestors`, linear in the history, on every message that carries changes: a typist's keystroke). The
/// hashes the heads do not cover are exactly the changes automerge lists as missing from them, which its clock
/// cache finds by looking at what came after the heads, so that is what is kept. The rest is automerge 0.12's
/// receive, field by field; the test `receives_end_as_automerge_would` holds the two equal over whole
/// conversations.
fn receive_changes(
    doc: &mut automerge::AutoCommit,
    state: &mut sync::State,
    message: sync::Message,
) -> Result<(), automerge::AutomergeError> {
    state.in_flight = false;
    let before = doc.get_heads();
    if let Some(flags) = message.flags {
        let mut capabilities = vec![Capability::MessageV2];
        if flags.contains(MessageFlags::SUPPORTS_SYNC_RESET) {
            capabilities.push(Capability::SyncReset);
        }
        state.their_capabilities = Some(capabilities);
        if flags.contains(MessageFlags::SYNC_RESET) {
            state.sent_hashes.clear();
        }
        state.peer_read_only = flags.contains(MessageFlags::READ_ONLY);
    }
    let carried = !message.changes.is_empty();
    if carried && !state.read_only {
        let joined: Vec<u8> = message.changes.iter().flatten().copied().collect();
        doc.load_incremental(&joined)?;
        let after = doc.get_heads();
        let mut advanced: Vec<ChangeHash> = after
            .iter()
            .filter(|head| !before.contains(head))
            .chain(
                state
                    .shared_heads
                    .iter()
                    .filter(|head| after.contains(head)),
            )
            .copied()
            .collect();
        advanced.sort();
        advanced.dedup();
        state.shared_heads = advanced;
    }
    let known: Vec<ChangeHash> = {
        let document = doc.document();
        message
            .heads
            .iter()
            .filter(|head| document.get_change_meta_by_hash(head).is_some())
            .copied()
            .collect()
    };
    if !state.sent_hashes.is_empty() {
        let uncovered: std::collections::HashSet<ChangeHash> = doc
            .get_changes_meta(&known)
            .iter()
            .map(|c| c.hash)
            .collect();
        state.sent_hashes.retain(|hash| uncovered.contains(hash));
    }
    if !carried && message.heads == before {
        state.last_sent_heads.clone_from(&message.heads);
    }
    if known.len() == message.heads.len() {
        state.shared_heads.clone_from(&message.heads);
        if message.heads.is_empty() {
            state.last_sent_heads = Vec::new();
            state.sent_hashes = Default::default();
        }
    } else {
        let mut shared: Vec<ChangeHash> =
            state.shared_heads.iter().chain(&known).copied().collect();
        shared.sort();
        shared.dedup();
        state.shared_heads = shared;
    }
    state.their_have = Some(message.have);
    state.their_heads = Some(message.heads);
    state.their_need = Some(message.need);
    Ok(())
}

impl Incident {
    /// Receives one encoded sync message from a peer whose sync state is `state` and whose changes are `sender`'s:
    /// checks that none of its new changes comes under an actor recorded as someone else's (refused whole if one
    /// does), merges it, reverts what breaks the schema or the command rules (as [`Incident::enforce`], in a change
    /// by `server`, which also records the sender's new actors, those of changes held back for a missing
    /// dependency included), and returns the answer to send once the merged changes are durable. `memo` shares
    /// the work with peers in the same state.
    pub fn receive_sync(
        &mut self,
        memo: &mut SyncMemo,
        state: &mut sync::State,
        data: &[u8],
        sender: &Editor,
        server: &Editor,
    ) -> Result<super::Received, ReceiveError> {
        let shared = memo
            .at(self)
            .received
            .get(state)
            .and_then(|seen| seen.iter().find(|(message, _)| message == data))
            .map(|(_, after)| after.clone());
        let (violations, touched, carried_changes) = match shared {
            // A message without changes leaves the document as it is: nothing to enforce.
            Some(after) => {
                *state = after;
                (Vec::new(), Some(BTreeSet::new()), false)
            }
            None => {
                let message =
                    sync::Message::decode(data).map_err(|e| ReceiveError::Decode(e.to_string()))?;
                check_blooms(&message)?;
                let (newcomers, merged) = self.newcomers(&message, &sender.name)?;
                let carried_changes = !message.changes.is_empty();
                let unchanged = (!carried_changes).then(|| state.clone());
                let before = self.doc_mut().get_heads();
                if let Err(message) = receive_acknowledgement(&before, state, message) {
                    receive_changes(self.doc_mut(), state, message)
                        .map_err(|e| ReceiveError::Apply(e.to_string()))?;
                }
                // Raw changes cannot be refused once merged: what breaks a command rule is reverted at once, in a
                // change that goes out with the answer. A message without changes changed nothing to judge.
                let newcomers = self.applied_authors(newcomers, &sender.name);
                let (violations, touched) = if carried_changes {
                    self.enforce_recording(&before, sender, server, &newcomers, &merged)
                } else {
                    (Vec::new(), Some(BTreeSet::new()))
                };
                if carried_changes {
                    // Only the sender's changes, exactly, moved the document: caught-up peers get their bytes.
                    let exact = touched.is_some() && !merged.is_empty() && {
                        let moved: BTreeSet<ChangeHash> = self
                            .doc_mut()
                            .get_changes_meta(&before)
                            .iter()
                            .map(|c| c.hash)
                            .collect();
                        moved == merged.iter().map(automerge::Change::hash).collect()
                    };
                    let after = self.doc_mut().get_heads();
                    if exact {
                        memo.fresh.record(before.clone(), after, merged);
                    } else {
                        memo.fresh.steps.clear();
                    }
                }
                if let Some(key) = unchanged {
                    memo.at(self)
                        .received
                        .entry(key)
                        .or_default()
                        .push((data.to_vec(), state.clone()));
                }
                (violations, touched, carried_changes)
            }
        };
        // One answer per message, as automerge-repo generates them, never "until there is nothing left to say":
        // a peer whose `have` names a last sync we do not know gets a reset message from every call, forever (found
        // by the `sync_message` fuzz target: one 74-byte frame hung the document actor).
        let answer = carried_changes
            .then(|| self.generate_sync(memo, state))
            .flatten();
        Ok(Received {
            violations,
            answer,
            touched,
        })
    }

    /// The message's changes this replica does not hold yet whose actors the authorship record does not know
    /// (they become `sender`'s once applied), and all the changes it does not hold yet; refuses the message if one
    /// of them is someone else's.
    fn newcomers(
        &mut self,
        message: &sync::Message,
        sender: &str,
    ) -> Result<(Newcomers, Vec<automerge::Change>), ReceiveError> {
        let mut newcomers: Newcomers = Vec::new();
        let changes = message
            .changes
            .iter()
            .map(chunk_changes)
            .collect::<Result<Vec<_>, _>>()?;
        // Metadata only: `get_change_by_hash` would rebuild each change from the document's operations.
        let doc = self.doc_mut().document();
        let unknown: Vec<automerge::Change> = changes
            .into_iter()
            .flatten()
            .filter(|change| doc.get_change_meta_by_hash(&change.hash()).is_none())
            .collect();
        for change in &unknown {
            let actor = change.actor_id();
            match self.author_of(actor) {
                Some(owner) if owner != sender => {
                    return Err(ReceiveError::Forged {
                        actor: actor.to_hex_string(),
                        owner,
                    });
                }
                Some(_) => {}
                None => newcomers.push((change.hash(), actor.clone())),
            }
        }
        Ok((newcomers, unknown))
    }

    /// The next sync message for a peer whose state is `state`, encoded, if it lacks anything; `memo` shares the
    /// work with peers in the same state.
    pub fn generate_sync(
        &mut self,
        memo: &mut SyncMemo,
        state: &mut sync::State,
    ) -> Option<Vec<u8>> {
        let memo = memo.at(self);
        if let Some((after, message)) = memo.generated.get(state) {
            *state = after.clone();
            return message.clone();
        }
        let before = state.clone();
        let heads = memo.version.0.clone();
        let caught_up = generate_caught_up(&memo.fresh, &heads, self.doc_mut().document(), state);
        let message = match caught_up {
            Some(message) => Some(message.encode()),
            None => self
                .doc_mut()
                .sync()
                .generate_sync_message(state)
                .map(sync::Message::encode),
        };
        memo.generated
            .insert(before, (state.clone(), message.clone()));
        message
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use automerge::sync::{self, SyncDoc};
    use chrono::{TimeZone, Utc};

    use super::{ReceiveError, SyncMemo, receive_changes};
    use crate::template::builtin;
    use crate::{Declaration, Editor, Incident, Operation};

    /// An editor at a fixed time (also for other modules' tests).
    pub(crate) fn editor(name: &str) -> Editor {
        Editor::new(name, Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap())
    }

    /// A new incident from the first builtin template (also for other modules' tests).
    pub(crate) fn declared() -> Incident {
        let template = builtin().into_iter().next().expect("a builtin template");
        let declaration = Declaration {
            name: "Checkout down".into(),
            number: None,
        };
        Incident::create(&template, &declaration, &editor("alice"), None).expect("create")
    }

    #[test]
    fn a_peer_edit_arrives_and_is_answered() {
        let mut server = declared();
        let mut peer = Incident::load(&server.save()).expect("load");
        peer.apply(
            &Operation::SpliceText {
                field: "summary".into(),
                item: None,
                pos: 0,
                delete: 0,
                insert: "Rolled back.".into(),
            },
            &editor("bob"),
        )
        .expect("edit");
        let (mut ours, mut theirs) = (sync::State::new(), sync::State::new());
        let mut memo = SyncMemo::default();
        let mut received = 0;
        // Rounds of the protocol until neither side has anything to say.
        for _ in 0..10 {
            let Some(message) = peer.doc_mut().sync().generate_sync_message(&mut theirs) else {
                break;
            };
            let carries_changes = !message.changes.is_empty();
            let step = server
                .receive_sync(
                    &mut memo,
                    &mut ours,
                    &message.encode(),
                    &editor("bob"),
                    &editor("commandpost"),
                )
                .expect("a valid message");
            assert!(step.violations.is_empty());
            assert_eq!(step.answer.is_some(), carries_changes);
            received += 1;
            // What the actor does at the end of its batch for a peer that spoke.
            let answer = step
                .answer
                .or_else(|| server.generate_sync(&mut memo, &mut ours));
            if let Some(answer) = answer {
                let answer = sync::Message::decode(&answer).expect("our answer decodes");
                peer.doc_mut()
                    .sync()
                    .receive_sync_message(&mut theirs, answer)
                    .expect("the peer applies our answer");
            }
        }
        assert!(received > 0);
        assert_eq!(server.doc_mut().get_heads(), peer.doc_mut().get_heads());
    }

    #[test]
    fn garbage_is_refused_and_changes_nothing() {
        let mut server = declared();
        let heads = server.doc_mut().get_heads();
        let mut state = sync::State::new();
        for bytes in [
            &b""[..],
            b"\x42",
            b"\x42\x00\x01garbage",
            b"not a sync message at all",
        ] {
            let result = server.receive_sync(
                &mut SyncMemo::default(),
                &mut state,
                bytes,
                &editor("mallory"),
                &editor("commandpost"),
            );
            assert!(
                matches!(
                    result,
                    Err(ReceiveError::Decode(_) | ReceiveError::Apply(_))
                ),
                "{bytes:?}: {result:?}"
            );
        }
        assert_eq!(server.doc_mut().get_heads(), heads);
    }

    /// A V2 sync message whose `have` claims a last sync at a change this replica never saw (and which sends no
    /// changes): automerge answers it with a reset every time it is asked, so a loop that generated answers until
    /// none was left never ended. Found by the `sync_message` fuzz target; kept in its corpus.
    const UNKNOWN_LAST_SYNC: &[u8] =
        include_bytes!("../../fuzz/corpus/sync_message/regression-unknown-last-sync");

    #[test]
    fn a_claimed_last_sync_we_never_saw_gets_one_reset_and_ends() {
        let mut server = declared();
        let heads = server.doc_mut().get_heads();
        let mut state = sync::State::new();
        let mut memo = SyncMemo::default();
        for _ in 0..3 {
            let step = server
                .receive_sync(
                    &mut memo,
                    &mut state,
                    UNKNOWN_LAST_SYNC,
                    &editor("mallory"),
                    &editor("commandpost"),
                )
                .expect("the message is valid");
            assert!(
                step.answer.is_none(),
                "no changes: the next generation answers"
            );
            let answer = server
                .generate_sync(&mut memo, &mut state)
                .expect("the peer is told to start over");
            let answer = sync::Message::decode(&answer).expect("the answer decodes");
            assert_eq!(answer.heads, heads, "a reset carries our heads");
            // A reset: our heads, an empty "have" (we share nothing with you), no changes.
            assert!(answer.have.iter().all(|have| have.last_sync.is_empty()));
            assert!(answer.changes.is_empty());
        }
        assert_eq!(server.doc_mut().get_heads(), heads);
    }

    /// Peers in equal states get exactly what automerge generates for each, from one computation; a change to
    /// the document makes the memo compute afresh.
    #[test]
    fn equal_states_share_one_generation_until_the_document_changes() {
        let mut doc = declared();
        let mut memo = SyncMemo::default();
        let (mut first, mut second, mut direct) =
            (sync::State::new(), sync::State::new(), sync::State::new());
        let expected = doc
            .doc_mut()
            .sync()
            .generate_sync_message(&mut direct)
            .map(sync::Message::encode);
        assert!(expected.is_some());
        assert_eq!(doc.generate_sync(&mut memo, &mut first), expected);
        assert_eq!(doc.generate_sync(&mut memo, &mut second), expected);
        assert_eq!((&first, &second), (&direct, &direct));
        assert_eq!(memo.len(), (1, 0));

        let entry = Operation::AddTimelineEntry {
            text: "paged".into(),
            at: None,
        };
        doc.apply(&entry, &editor("alice")).expect("edit");
        let fresh = doc.generate_sync(&mut memo, &mut sync::State::new());
        assert_ne!(fresh, expected);
        assert_eq!(memo.len(), (1, 0));
    }

    /// Two peers acknowledging with the same message end in the state automerge itself would give each, from one
    /// receive.
    #[test]
    fn equal_acknowledgements_share_one_receive() {
        let mut server = declared();
        let mut viewer = automerge::AutoCommit::new();
        let (mut to_viewer, mut to_server) = (sync::State::new(), sync::State::new());
        // Sync the viewer to completion, keeping its acknowledgements.
        let mut acks = Vec::new();
        for _ in 0..10 {
            if let Some(message) = server
                .doc_mut()
                .sync()
                .generate_sync_message(&mut to_viewer)
            {
                viewer
                    .sync()
                    .receive_sync_message(&mut to_server, message)
                    .expect("the viewer receives");
            }
            if let Some(ack) = viewer.sync().generate_sync_message(&mut to_server) {
                let data = ack.encode();
                let ack = sync::Message::decode(&data).expect("decode");
                server
                    .doc_mut()
                    .sync()
                    .receive_sync_message(&mut to_viewer, ack)
                    .expect("the server receives");
                acks.push(data);
            }
        }
        let ack = acks.last().expect("the viewer acknowledged").clone();
        let mut direct = to_viewer.clone();
        let decoded = sync::Message::decode(&ack).expect("decode");
        server
            .doc_mut()
            .sync()
            .receive_sync_message(&mut direct, decoded)
            .expect("direct");
        let mut memo = SyncMemo::default();
        let (mut first, mut second) = (to_viewer.clone(), to_viewer);
        let commandpost = editor("commandpost");
        let a = server
            .receive_sync(&mut memo, &mut first, &ack, &editor("viewer"), &commandpost)
            .expect("first");
        let b = server
            .receive_sync(
                &mut memo,
                &mut second,
                &ack,
                &editor("viewer"),
                &commandpost,
            )
            .expect("second");
        assert!(a.answer.is_none() && b.answer.is_none());
        assert_eq!(first, second);
        assert_eq!(memo.len().1, 1);
        let a = server.generate_sync(&mut memo, &mut first);
        let b = server.generate_sync(&mut memo, &mut second);
        assert_eq!(a, b);
        assert_eq!(first, second);
        // What automerge itself makes of the acknowledgement, before the answer it generates.
        let mut check = direct.clone();
        let answer = server
            .doc_mut()
            .sync()
            .generate_sync_message(&mut check)
            .map(sync::Message::encode);
        assert_eq!((answer, check), (a, first));
    }

    /// A peer in [`receives_end_as_automerge_would`]'s conversation: its replica, its sync state, the
    /// server's state for it, messages in flight each way.
    struct Peer {
        /// Writers type through the model; viewers hold a bare document.
        writer: Option<Incident>,
        doc: automerge::AutoCommit,
        state: sync::State,
        ours: sync::State,
        to_server: std::collections::VecDeque<Vec<u8>>,
        to_peer: std::collections::VecDeque<Vec<u8>>,
    }

    impl Peer {
        /// A writer (loaded from `saved`, with actor `[i; 16]`) or, with `writer` false, a viewer.
        fn new(saved: &[u8], i: u8, writer: bool) -> Peer {
            Peer {
                writer: writer.then(|| {
                    let mut writer = Incident::load(saved).expect("load");
                    writer
                        .doc_mut()
                        .set_actor(automerge::ActorId::from([i; 16]));
                    writer
                }),
                doc: automerge::AutoCommit::new(),
                state: sync::State::new(),
                ours: sync::State::new(),
                to_server: Default::default(),
                to_peer: Default::default(),
            }
        }

        /// A writer types a character.
        fn types(&mut self) {
            if let Some(writer) = &mut self.writer {
                let typed = Operation::SpliceText {
                    field: "summary".into(),
                    item: None,
                    pos: 0,
                    delete: 0,
                    insert: "x".into(),
                };
                writer.apply(&typed, &editor("bob")).expect("edit");
            }
        }

        /// The peer says what it has to say.
        fn speaks(&mut self) {
            let doc = replica(&mut self.writer, &mut self.doc);
            if let Some(message) = doc.sync().generate_sync_message(&mut self.state) {
                self.to_server.push_back(message.encode());
            }
        }

        /// The peer takes the server's oldest message in flight and answers it, as automerge-repo does.
        fn hears(&mut self) {
            if let Some(data) = self.to_peer.pop_front() {
                let message = sync::Message::decode(&data).expect("decode");
                let doc = replica(&mut self.writer, &mut self.doc);
                doc.sync()
                    .receive_sync_message(&mut self.state, message)
                    .expect("the peer receives");
                self.speaks();
            }
        }
    }

    /// The document a peer syncs: a writer's, or a viewer's bare one. Takes the two fields rather than the peer, so
    /// the peer's sync state can be borrowed alongside.
    fn replica<'p>(
        writer: &'p mut Option<Incident>,
        doc: &'p mut automerge::AutoCommit,
    ) -> &'p mut automerge::AutoCommit {
        match writer {
            Some(writer) => writer.doc_mut(),
            None => doc,
        }
    }

    /// The server takes `peer`'s oldest message in flight, then answers. Automerge itself also receives the
    /// message, on a copy of the server's document and of its state for the peer, and both states must end equal.
    /// Returns whether the message carried changes, and whether it was an acknowledgement at the heads that allow
    /// the short cut.
    fn server_hears(server: &mut Incident, memo: &mut SyncMemo, peer: &mut Peer) -> (bool, bool) {
        let Some(data) = peer.to_server.pop_front() else {
            return (false, false);
        };
        let message = sync::Message::decode(&data).expect("decode");
        let carried = !message.changes.is_empty();
        let our_heads = server.doc_mut().get_heads();
        let short_cut =
            !carried && (message.heads == our_heads || message.heads == peer.ours.last_sent_heads);
        let mut expected = peer.ours.clone();
        server
            .doc()
            .clone()
            .sync()
            .receive_sync_message(&mut expected, message.clone())
            .expect("automerge receives");
        if carried {
            // `receive_sync` answers at once, which moves the state on: compare what receiving alone leaves.
            let mut ours = peer.ours.clone();
            receive_changes(&mut server.doc().clone(), &mut ours, message).expect("we receive");
            assert_eq!(ours, expected);
        }
        let step = server
            .receive_sync(
                memo,
                &mut peer.ours,
                &data,
                &editor("bob"),
                &editor("commandpost"),
            )
            .expect("the server receives");
        if !carried {
            assert_eq!(&peer.ours, &expected);
        }
        let answer = step
            .answer
            .or_else(|| generate_checked(server, memo, &mut peer.ours));
        peer.to_peer.extend(answer);
        (carried, short_cut)
    }

    /// Caught-up generations built from the fresh changes' bytes, over all conversations of the tests (a count that
    /// shows the comparison below ran).
    static CAUGHT_UP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// The change hashes a message carries, and whether it carries a whole document.
    fn carried_hashes(
        message: &sync::Message,
    ) -> (std::collections::BTreeSet<automerge::ChangeHash>, bool) {
        let whole = message.changes.iter().any(|entry| entry.get(8) == Some(&0));
        let hashes = message
            .changes
            .iter()
            .flat_map(|entry| super::chunk_changes(entry).expect("our chunks parse"))
            .map(|change| change.hash())
            .collect();
        (hashes, whole)
    }

    /// The server's next message for a peer, checked against automerge's own generation from the same state: the
    /// same heads, need, `have` and flags, every change automerge would send (and only the extra a Bloom filter's
    /// false positive or automerge's whole-document rule would leave out), and the same state after, but for the
    /// sent hashes those extras add.
    fn generate_checked(
        server: &mut Incident,
        memo: &mut SyncMemo,
        state: &mut sync::State,
    ) -> Option<Vec<u8>> {
        let mut expected = state.clone();
        let automerges = server.doc_mut().sync().generate_sync_message(&mut expected);
        let heads = server.doc_mut().get_heads();
        let mut probe = state.clone();
        let fast = super::generate_caught_up(
            &memo.at(server).fresh,
            &heads,
            server.doc_mut().document(),
            &mut probe,
        );
        CAUGHT_UP.fetch_add(
            usize::from(fast.is_some()),
            std::sync::atomic::Ordering::Relaxed,
        );
        let ours = server.generate_sync(memo, state);
        let decoded = ours
            .as_deref()
            .map(|data| sync::Message::decode(data).expect("decodes"));
        assert_eq!(decoded.is_some(), automerges.is_some());
        if let (Some(ours), Some(theirs)) = (&decoded, &automerges) {
            assert_eq!(
                (&ours.heads, &ours.need, &ours.flags),
                (&theirs.heads, &theirs.need, &theirs.flags)
            );
            let lasts = |m: &sync::Message| {
                m.have
                    .iter()
                    .map(|h| h.last_sync.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(lasts(ours), lasts(theirs));
            let ((ours_sent, _), (theirs_sent, whole)) =
                (carried_hashes(ours), carried_hashes(theirs));
            if !whole {
                assert!(ours_sent.is_superset(&theirs_sent));
            }
        }
        let mut normalised = state.clone();
        normalised.sent_hashes.clone_from(&expected.sent_hashes);
        assert_eq!(normalised, expected);
        assert!(state.sent_hashes.is_superset(&expected.sent_hashes));
        ours
    }

    /// Three writers and two viewers sync with a server replica while messages travel with random delays in both
    /// directions, so acknowledgements arrive stale, crossed by other writers' changes; every message the server
    /// receives must leave the peer's state exactly as automerge's own receive would (one carrying changes: before
    /// the answer to it moves the state on).
    #[test]
    fn receives_end_as_automerge_would() {
        // Fixed actors, so the run (and how many acknowledgements take the short cut) is the same every time.
        let template = builtin().into_iter().next().expect("a builtin template");
        let declaration = Declaration {
            name: "Checkout down".into(),
            number: None,
        };
        let mut server = Incident::create(
            &template,
            &declaration,
            &editor("alice"),
            Some(automerge::ActorId::from([0xa0; 16])),
        )
        .expect("create");
        let saved = server.save();
        let mut memo = SyncMemo::default();
        let mut peers: Vec<Peer> = (0..5).map(|i| Peer::new(&saved, i, i < 3)).collect();
        let mut seed: u64 = 0x5eed;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let (mut carried, mut short_cut) = (0, 0);
        for _ in 0..12_000 {
            let peer = &mut peers[next(5) as usize];
            match next(8) {
                0 => peer.types(),
                1 => peer.speaks(),
                2..=4 => {
                    let (had_changes, was_short) = server_hears(&mut server, &mut memo, peer);
                    carried += usize::from(had_changes);
                    short_cut += usize::from(was_short);
                }
                _ => peer.hears(),
            }
        }
        assert!(
            carried > 250 && short_cut > 250,
            "{carried} with changes, {short_cut} short"
        );
        // Everyone says what is left until nobody has anything to say (the server too, as its fan-outs do): every
        // replica ends at the server's heads.
        for _ in 0..50 {
            for peer in &mut peers {
                peer.speaks();
                peer.to_peer
                    .extend(generate_checked(&mut server, &mut memo, &mut peer.ours));
                while !peer.to_server.is_empty() {
                    server_hears(&mut server, &mut memo, peer);
                }
                while !peer.to_peer.is_empty() {
                    peer.hears();
                }
            }
        }
        let heads = server.doc_mut().get_heads();
        for peer in &mut peers {
            assert_eq!(replica(&mut peer.writer, &mut peer.doc).get_heads(), heads);
        }
        let caught_up = CAUGHT_UP.load(std::sync::atomic::Ordering::Relaxed);
        assert!(caught_up > 100, "{caught_up} caught-up generations");
    }

    /// A `have` whose Bloom filter claims entries but zero bits per entry made Automerge divide by zero while
    /// generating our answer: refused instead, and nothing changes. Found by the `sync_message` fuzz target; kept
    /// in its corpus.
    #[test]
    fn a_bloom_filter_without_bits_is_refused() {
        const ZERO_BITS: &[u8] =
            include_bytes!("../../fuzz/corpus/sync_message/regression-bloom-without-bits");
        let result = receive_unchanged(declared(), ZERO_BITS);
        assert!(matches!(result, Err(ReceiveError::Decode(_))), "{result:?}");
    }

    /// What `server` makes of mallory's `message`, having checked that the document did not move.
    fn receive_unchanged(
        mut server: Incident,
        message: &[u8],
    ) -> Result<super::Received, ReceiveError> {
        let heads = server.doc_mut().get_heads();
        let result = server.receive_sync(
            &mut SyncMemo::default(),
            &mut sync::State::new(),
            message,
            &editor("mallory"),
            &editor("commandpost"),
        );
        assert_eq!(server.doc_mut().get_heads(), heads);
        result
    }

    /// A change whose operation counter does not fit 32 bits made automerge's change parser panic while the server
    /// checked the change's actor: refused instead, and nothing changes. Found by the `sync_message` fuzz target;
    /// kept in its corpus.
    #[test]
    fn a_malformed_change_is_refused_not_a_panic() {
        const MALFORMED: &[u8] =
            include_bytes!("../../fuzz/corpus/sync_message/regression-op-counter-past-32-bits");
        let mut server = declared();
        server.govern();
        let result = receive_unchanged(server, MALFORMED);
        assert!(matches!(result, Err(ReceiveError::Apply(_))), "{result:?}");
    }
}
