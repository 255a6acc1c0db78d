//! A small smoke of the load harness, run in CI: a few seconds of war room and a small join storm against an
//! in-process server. They check that every replica converges (the scenarios fail otherwise), not timing: CI
//! machines are shared and debug builds are slow, so figures come from `scripts/bench.sh` instead.

use std::sync::Arc;

use bench::scenario::{Run, join_storm, war_room};
use bench::target::{Server, Target};
use tests::TestServer;

/// A run against `server` through its admin token.
fn run_on(server: &TestServer) -> Run {
    Run {
        target: Target::new(
            format!("ws://{}/sync", server.addr),
            Server::Commandpost {
                api: server.base_url.clone(),
                token: server.admin_token.clone(),
            },
        ),
        server: None,
        traffic: Arc::default(),
        hooks: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_war_room_converges() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let report = war_room::run(
        &run_on(&server),
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
    assert!(!report.windows.is_empty());
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_join_storm_gets_everyone_the_document() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let report = join_storm::run(
        &run_on(&server),
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
    server.stop().await;
    Ok(())
}
