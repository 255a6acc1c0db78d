//! A small smoke of the load harness, run in CI: a few seconds of war room and a small join storm against an
//! in-process server. They check that every replica converges (the scenarios fail otherwise), not timing: CI
//! machines are shared and debug builds are slow, so figures come from `scripts/bench.sh` instead.

use std::sync::Arc;

use bench::scenario::Run;
use bench::target::{Server, Target};
use tests::TestServer;

mod smoke;

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
    let report = smoke::short_war_room(&run_on(&server)).await?;
    assert!(!report.windows.is_empty());
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_join_storm_gets_everyone_the_document() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    smoke::small_join_storm(&run_on(&server)).await?;
    server.stop().await;
    Ok(())
}
