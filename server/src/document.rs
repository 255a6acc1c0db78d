//! Live documents: one actor per loaded incident owns its Automerge value, the sync state of every peer, its
//! persistence and its fan-out. Everything else talks to it through a [`DocHandle`] over a bounded channel.
//!
//! The actor is split as samod's is: `core.rs` is the state machine, with no IO and no clock (commands and the
//! time in, effects out: appends, frames, replies, cut-offs), tested on its own with a fake clock; `shell.rs` is
//! the tokio task that batches commands, does the storage IO the core asks for and carries out its effects;
//! `handle.rs` is what callers hold; `registry.rs` loads documents on first use and declares new ones.
//!
//! The actor works in batches: it takes every command already queued, applies them all, writes the new changes
//! to storage in one append (the store batches appends across documents too: group commit), and only then
//! answers HTTP callers and sends sync messages. So a change is durable before any peer or response can see it.

mod core;
mod handle;
mod registry;
mod shell;

pub use handle::{ApplyReply, Command, DocError, DocHandle, ReadFn, Snapshot, SnapshotReply};
pub use registry::Registry;

pub(crate) use self::core::summary_row;
