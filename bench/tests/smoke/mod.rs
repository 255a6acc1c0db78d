//! The war room and the join storm that both smoke tests (`harness_smoke.rs` against commandpost,
//! `hocuspocus_smoke.rs` against Hocuspocus) run, with the same checks, so the two servers are held to one
//! standard: every replica converges and every keystroke is timed at every viewer, never a speed.

use bench::scenario::{Run, join_storm, war_room};

/// A few seconds of war room: 4 editors, 12 viewers, 100 keystrokes of history. Returns the report for checks
/// particular to one server.
pub async fn short_war_room(run: &Run) -> anyhow::Result<war_room::Report> {
    let report = war_room::run(
        run,
        war_room::Settings {
            editors: 4,
            rate: 10.0,
            viewers: 12,
            duration_s: 3.0,
            window_s: 1.0,
            history: 100,
        },
    )
    .await?;
    assert!(report.keystrokes > 0, "the editors typed");
    assert_eq!(
        report.delivered,
        report.keystrokes * 12,
        "every viewer timed every keystroke"
    );
    Ok(report)
}

/// Ten clients join a document with 500 keystrokes of history; each must get it, and all the same one.
pub async fn small_join_storm(run: &Run) -> anyhow::Result<()> {
    let report = join_storm::run(
        run,
        join_storm::Settings {
            clients: 10,
            history: 500,
            over_s: 0.5,
        },
    )
    .await?;
    assert_eq!(report.time_to_document.count, 10);
    assert_eq!(
        report.distinct_documents, 1,
        "everyone got the same document"
    );
    Ok(())
}
