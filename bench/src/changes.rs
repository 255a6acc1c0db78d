//! What the load generator knows about Automerge changes without holding a document: which actors are ours, what
//! kind of chunk a sync message carries, and a compact, order-independent summary of a set of changes.
//!
//! Convergence is checked with [`ChangeSet`]s: every editor summarises the changes it made, every viewer the
//! changes it received. Change hashes are SHA-256 of the change's content and Automerge recomputes them while
//! decoding, so a viewer whose summary and heads equal the editors' holds exactly the editors' changes, and
//! therefore exactly their document, without paying for a full replica per viewer.

use std::collections::HashSet;

use automerge::{ActorId, ChangeHash};

/// Every bench editor's actor id starts with these bytes, so viewers can tell a timed keystroke from the changes
/// that were there before (the server's creation change, a seeded history).
const ACTOR_PREFIX: &[u8] = b"cpbench";

/// The actor id of bench editor `index`: the prefix, the index and 8 random bytes (two runs never share actors).
pub fn bench_actor(index: u32) -> ActorId {
    let mut bytes = ACTOR_PREFIX.to_vec();
    bytes.extend_from_slice(&index.to_be_bytes());
    bytes.extend_from_slice(&wire::DocumentId::random().as_bytes()[..8]);
    ActorId::from(bytes)
}

/// Whether `actor` is a bench editor, whose changes carry their send time.
pub fn is_bench_actor(actor: &ActorId) -> bool {
    actor.to_bytes().starts_with(ACTOR_PREFIX)
}

/// The first four bytes of every Automerge chunk.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// What one entry of a sync message's change list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// A whole document (`save()`): what a sync server sends a peer that lacks more than a third of it.
    Document,
    /// One change, compressed or not.
    Change,
}

/// Reads the chunk type (after the magic bytes and the four-byte checksum); `None` for anything else.
pub fn chunk_kind(chunk: &[u8]) -> Option<ChunkKind> {
    if chunk.get(..4)? != MAGIC {
        return None;
    }
    match chunk.get(8)? {
        0 => Some(ChunkKind::Document),
        1 | 2 => Some(ChunkKind::Change),
        _ => None,
    }
}

/// Splits bytes holding several chunks back to back (automerge-repo's JavaScript peers may send changes that way
/// in one entry of a sync message) into single chunks: magic, checksum, type, LEB128 length, body. Anything that
/// does not parse ends the split; what is left is returned whole for the caller to reject.
pub fn split_chunks(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    while !bytes.is_empty() {
        let Some(length) = chunk_length(bytes) else {
            chunks.push(bytes);
            break;
        };
        let (chunk, rest) = bytes.split_at(length);
        chunks.push(chunk);
        bytes = rest;
    }
    chunks
}

/// The length of the chunk at the start of `bytes`, header included, if it is whole.
fn chunk_length(bytes: &[u8]) -> Option<usize> {
    chunk_kind(bytes)?;
    let (mut body, mut shift, mut at) = (0usize, 0u32, 9usize);
    loop {
        let byte = *bytes.get(at)?;
        at += 1;
        body |= usize::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let end = at.checked_add(body)?;
    (end <= bytes.len()).then_some(end)
}

/// A set of changes summarised as its size and the XOR of its hashes: equal for equal sets whatever the order in
/// which changes arrived, 40 bytes however many there are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// How many changes.
    pub count: u64,
    /// XOR of their hashes.
    digest: [u8; 32],
}

impl ChangeSet {
    /// Adds one change.
    pub fn add(&mut self, hash: &ChangeHash) {
        self.count += 1;
        for (d, h) in self.digest.iter_mut().zip(hash.0.iter()) {
            *d ^= h;
        }
    }
}

/// The heads after `added` changes (with their `deps`) join a history whose heads were `heads`: sorted, as
/// Automerge reports them. Order-independent within the batch, so a sync message's changes may come in any order.
/// Linear in the batch (a set of the dependencies), since one message may carry thousands of changes.
pub fn advance_heads(heads: &mut Vec<ChangeHash>, added: &[ChangeHash], deps: &[ChangeHash]) {
    let deps: HashSet<&ChangeHash> = deps.iter().collect();
    heads.extend_from_slice(added);
    heads.retain(|h| !deps.contains(h));
    heads.sort_unstable();
    heads.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    fn hash(byte: u8) -> ChangeHash {
        ChangeHash([byte; 32])
    }

    #[test]
    fn change_sets_ignore_order() {
        let (mut a, mut b) = (ChangeSet::default(), ChangeSet::default());
        for h in [1, 2, 3] {
            a.add(&hash(h));
        }
        for h in [3, 1, 2] {
            b.add(&hash(h));
        }
        assert_eq!(a, b);
        b.add(&hash(4));
        assert_ne!(a, b);
    }

    #[test]
    fn heads_follow_a_batch_in_any_order() {
        // 1 <- 2 <- 3 arrive as 3, 2 on top of head 1.
        let mut heads = vec![hash(1)];
        advance_heads(&mut heads, &[hash(3), hash(2)], &[hash(2), hash(1)]);
        assert_eq!(heads, vec![hash(3)]);
    }

    #[test]
    fn bench_actors_are_recognised() {
        assert!(is_bench_actor(&bench_actor(7)));
        assert!(!is_bench_actor(&ActorId::random()));
        assert_ne!(
            bench_actor(1),
            bench_actor(1),
            "two runs never share actors"
        );
    }

    #[test]
    fn back_to_back_chunks_split() {
        let mut doc = automerge::AutoCommit::new();
        let mut bytes = Vec::new();
        for key in ["a", "b"] {
            doc.put(automerge::ROOT, key, 1).expect("a put");
            doc.commit();
            let change = doc.get_last_local_change().expect("the change just made");
            bytes.extend_from_slice(change.raw_bytes());
        }
        let chunks = split_chunks(&bytes);
        assert_eq!(chunks.len(), 2);
        for chunk in chunks {
            assert!(automerge::Change::try_from(chunk).is_ok());
        }
        assert_eq!(split_chunks(b"junk"), vec![b"junk".as_slice()]);
    }

    #[test]
    fn chunk_kinds() {
        let mut doc = automerge::AutoCommit::new();
        assert_eq!(chunk_kind(&doc.save()), Some(ChunkKind::Document));
        assert_eq!(chunk_kind(b"not a chunk"), None);
    }
}
