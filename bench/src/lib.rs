//! commandpost-bench: a load generator for collaboration servers, built to measure commandpost and to compare it on
//! the same machine with automerge-repo's own sync server and with Hocuspocus, the most used Yjs server.
//!
//! Peers speak the automerge-repo protocol over real WebSockets ([`link`]) through the shared client peer,
//! [`wire::peer::Peer`]: editors are full Automerge replicas ([`editor`]), viewers are lean peers that follow a
//! document without holding one ([`viewer`]). The [`scenario`]s (war room, trace replay, join storm, many
//! incidents) measure edit latency from an editor's commit to every viewer ([`latency`]), throughput, bytes, and the
//! server's CPU and memory from `/proc` ([`process`]), and check that every replica converges. [`target`] hides how
//! each kind of server wants documents created; [`report`] turns results into the tables of BENCHMARKS.md.
//! Against Hocuspocus the same scenarios run with Yjs peers written with yrs ([`yjs`], over [`hocuspocus`]).
//! [`ack_cost`] measures, with Automerge alone, what one acknowledgement costs a server replica as history grows.

pub mod ack_cost;
pub mod changes;
pub mod editor;
pub mod hocuspocus;
pub mod latency;
pub mod link;
pub mod process;
pub mod report;
pub mod scenario;
pub mod target;
pub mod viewer;
pub mod yjs;
