//! commandpost's integration tests live in `tests/tests/`; this library holds their shared harness.
//!
//! - [`TestServer`]: a real server on a loopback port chosen by the OS, either in this process ([`TestServer::start`],
//!   fast, configurable) or as the real command line in a child process ([`TestServer::start_process`], for `kill -9`
//!   and restarts), with small HTTP helpers that speak the API the way a client would.
//! - [`SyncClient`]: a Rust automerge-repo peer over a real WebSocket, speaking the same wire protocol as the stock
//!   JavaScript client, with raw frame access for malformed-input tests.
//! - [`js_client::JsClient`]: the stock JavaScript automerge-repo client run by Node, connecting with a ticket as a
//!   browser does.
//! - [`Browser`]: a real headless Chromium driven over WebDriver, for end-to-end tests of the web client, and
//!   [`Proxy`], a TCP proxy whose link a test cuts to take one browser offline.
//! - [`Receiver`]: a real HTTP server on a loopback port that records the webhook deliveries it gets, can answer
//!   errors, and can go down and come back on the same port.
//! - [`Ircd`]: a real IRC server (Debian's ngircd) on loopback, with TLS on request, restartable; [`IrcClient`], a
//!   raw IRC client that joins, says lines (hostile ones too), kicks and reads what the bot says.
//! - [`slack::SlackStandIn`]: the Slack Web API calls commandpost makes, on loopback, checking each request against
//!   Slack's documented shapes.
//! - [`TestDatabase`]: a fresh PostgreSQL schema for server nodes that share one database (cluster tests).
//! - [`oidc`]: a real OpenID Connect provider (npm `oidc-provider`) on loopback, and a cookie-keeping client that
//!   signs in through it as a browser does.
//! - [`hostile`]: user text that tries to run as code, and a check that an HTML page is inert.
//! - [`append_until_refused`]: an HTTP writer for crash and shutdown tests that returns exactly what was acknowledged.
//! - [`eventually`] and [`markdown_section`]: waiting for a condition with a deadline instead of sleeping, and reading
//!   one field back out of the Markdown export.

mod browser;
mod ca;
mod database;
pub mod hostile;
mod irc_client;
mod ircd;
pub mod js_client;
mod markdown;
pub mod oidc;
mod poll;
mod proxy;
mod receiver;
pub mod slack;
pub mod smtp;
mod sync_client;
mod test_server;
mod writers;

pub use browser::{
    AxeViolation, Browser, CHROMEDRIVER, CHROMIUM, Caret, WindowSize, artifacts_dir, target_dir,
};
pub use ca::TestCa;
pub use database::TestDatabase;
pub use irc_client::{IrcClient, Line};
pub use ircd::Ircd;
pub use markdown::markdown_section;
pub use poll::eventually;
pub use proxy::Proxy;
pub use receiver::{Delivery, Receiver};
pub use sync_client::{Socket, SyncClient, SyncTarget};
pub use test_server::{DeclaredIncident, TestServer};
pub use writers::append_until_refused;

/// The WebSocket library the [`SyncClient`] uses, re-exported so tests can build raw frames (`ws::Message`) without
/// depending on its exact version themselves.
pub use tokio_tungstenite::tungstenite as ws;

/// The default deadline of harness operations that wait for the server (joining, opening a document, an edit's
/// acknowledgement). Generous, because a loaded CI machine with two cores runs many tests at once; a passing test
/// never waits this long.
pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);
