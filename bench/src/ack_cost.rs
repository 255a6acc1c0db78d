//! What one viewer's acknowledgement costs a server's Automerge replica as the document's history grows, measured
//! with Automerge alone (no server, no network): the figure behind the war room's upward drift.
//!
//! A server replica and a viewer replica sync to completion; then, many times over, the server makes one
//! keystroke, sends it, the viewer takes it in and acknowledges, and the server's `receive_sync_message` of that
//! acknowledgement is timed. In automerge 0.12 that call walks every ancestor of the viewer's heads
//! (`filter_changes` → `ChangeGraph::remove_ancestors`), so it grows with the history.

use std::time::{Duration, Instant};

use anyhow::Context;
use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ROOT};
use serde::{Deserialize, Serialize};

/// Acknowledgements timed per history length.
const ROUNDS: usize = 200;

/// One history length's figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    /// Changes in the document.
    pub history: usize,
    /// Mean time of the server's `receive_sync_message` for one acknowledgement, microseconds.
    pub ack_us: f64,
}

/// Measures each history length in turn.
pub fn measure(histories: &[usize]) -> anyhow::Result<Vec<Point>> {
    histories.iter().map(|&h| measure_one(h)).collect()
}

fn measure_one(history: usize) -> anyhow::Result<Point> {
    let mut server = AutoCommit::new();
    let text = server.put_object(ROOT, "summary", ObjType::Text)?;
    for i in 0..history {
        server.splice_text(&text, i, 0, "x")?;
        server.commit();
    }
    let mut viewer = AutoCommit::new();
    let (mut at_server, mut at_viewer) = (sync::State::new(), sync::State::new());
    loop {
        let to_viewer = server.sync().generate_sync_message(&mut at_server);
        let sent = to_viewer.is_some();
        if let Some(message) = to_viewer {
            viewer
                .sync()
                .receive_sync_message(&mut at_viewer, message)?;
        }
        let to_server = viewer.sync().generate_sync_message(&mut at_viewer);
        let answered = to_server.is_some();
        if let Some(message) = to_server {
            server
                .sync()
                .receive_sync_message(&mut at_server, message)?;
        }
        if !sent && !answered {
            break;
        }
    }
    let mut total = Duration::ZERO;
    for i in 0..ROUNDS {
        server.splice_text(&text, history + i, 0, "y")?;
        server.commit();
        let keystroke = server
            .sync()
            .generate_sync_message(&mut at_server)
            .context("a new change is always sent")?;
        viewer
            .sync()
            .receive_sync_message(&mut at_viewer, keystroke)?;
        let ack = viewer
            .sync()
            .generate_sync_message(&mut at_viewer)
            .context("a received change is always acknowledged")?;
        let started = Instant::now();
        server.sync().receive_sync_message(&mut at_server, ack)?;
        total += started.elapsed();
        while server
            .sync()
            .generate_sync_message(&mut at_server)
            .is_some()
        {}
    }
    Ok(Point {
        history,
        ack_us: total.as_secs_f64() * 1e6 / ROUNDS as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_is_measured() -> anyhow::Result<()> {
        let points = measure(&[50])?;
        assert_eq!(points.len(), 1);
        assert!(points[0].ack_us > 0.0);
        Ok(())
    }
}
