//! The IRC bot: one connection per cluster, held by the node that holds the store's `irc` lease.
//!
//! [`run`] contends for the lease; its holder connects (TLS verified against the system's CAs and `ca-file`),
//! negotiates capabilities (`sasl`, `account-tag`, `server-time`), logs in (SASL PLAIN, else NickServ), joins
//! exactly the channels the chat core names, hands every line said there to it, says its answers, and says the
//! outbox's `Sink::Irc` posts, each once, spaced by a token bucket so the server never disconnects it for
//! flooding. It reconnects with capped exponential backoff and jitter, and rejoins after a kick. A node that cannot
//! renew the lease in time drops its connection at once, before the lease can pass to another node, so two nodes
//! never speak or listen for the same network at once. The protocol itself (parsing, splitting, CTCP, formatting
//! codes) is `irc/protocol.rs`, without IO.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use rand::Rng;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::{Chat, Heard, Network, Speaker};
use crate::config::IrcSettings;
use crate::metrics::Metrics;
use crate::store::outbox::{Attempt, Next, Sink};
use crate::store::{Store, StoreError};

pub mod protocol;

use protocol::{Message, Said, fold, line};

/// The lease whose holder runs the IRC connection.
pub const LEASE: &str = "irc";

/// How long a lease lasts unrenewed: a killed node's network is taken over this long after its last renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(6);

/// How long before the lease's expiry a holder that could not renew drops its connection: room for clock skew
/// between nodes and for the time a dropped socket takes to close.
const LEASE_MARGIN: Duration = Duration::from_millis(1500);

/// How often the bot re-reads the channels it should be in, besides being woken by its own node's changes.
const RECHECK: Duration = Duration::from_secs(3);

/// Silence from the server after which the bot sends a `PING`, and after which it gives the connection up.
const PING_AFTER: Duration = Duration::from_secs(60);
/// See [`PING_AFTER`].
const PING_TIMEOUT: Duration = Duration::from_secs(120);

/// How long connecting and registering may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long after a kick the bot rejoins.
const REJOIN_AFTER: Duration = Duration::from_secs(2);

/// How long a `JOIN` may go unanswered (or refused: banned, invite-only) before it is sent again.
const JOIN_RETRY: Duration = Duration::from_secs(30);

/// The reconnection backoff: the first delay, doubling to the cap; each delay is jittered down by up to half.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// See [`BACKOFF_FIRST`].
const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// How long a claimed post is ours before another claim may take it (a node that dies mid-post).
const POST_LEASE: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// How long a claimed post waits for the bot to get into its channel before it is put back (well within
/// [`POST_LEASE`], so the claim never runs out while the post is held).
const HOLD_FOR: Duration = Duration::from_secs(15);

/// What the IRC bot needs of the chat core: the channels to be in, and where lines heard go.
#[async_trait]
pub trait Listener: Send + Sync + 'static {
    /// Logs a line said in a bound channel and carries out what it asks; returns the lines to say back.
    async fn hear(&self, heard: Heard) -> Vec<String>;
    /// The channels bound to open incidents on IRC: the bot joins exactly these.
    async fn channels(&self) -> Result<Vec<String>, StoreError>;
    /// Woken when a channel of this node was bound or unbound.
    fn changed(&self) -> &Notify;
}

/// The chat core is what a server's bot listens for.
#[async_trait]
impl Listener for Chat {
    async fn hear(&self, heard: Heard) -> Vec<String> {
        Chat::hear(self, heard).await
    }

    async fn channels(&self) -> Result<Vec<String>, StoreError> {
        Chat::channels(self, Network::Irc).await
    }

    fn changed(&self) -> &Notify {
        &self.changed
    }
}

/// Everything the bot runs with.
pub struct Bot {
    /// The `[irc]` settings.
    pub settings: IrcSettings,
    /// The store: the lease and the outbox.
    pub store: Arc<dyn Store>,
    /// The chat core.
    pub chat: Arc<dyn Listener>,
    /// Where the bot's figures go.
    pub metrics: Arc<Metrics>,
    /// This node's lease holder id (random per process).
    pub holder: String,
}

/// Runs the bot until `shutdown`: contends for the lease, and while holding it keeps the connection. Releases the
/// lease on shutdown so another node takes over at once.
pub async fn run(bot: Bot, shutdown: CancellationToken) {
    let bot = Arc::new(bot);
    let ttl = chrono::TimeDelta::from_std(LEASE_TTL).unwrap_or(chrono::TimeDelta::seconds(6));
    loop {
        let asked = Instant::now();
        let acquired = tokio::select! {
            acquired = bot.store.acquire_lease(LEASE, &bot.holder, ttl, Utc::now()) => acquired,
            () = shutdown.cancelled() => break,
        };
        match acquired {
            Ok(Some(epoch)) => {
                tracing::info!(epoch, holder = %bot.holder, "holding the IRC lease: connecting");
                tokio::select! {
                    () = keep_lease(&bot, epoch, asked + LEASE_TTL) => {
                        tracing::warn!(epoch, "lost the IRC lease: disconnected");
                    }
                    () = connect_forever(&bot) => {}
                    () = shutdown.cancelled() => break,
                }
                bot.metrics.irc_connected.set(0);
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "could not ask for the IRC lease"),
        }
        tokio::select! {
            () = sleep(LEASE_TTL / 3) => {}
            () = shutdown.cancelled() => break,
        }
    }
    bot.metrics.irc_connected.set(0);
    if let Err(error) = bot.store.release_lease(LEASE, &bot.holder).await {
        tracing::warn!(%error, "could not release the IRC lease");
    }
}

/// Renews the lease every third of its lifetime; returns (so the connection is dropped) as soon as it is lost or
/// could not be renewed before `valid_until` less a margin.
async fn keep_lease(bot: &Bot, epoch: i64, mut valid_until: Instant) {
    let ttl = chrono::TimeDelta::from_std(LEASE_TTL).unwrap_or(chrono::TimeDelta::seconds(6));
    let mut next = Instant::now() + LEASE_TTL / 3;
    loop {
        let give_up = valid_until - LEASE_MARGIN;
        tokio::select! {
            () = sleep_until(next) => {}
            () = sleep_until(give_up) => return,
        }
        let asked = Instant::now();
        let renewed = tokio::select! {
            renewed = bot.store.acquire_lease(LEASE, &bot.holder, ttl, Utc::now()) => renewed,
            () = sleep_until(give_up) => return,
        };
        match renewed {
            Ok(Some(renewed)) if renewed == epoch => {
                valid_until = asked + LEASE_TTL;
                next = asked + LEASE_TTL / 3;
            }
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(%error, "could not renew the IRC lease; retrying");
                next = Instant::now() + Duration::from_millis(250);
            }
        }
    }
}

/// Connects, and reconnects after every end of a connection with capped, jittered exponential backoff (reset
/// after a connection that lasted).
async fn connect_forever(bot: &Bot) {
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        match session(bot).await {
            Ok(()) => tracing::info!("IRC connection closed by the server"),
            Err(error) => tracing::warn!(%error, "IRC connection ended"),
        }
        bot.metrics.irc_connected.set(0);
        bot.metrics.irc_reconnects.inc();
        if started.elapsed() > BACKOFF_CAP {
            failures = 0;
        }
        let delay = backoff(failures);
        failures = failures.saturating_add(1);
        sleep(delay).await;
    }
}

/// The delay before reconnection attempt `failures` (0-based): doubling from [`BACKOFF_FIRST`] to
/// [`BACKOFF_CAP`], jittered down by up to half so that bots do not reconnect in step.
fn backoff(failures: u32) -> Duration {
    let full = BACKOFF_FIRST
        .saturating_mul(1 << failures.min(16))
        .min(BACKOFF_CAP);
    full.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// A connection's byte stream, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// Opens the TCP connection and, with `tls`, the verified TLS session over it.
async fn open(settings: &IrcSettings) -> anyhow::Result<Box<dyn Io>> {
    let tcp = TcpStream::connect((settings.server.as_str(), settings.port())).await?;
    tcp.set_nodelay(true)?;
    if !settings.tls {
        return Ok(Box::new(tcp));
    }
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(tls_config(settings.ca_file.as_deref())?));
    let name = rustls_pki_types::ServerName::try_from(settings.server.clone())?;
    Ok(Box::new(connector.connect(name, tcp).await?))
}

/// The TLS client settings: the system's CAs plus those of `ca_file`, ring as the provider.
fn tls_config(ca_file: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // Unusable system certificates are skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path)
            .map_err(|e| anyhow::anyhow!("ca-file {}: {e}", path.display()))?
        {
            roots.add(cert.map_err(|e| anyhow::anyhow!("ca-file {}: {e}", path.display()))?)?;
            added += 1;
        }
        anyhow::ensure!(added > 0, "ca-file {} holds no certificate", path.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A line waiting for flood control, and the post it finishes.
struct Out {
    /// The line, without CR LF.
    line: String,
    /// The outbox row that is delivered once this line is written.
    finishes: Option<i64>,
}

/// A post's payload in the outbox.
#[derive(Deserialize)]
struct Post {
    /// The channel.
    channel: String,
    /// Plain text, possibly several lines.
    text: String,
}

/// The state of one connection.
struct Conn<'a> {
    /// The bot.
    bot: &'a Bot,
    /// The write half.
    writer: tokio::io::WriteHalf<Box<dyn Io>>,
    /// Our nick as the server knows it.
    nick: String,
    /// Whether the server welcomed us (001).
    registered: bool,
    /// Capabilities offered so far in a multi-line `CAP LS`.
    offered: String,
    /// Whether SASL logged us in.
    authenticated: bool,
    /// Channels we are in, by folded name → the name as the server sent it.
    joined: HashMap<String, String>,
    /// Channels we sent a `JOIN` for, by folded name → when.
    joining: HashMap<String, Instant>,
    /// Channels kicked from, by folded name → when to rejoin.
    rejoin: HashMap<String, Instant>,
    /// The channels we should be in (folded → as named), as the chat core last said.
    wanted: HashMap<String, String>,
    /// Lines waiting for flood control.
    queue: VecDeque<Out>,
    /// Claimed posts waiting for us to get into their channel, by folded name: (since when, row id, post).
    held: HashMap<String, Vec<(Instant, i64, Post)>>,
    /// Flood control's tokens.
    tokens: f64,
    /// When the tokens were last refilled.
    refilled: Instant,
    /// When the server last sent anything.
    last_read: Instant,
    /// Whether we sent a `PING` for the current silence.
    pinged: bool,
}

/// One connection, from connecting to its end. `Ok` when the server closed it.
async fn session(bot: &Bot) -> anyhow::Result<()> {
    let settings = &bot.settings;
    let stream = timeout(CONNECT_TIMEOUT, open(settings))
        .await
        .map_err(|_| anyhow::anyhow!("connecting timed out"))??;
    let (reader, writer) = tokio::io::split(stream);
    let mut lines = Lines::new(reader);
    let now = Instant::now();
    let mut conn = Conn {
        bot,
        writer,
        nick: settings.nick.clone(),
        registered: false,
        offered: String::new(),
        authenticated: false,
        joined: HashMap::new(),
        joining: HashMap::new(),
        rejoin: HashMap::new(),
        wanted: HashMap::new(),
        queue: VecDeque::new(),
        held: HashMap::new(),
        tokens: f64::from(settings.flood_burst.max(1)),
        refilled: now,
        last_read: now,
        pinged: false,
    };
    conn.send(&line("CAP", &["LS", "302"])).await?;
    if let Some(password) = &settings.password {
        conn.send(&line("PASS", &[password])).await?;
    }
    conn.send(&line("NICK", &[&settings.nick])).await?;
    conn.send(&line(
        "USER",
        &[&settings.user, "0", "*", &settings.real_name],
    ))
    .await?;
    let registering = Instant::now() + CONNECT_TIMEOUT;
    let mut recheck = tokio::time::interval(RECHECK);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        let flood_wait = conn.next_send();
        tokio::select! {
            read = lines.next() => {
                let Some(read) = read? else { return Ok(()) };
                conn.last_read = Instant::now();
                conn.pinged = false;
                if let Some(message) = read.as_deref().and_then(Message::parse) {
                    conn.handle(message).await?;
                }
            }
            () = bot.chat.changed().notified(), if conn.registered => conn.reconcile().await?,
            _ = recheck.tick(), if conn.registered => conn.reconcile().await?,
            _ = tick.tick() => {
                if !conn.registered && Instant::now() > registering {
                    anyhow::bail!("the server did not welcome us in time");
                }
                conn.check_ping().await?;
                conn.rejoin_due().await?;
                if conn.registered {
                    conn.claim_posts().await;
                }
            }
            () = sleep_until(flood_wait.unwrap_or_else(far_future)), if flood_wait.is_some() => {
                conn.flush().await?;
            }
        }
    }
}

/// A moment that never comes, for disabled timers.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

/// Reads the server's lines. Cancellation-safe (the session's `select!` drops [`Lines::next`] whenever another
/// branch fires): a partial line stays in `buf` until the rest arrives.
struct Lines<R> {
    /// The read half.
    reader: BufReader<R>,
    /// The line read so far.
    buf: Vec<u8>,
    /// Whether the current line passed [`protocol::MAX_READ`] (it is skipped whole, never buffered).
    overlong: bool,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    /// Reads lines from `reader`.
    fn new(reader: R) -> Lines<R> {
        Lines {
            reader: BufReader::new(reader),
            buf: Vec::new(),
            overlong: false,
        }
    }

    /// The next line (up to LF), bytes that are not UTF-8 replaced; `Ok(None)` at the end of the stream,
    /// `Ok(Some(None))` for a line over [`protocol::MAX_READ`].
    async fn next(&mut self) -> std::io::Result<Option<Option<String>>> {
        loop {
            // The only await: nothing below it is interrupted, so a dropped call loses nothing.
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                return Ok(None);
            }
            let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
                Some(end) => (&available[..=end], true),
                None => (available, false),
            };
            let used = chunk.len();
            if self.buf.len() + used > protocol::MAX_READ {
                self.overlong = true;
                self.buf.clear();
            } else if !self.overlong {
                self.buf.extend_from_slice(chunk);
            }
            self.reader.consume(used);
            if done {
                let line =
                    (!self.overlong).then(|| String::from_utf8_lossy(&self.buf).into_owned());
                self.buf.clear();
                self.overlong = false;
                return Ok(Some(line));
            }
        }
    }
}

impl Conn<'_> {
    /// Writes a line at once, bypassing flood control (registration, `PONG`, `JOIN`: few, and urgent).
    async fn send(&mut self, text: &str) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(text.len() + 2);
        bytes.extend_from_slice(text.as_bytes());
        bytes.truncate(protocol::MAX_LINE - 2);
        bytes.extend_from_slice(b"\r\n");
        self.writer.write_all(&bytes).await?;
        self.writer.flush().await
    }

    /// Queues `text` for `channel`, line by line under the length limit; the last line finishes `finishes`.
    fn say(&mut self, channel: &str, text: &str, finishes: Option<i64>) {
        let budget = protocol::text_budget(&self.nick, channel);
        let lines = protocol::split_text(text, budget);
        let last = lines.len().saturating_sub(1);
        for (i, piece) in lines.iter().enumerate() {
            self.queue.push_back(Out {
                line: line("PRIVMSG", &[channel, piece]),
                finishes: if i == last { finishes } else { None },
            });
        }
        if lines.is_empty()
            && let Some(id) = finishes
        {
            // Nothing to say (an empty text) still finishes its post.
            self.queue.push_back(Out {
                line: String::new(),
                finishes: Some(id),
            });
        }
    }

    /// When the next queued line may go, if one waits.
    fn next_send(&mut self) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        self.refill();
        if self.tokens >= 1.0 {
            return Some(Instant::now());
        }
        Some(Instant::now() + Duration::from_secs_f64((1.0 - self.tokens) / self.rate()))
    }

    /// Lines per second: `flood-rate`, or 1 when it is no positive number (a rate of 0 or NaN would stop or
    /// unthrottle the bot).
    fn rate(&self) -> f64 {
        let rate = self.bot.settings.flood_rate;
        if rate.is_finite() && rate >= 0.01 {
            rate
        } else {
            1.0
        }
    }

    /// Adds the tokens earned since the last refill, up to the burst.
    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.rate();
        self.tokens = (self.tokens + earned).min(f64::from(self.bot.settings.flood_burst.max(1)));
        self.refilled = now;
    }

    /// Sends the queued lines flood control allows now. A post's last line is recorded delivered just before it
    /// is written (and put back to be retried if the write fails), so a node killed after saying it does not leave
    /// it to be said again by the next holder.
    async fn flush(&mut self) -> anyhow::Result<()> {
        self.refill();
        while self.tokens >= 1.0 {
            let Some(out) = self.queue.pop_front() else {
                break;
            };
            if let Some(id) = out.finishes {
                self.finish(id, Next::Done, None).await;
            }
            if out.line.is_empty() {
                continue;
            }
            if let Err(error) = self.send(&out.line).await {
                if let Some(id) = out.finishes {
                    let retry = Next::RetryAt(Utc::now() + chrono::TimeDelta::seconds(1));
                    self.finish(id, retry, Some(format!("the connection failed: {error}")))
                        .await;
                }
                return Err(error.into());
            }
            self.tokens -= 1.0;
            self.bot.metrics.irc_lines_said.inc();
        }
        Ok(())
    }

    /// Records a post's outcome; a failure to record is logged (the post may be said again after its claim ends).
    async fn finish(&self, id: i64, next: Next, error: Option<String>) {
        let attempt = Attempt {
            at: Utc::now(),
            status: None,
            error,
            next,
        };
        if let Err(error) = self.bot.store.finish_delivery(id, &attempt).await {
            tracing::warn!(%error, id, "could not record an IRC post's outcome");
        }
    }

    /// Claims due posts while few lines wait, in id order. A post for a channel we are in is queued; one for a
    /// channel we are not in yet (just bound, the `JOIN` under way) is held, with every later post for that
    /// channel, until we are in it, so a channel's posts keep their order.
    async fn claim_posts(&mut self) {
        let burst = self.bot.settings.flood_burst.max(1) as usize;
        let held: usize = self.held.values().map(Vec::len).sum();
        if self.queue.len() + held >= burst {
            self.release_stale_held().await;
            return;
        }
        let now = Utc::now();
        let mut claimed = match self
            .bot
            .store
            .claim_deliveries(Sink::Irc, now, now + POST_LEASE, burst)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "could not claim IRC posts");
                return;
            }
        };
        claimed.sort_by_key(|delivery| delivery.id);
        for delivery in claimed {
            let post = match serde_json::from_str::<Post>(&delivery.payload) {
                Ok(post) => post,
                Err(error) => {
                    let error = format!("unreadable post: {error}");
                    self.finish(delivery.id, Next::GiveUp, Some(error)).await;
                    continue;
                }
            };
            let folded = fold(&post.channel);
            if self.joined.contains_key(&folded) && !self.held.contains_key(&folded) {
                self.say(&post.channel, &post.text, Some(delivery.id));
            } else if delivery.attempts >= 20 {
                let error = format!("the bot is not in {}", post.channel);
                self.finish(delivery.id, Next::GiveUp, Some(error)).await;
            } else {
                self.held
                    .entry(folded)
                    .or_default()
                    .push((Instant::now(), delivery.id, post));
            }
        }
        self.release_stale_held().await;
    }

    /// Queues the posts held for `folded`, now that we are in it.
    fn say_held(&mut self, folded: &str) {
        for (_, id, post) in self.held.remove(folded).unwrap_or_default() {
            self.say(&post.channel, &post.text, Some(id));
        }
    }

    /// Puts back posts held too long for a channel we cannot get into (banned, invite-only), before their claim
    /// runs out: retried in a few seconds, counted in the delivery log.
    async fn release_stale_held(&mut self) {
        let stale: Vec<String> = self
            .held
            .iter()
            .filter(|(_, posts)| {
                posts
                    .first()
                    .is_some_and(|(at, _, _)| at.elapsed() > HOLD_FOR)
            })
            .map(|(folded, _)| folded.clone())
            .collect();
        for folded in stale {
            for (_, id, post) in self.held.remove(&folded).unwrap_or_default() {
                let retry = Next::RetryAt(Utc::now() + chrono::TimeDelta::seconds(3));
                let error = format!("the bot is not in {} yet", post.channel);
                self.finish(id, retry, Some(error)).await;
            }
        }
    }

    /// Pings a silent server, and gives the connection up when it stays silent.
    async fn check_ping(&mut self) -> anyhow::Result<()> {
        let silent = self.last_read.elapsed();
        if silent > PING_TIMEOUT {
            anyhow::bail!(
                "ping timeout: the server was silent for {}s",
                silent.as_secs()
            );
        }
        if silent > PING_AFTER && !self.pinged {
            self.pinged = true;
            self.send(&line("PING", &["commandpost"])).await?;
        }
        Ok(())
    }

    /// Rejoins the channels we were kicked from, once their delay passed, if still wanted.
    async fn rejoin_due(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let due: Vec<String> = self
            .rejoin
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(folded, _)| folded.clone())
            .collect();
        for folded in due {
            self.rejoin.remove(&folded);
            if let Some(name) = self.wanted.get(&folded).cloned() {
                self.join(&name).await?;
            }
        }
        Ok(())
    }

    /// Sends a `JOIN`, remembering when.
    async fn join(&mut self, name: &str) -> anyhow::Result<()> {
        self.joining.insert(fold(name), Instant::now());
        self.send(&line("JOIN", &[name])).await?;
        Ok(())
    }

    /// Joins the wanted channels we are not in, and parts the ones no longer wanted.
    async fn reconcile(&mut self) -> anyhow::Result<()> {
        let channels = match self.bot.chat.channels().await {
            Ok(channels) => channels,
            Err(error) => {
                tracing::warn!(%error, "could not read the IRC channels to be in");
                return Ok(());
            }
        };
        self.wanted = channels
            .into_iter()
            .filter(|name| {
                let valid = protocol::valid_channel(name);
                if !valid {
                    tracing::warn!(channel = %name, "not an IRC channel name; not joined");
                }
                valid
            })
            .map(|name| (fold(&name), name))
            .collect();
        let wanted: Vec<(String, String)> = self
            .wanted
            .iter()
            .map(|(folded, name)| (folded.clone(), name.clone()))
            .collect();
        for (folded, name) in wanted {
            let asked = self
                .joining
                .get(&folded)
                .is_some_and(|at| at.elapsed() < JOIN_RETRY);
            if !self.joined.contains_key(&folded) && !asked && !self.rejoin.contains_key(&folded) {
                self.join(&name).await?;
            }
        }
        let unwanted: Vec<String> = self
            .joined
            .iter()
            .filter(|(folded, _)| !self.wanted.contains_key(*folded))
            .map(|(_, name)| name.clone())
            .collect();
        for name in unwanted {
            self.send(&line("PART", &[&name, "incident closed"]))
                .await?;
            self.joined.remove(&fold(&name));
        }
        Ok(())
    }

    /// Whether `nick` is ours.
    fn is_me(&self, nick: &str) -> bool {
        fold(nick) == fold(&self.nick)
    }

    /// Whether `message` comes from us (the server echoes our `JOIN`, `PART`, `NICK`).
    fn sent_by_me(&self, message: &Message) -> bool {
        message.nick().is_some_and(|nick| self.is_me(nick))
    }

    /// Handles one message from the server.
    async fn handle(&mut self, message: Message) -> anyhow::Result<()> {
        match message.command.as_str() {
            "PING" => {
                let token = message.param(0).to_owned();
                self.send(&line("PONG", &[&token])).await?;
            }
            "CAP" => self.cap(&message).await?,
            "AUTHENTICATE" if message.param(0) == "+" => {
                let settings = &self.bot.settings;
                let chunks = protocol::sasl_plain(
                    settings.sasl_user.as_deref().unwrap_or(""),
                    settings.sasl_password.as_deref().unwrap_or(""),
                );
                for chunk in chunks {
                    self.send(&line("AUTHENTICATE", &[&chunk])).await?;
                }
            }
            "903" => {
                self.authenticated = true;
                self.send("CAP END").await?;
            }
            "902" | "904" | "905" | "906" | "908" => {
                tracing::error!(reply = %message.param(1), "IRC SASL login failed; carrying on unauthenticated");
                self.send("CAP END").await?;
            }
            "001" => {
                self.registered = true;
                if let Some(nick) = message.params.first() {
                    self.nick.clone_from(nick);
                }
                self.bot.metrics.irc_connected.set(1);
                tracing::info!(nick = %self.nick, "connected to IRC");
                if !self.authenticated
                    && let Some(password) = self.bot.settings.nickserv_password.clone()
                {
                    self.send(&line(
                        "PRIVMSG",
                        &["NickServ", &format!("IDENTIFY {password}")],
                    ))
                    .await?;
                }
                self.reconcile().await?;
            }
            "432" | "433" | "436" | "437" if !self.registered => {
                let mut nick = self.nick.clone();
                if nick.len() < 16 {
                    nick.push('_');
                } else {
                    nick.truncate(12);
                    nick.push_str(&rand::rng().random_range(1000..10_000).to_string());
                }
                self.nick = nick;
                let nick = self.nick.clone();
                self.send(&line("NICK", &[&nick])).await?;
            }
            "NICK" if self.sent_by_me(&message) => {
                self.nick = message.param(0).to_owned();
            }
            "JOIN" if self.sent_by_me(&message) => {
                let name = message.param(0).to_owned();
                let folded = fold(&name);
                self.joining.remove(&folded);
                tracing::info!(channel = %name, "joined");
                self.joined.insert(folded.clone(), name);
                self.say_held(&folded);
            }
            "PART" if self.sent_by_me(&message) => {
                self.joined.remove(&fold(message.param(0)));
            }
            "KICK" if self.is_me(message.param(1)) => {
                let folded = fold(message.param(0));
                tracing::warn!(channel = %message.param(0), by = ?message.nick(), "kicked; rejoining");
                self.joined.remove(&folded);
                self.rejoin.insert(folded, Instant::now() + REJOIN_AFTER);
            }
            // Cannot join: full, invite only, banned, bad key, no such channel, too many: retried later.
            "403" | "405" | "471" | "473" | "474" | "475" | "477" => {
                tracing::warn!(channel = %message.param(1), reply = %message.param(2), "cannot join");
            }
            "PRIVMSG" => self.privmsg(&message).await?,
            "ERROR" => anyhow::bail!("the server closed the link: {}", message.param(0)),
            _ => {}
        }
        Ok(())
    }

    /// Capability negotiation: request what we want of what is offered, then SASL or `CAP END`.
    async fn cap(&mut self, message: &Message) -> anyhow::Result<()> {
        let sasl =
            self.bot.settings.sasl_user.is_some() && self.bot.settings.sasl_password.is_some();
        match message.param(1) {
            "LS" => {
                // `CAP * LS * :…` continues on the next line; the last has no `*`.
                let more = message.params.len() > 3 && message.param(2) == "*";
                self.offered.push(' ');
                self.offered
                    .push_str(message.params.last().map_or("", String::as_str));
                if more || self.registered {
                    return Ok(());
                }
                let wanted = protocol::wanted_caps(&self.offered, sasl);
                if wanted.is_empty() {
                    self.send("CAP END").await?;
                } else {
                    self.send(&line("CAP", &["REQ", &wanted.join(" ")])).await?;
                }
            }
            "ACK" => {
                let acked = message.params.last().map_or("", String::as_str);
                if sasl && acked.split(' ').any(|cap| cap == "sasl") {
                    self.send("AUTHENTICATE PLAIN").await?;
                } else if !self.registered {
                    self.send("CAP END").await?;
                }
            }
            "NAK" if !self.registered => self.send("CAP END").await?,
            _ => {}
        }
        Ok(())
    }

    /// A line said in a channel we are in (not by us): handed to the chat core; its answers said back.
    async fn privmsg(&mut self, message: &Message) -> anyhow::Result<()> {
        let (Some(prefix), Some(nick)) = (message.prefix.as_deref(), message.nick()) else {
            return Ok(());
        };
        let target = message.param(0);
        let Some(channel) = self.joined.get(&fold(target)).cloned() else {
            return Ok(());
        };
        if nick.is_empty() || self.is_me(nick) || !prefix.contains('!') {
            return Ok(());
        }
        let text = match protocol::said(message.param(1)) {
            Said::Text(text) => protocol::strip_formatting(text),
            Said::Action(text) => format!("/me {}", protocol::strip_formatting(text)),
            Said::Ctcp => return Ok(()),
        };
        if text.trim().is_empty() {
            return Ok(());
        }
        let at = message
            .tag("time")
            .and_then(|time| chrono::DateTime::parse_from_rfc3339(time).ok())
            .map_or_else(Utc::now, |time| time.with_timezone(&Utc));
        let heard = Heard {
            network: Network::Irc,
            channel: channel.clone(),
            id: None,
            speaker: Speaker {
                name: nick.to_owned(),
                mask: Some(prefix.to_owned()),
                account: message
                    .tag("account")
                    .filter(|account| !account.is_empty() && *account != "*")
                    .map(str::to_owned),
            },
            text,
            at,
        };
        self.bot.metrics.irc_lines_heard.inc();
        let answers = self.bot.chat.hear(heard).await;
        for answer in answers {
            self.say(&channel, &answer, None);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        for failures in 0..40 {
            let delay = backoff(failures);
            let full = BACKOFF_FIRST
                .saturating_mul(1 << failures.min(16))
                .min(BACKOFF_CAP);
            assert!(delay >= full / 2 && delay <= full, "{failures}: {delay:?}");
        }
    }

    #[tokio::test]
    async fn overlong_lines_are_skipped_whole() {
        let mut input = Vec::new();
        input.extend_from_slice(b"PING :a\r\n");
        input.extend(std::iter::repeat_n(b'x', protocol::MAX_READ * 3));
        input.extend_from_slice(b"\r\nPING :b\r\n\xff\xfe\r\n");
        let mut reader = Lines::new(&input[..]);
        reader.reader = BufReader::with_capacity(64, &input[..]);
        let mut lines = Vec::new();
        while let Some(line) = reader.next().await.expect("reads") {
            lines.push(line);
        }
        assert_eq!(
            lines,
            vec![
                Some("PING :a\r\n".to_owned()),
                None,
                Some("PING :b\r\n".to_owned()),
                Some("\u{fffd}\u{fffd}\r\n".to_owned())
            ]
        );
    }
}
