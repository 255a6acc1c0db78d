//! The IRC bot against a real IRC server (Debian's ngircd on loopback) and real test clients: joining the bound
//! channels, hearing lines (formatting stripped, CTCP ignored, the speaker's full mask), answering, posting the
//! outbox's lines complete and in order under flood control, rejoining after a kick, reconnecting after the
//! server restarts, TLS verified against a private CA, hostile input, and one connection per cluster (a lease in a
//! shared PostgreSQL store) with takeover when the holder dies.
//!
//! The chat core is stood in for by [`Recorder`], which records what the bot hands it and answers `!ping`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use server::chat::irc::{self, Bot, Listener};
use server::chat::{Heard, Network};
use server::config::IrcSettings;
use server::metrics::Metrics;
use server::store::outbox::{DeliveryState, NewDelivery, Sink};
use server::store::postgres::PostgresStore;
use server::store::sqlite::SqliteStore;
use server::store::{Store, StoreError};
use tests::{IrcClient, Ircd, TestDatabase, TestServer, eventually};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long the bot may take to join, rejoin or reconnect on a loaded machine.
const SOON: Duration = Duration::from_secs(20);

/// How long a takeover may take on a loaded machine: the lease's lifetime, the survivor's next attempt and its
/// connection, with room to spare. A deadline, not a claim about speed (BENCHMARKS.md has the figures).
const TAKEOVER: Duration = Duration::from_secs(60);

/// The chat core's stand-in: the channels to be in, and every line heard.
#[derive(Default)]
struct Recorder {
    channels: Mutex<Vec<String>>,
    heard: Mutex<Vec<Heard>>,
    changed: Notify,
}

#[async_trait]
impl Listener for Recorder {
    async fn hear(&self, heard: Heard) -> Vec<String> {
        let answer = (heard.text == "!ping").then(|| vec!["pong".to_owned()]);
        self.heard.lock().expect("heard").push(heard);
        answer.unwrap_or_default()
    }

    async fn channels(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.channels.lock().expect("channels").clone())
    }

    fn changed(&self) -> &Notify {
        &self.changed
    }
}

impl Recorder {
    fn bind(&self, channels: &[&str]) {
        *self.channels.lock().expect("channels") =
            channels.iter().map(|c| (*c).to_owned()).collect();
        self.changed.notify_waiters();
    }

    fn heard(&self) -> Vec<Heard> {
        self.heard.lock().expect("heard").clone()
    }

    fn texts(&self) -> Vec<String> {
        self.heard().into_iter().map(|heard| heard.text).collect()
    }
}

/// A running bot and what to stop or inspect it with.
struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("the bot stops");
    }
}

fn settings(port: u16) -> IrcSettings {
    IrcSettings {
        server: "127.0.0.1".into(),
        port: Some(port),
        tls: false,
        ..IrcSettings::default()
    }
}

fn start_bot(
    settings: IrcSettings,
    store: Arc<dyn Store>,
    chat: Arc<Recorder>,
    holder: &str,
) -> Running {
    let metrics = Arc::new(Metrics::default());
    let stop = CancellationToken::new();
    let bot = Bot {
        settings,
        store,
        chat,
        metrics: metrics.clone(),
        holder: holder.to_owned(),
    };
    let task = tokio::spawn(irc::run(bot, stop.clone()));
    Running {
        stop,
        task,
        metrics,
    }
}

fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path()).expect("the store opens");
    (Arc::new(store), dir)
}

/// Waits until `client` sees `nick` join `channel`.
async fn joined(client: &mut IrcClient, nick: &str, channel: &str) -> tests::Line {
    client
        .wait_for(&format!("{nick} to join {channel}"), SOON, |line| {
            line.command == "JOIN"
                && line.nick.as_deref() == Some(nick)
                && line.param(0).eq_ignore_ascii_case(channel)
        })
        .await
        .expect("the bot joins")
}

/// A post queued in the outbox as the chat core queues it.
fn post(n: usize, channel: &str, text: &str) -> NewDelivery {
    NewDelivery {
        endpoint: channel.to_owned(),
        event_id: format!("post-{n}"),
        kind: "chat.post".into(),
        doc: wire::DocumentId::random(),
        payload: serde_json::json!({"channel": channel, "text": text}).to_string(),
        not_before: Utc::now(),
        coalesce: None,
        sink: Sink::Irc,
    }
}

async fn heard_count(chat: &Recorder, count: usize) {
    eventually(&format!("{count} lines heard"), SOON, || async {
        (chat.heard().len() >= count).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", chat.texts()));
}

/// Watches `channel` for two lease periods and fails if it ever holds more than one bot: the other nodes keep
/// asking for the lease meanwhile, and must not connect. (ngircd slows down clients that send many commands; a
/// NAMES a second stays under its penalty.)
async fn one_bot_throughout(client: &mut IrcClient, channel: &str) {
    let settle = Instant::now() + irc::LEASE_TTL * 2;
    while Instant::now() < settle {
        let names = client.names(channel).await.expect("names");
        let bots = names
            .iter()
            .filter(|name| name.starts_with("commandpost"))
            .count();
        assert_eq!(bots, 1, "one bot connection: {names:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits for another node's bot to join after the holder died, and prints how long the takeover took since
/// `died` (a figure for BENCHMARKS.md, never asserted: a loaded machine is slower).
async fn taken_over(client: &mut IrcClient, died: Instant) {
    client
        .wait_for("another node's bot to join", TAKEOVER, |line| {
            line.command == "JOIN"
                && line
                    .nick
                    .as_deref()
                    .is_some_and(|n| n.starts_with("commandpost"))
        })
        .await
        .expect("another node takes over");
    eprintln!(
        "takeover {:?} after the holder died (lease {:?})",
        died.elapsed(),
        irc::LEASE_TTL
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_joins_bound_channels_hears_lines_and_answers() {
    let ircd = Ircd::start().await;
    let (store, _dir) = sqlite();
    let chat = Arc::new(Recorder::default());
    let mut alice = IrcClient::connect(ircd.port, "alice", "alice")
        .await
        .expect("alice");
    alice.join("#inc-465-checkout").await.expect("alice joins");
    chat.bind(&["#Inc-465-Checkout"]);
    let bot = start_bot(settings(ircd.port), store.clone(), chat.clone(), "node-a");
    joined(&mut alice, "commandpost", "#inc-465-checkout").await;
    assert_eq!(bot.metrics.irc_connected.get(), 1);

    alice
        .say(
            "#inc-465-checkout",
            "!tl \u{2}database\u{2} \u{3}4failover\u{3} done",
        )
        .await
        .expect("say");
    alice
        .say("#inc-465-checkout", "\u{1}ACTION restarts the pool\u{1}")
        .await
        .expect("say");
    alice.say("#inc-465-checkout", "!ping").await.expect("say");
    let answers = alice
        .messages_from("commandpost", "#inc-465-checkout", 1, SOON)
        .await
        .expect("the bot answers");
    assert_eq!(answers, vec!["pong"]);
    heard_count(&chat, 3).await;
    let heard = chat.heard();
    assert_eq!(
        chat.texts(),
        vec![
            "!tl database failover done",
            "/me restarts the pool",
            "!ping"
        ]
    );
    for line in &heard {
        assert_eq!(line.network, Network::Irc);
        assert_eq!(line.channel.to_ascii_lowercase(), "#inc-465-checkout");
        assert_eq!(line.speaker.name, "alice");
        let mask = line.speaker.mask.as_deref().expect("a mask");
        assert!(
            mask.starts_with("alice!") && mask.contains("alice@"),
            "{mask}"
        );
        assert_eq!(line.id, None);
    }
    assert_eq!(bot.metrics.irc_lines_heard.get(), 3);

    // A line in a channel the bot is not in, or a private message, is not heard.
    alice.join("#elsewhere").await.expect("join");
    alice
        .say("#elsewhere", "not for the log")
        .await
        .expect("say");
    alice.send("PRIVMSG commandpost :psst").await.expect("say");
    // Unbinding parts the channel; a later line there is not heard either.
    chat.bind(&[]);
    alice
        .wait_for("the bot to part", SOON, |line| {
            line.command == "PART" && line.nick.as_deref() == Some("commandpost")
        })
        .await
        .expect("the bot parts");
    alice
        .say("#inc-465-checkout", "after the part")
        .await
        .expect("say");
    alice.names("#inc-465-checkout").await.expect("names");
    assert_eq!(chat.heard().len(), 3, "{:?}", chat.texts());
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kicked_bot_rejoins_and_restarted_server_is_reconnected() {
    let mut ircd = Ircd::start().await;
    let (store, _dir) = sqlite();
    let chat = Arc::new(Recorder::default());
    let mut op = IrcClient::connect(ircd.port, "opal", "opal")
        .await
        .expect("op");
    op.join("#inc-7").await.expect("op joins first: operator");
    chat.bind(&["#inc-7"]);
    let bot = start_bot(settings(ircd.port), store, chat.clone(), "node-a");
    joined(&mut op, "commandpost", "#inc-7").await;

    op.send("KICK #inc-7 commandpost :out").await.expect("kick");
    joined(&mut op, "commandpost", "#inc-7").await;

    ircd.restart().await;
    let mut op = IrcClient::connect(ircd.port, "opal", "opal")
        .await
        .expect("op again");
    op.join("#inc-7").await.expect("op joins again");
    let started = Instant::now();
    // The bot may be back before opal: then it is in the channel's names, else opal sees it join.
    let names = op.names("#inc-7").await.expect("names");
    if !names.iter().any(|nick| nick == "commandpost") {
        joined(&mut op, "commandpost", "#inc-7").await;
    }
    eprintln!(
        "reconnected and rejoined {:?} after the restart",
        started.elapsed()
    );
    assert!(bot.metrics.irc_reconnects.get() >= 1);
    op.say("#inc-7", "back").await.expect("say");
    heard_count(&chat, 1).await;
    assert_eq!(chat.texts(), vec!["back"]);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_the_server_against_the_configured_ca() {
    let ircd = Ircd::start_tls().await;
    let tls_port = ircd.tls_port.expect("a TLS port");
    let (store, _dir) = sqlite();
    let chat = Arc::new(Recorder::default());
    chat.bind(&["#secure"]);
    let mut watcher = IrcClient::connect(ircd.port, "watcher", "watcher")
        .await
        .expect("watcher");
    watcher.join("#secure").await.expect("join");

    // Without the private CA the certificate is not trusted: the bot never gets in.
    let untrusted = start_bot(
        IrcSettings {
            server: "localhost".into(),
            port: Some(tls_port),
            tls: true,
            nick: "untrusted".into(),
            ..IrcSettings::default()
        },
        store.clone(),
        chat.clone(),
        "node-a",
    );
    eventually("a refused TLS attempt", SOON, || async {
        (untrusted.metrics.irc_reconnects.get() >= 1).then_some(())
    })
    .await
    .expect("the untrusted connection fails");
    assert_eq!(untrusted.metrics.irc_connected.get(), 0);
    assert!(
        !watcher
            .names("#secure")
            .await
            .expect("names")
            .contains(&"untrusted".to_owned())
    );
    untrusted.stop().await;

    // With it, the bot connects over TLS and works as over plain text.
    let trusted = start_bot(
        IrcSettings {
            server: "localhost".into(),
            port: Some(tls_port),
            tls: true,
            ca_file: Some(ircd.ca_file()),
            ..IrcSettings::default()
        },
        store,
        chat.clone(),
        "node-a",
    );
    joined(&mut watcher, "commandpost", "#secure").await;
    watcher.say("#secure", "over tls").await.expect("say");
    heard_count(&chat, 1).await;
    trusted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_arrive_complete_in_order_without_flooding_out() {
    let ircd = Ircd::start().await;
    let (store, _dir) = sqlite();
    let chat = Arc::new(Recorder::default());
    chat.bind(&["#inc-9"]);
    let mut reader = IrcClient::connect(ircd.port, "reader", "reader")
        .await
        .expect("reader");
    reader.join("#inc-9").await.expect("join");
    let bot = start_bot(settings(ircd.port), store.clone(), chat.clone(), "node-a");
    joined(&mut reader, "commandpost", "#inc-9").await;

    let long = format!("{}end", "é😀 ".repeat(300));
    let mut posts: Vec<NewDelivery> = (0..30)
        .map(|n| post(n, "#inc-9", &format!("post {n}")))
        .collect();
    posts.push(post(30, "#inc-9", "two\nlines"));
    posts.push(post(31, "#inc-9", &long));
    let started = Instant::now();
    store.enqueue(posts).await.expect("queued");
    let said = reader
        .messages_from("commandpost", "#inc-9", 32, Duration::from_secs(120))
        .await
        .expect("every post arrives");
    let expected: Vec<String> = (0..30).map(|n| format!("post {n}")).collect();
    assert_eq!(said[..30], expected[..], "ngircd: {}", ircd.log());
    assert_eq!(said[30..32], ["two".to_owned(), "lines".to_owned()]);
    // The long post comes as several lines, each under the limit, rejoining to its text.
    let mut pieces: Vec<String> = Vec::new();
    while pieces.join(" ").len() < long.len() {
        pieces.extend(
            reader
                .messages_from("commandpost", "#inc-9", 1, SOON)
                .await
                .unwrap_or_else(|e| panic!("the long post: {e} ({pieces:?})")),
        );
    }
    let elapsed = started.elapsed();
    assert_eq!(pieces.join(" "), long);
    assert!(
        pieces.len() > 1 && pieces.iter().all(|piece| piece.len() <= 450),
        "{pieces:?}"
    );
    let lines = 32 + pieces.len();
    eprintln!(
        "32 posts ({lines} lines) in {elapsed:?}: {:.2} lines/s",
        lines as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(
        bot.metrics.irc_reconnects.get(),
        0,
        "flood control kept the bot connected"
    );
    assert!(
        reader
            .names("#inc-9")
            .await
            .expect("names")
            .contains(&"commandpost".to_owned())
    );
    // Every post is recorded delivered, once (the record follows its last line).
    eventually("every post recorded delivered", SOON, || async {
        let log = store.deliveries("#inc-9", 100).await.expect("the log");
        (log.len() == 32
            && log
                .iter()
                .all(|row| row.state == DeliveryState::Delivered && row.attempts == 1))
        .then_some(())
    })
    .await
    .expect("delivered once");
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lines_do_not_disturb_the_bot() {
    let ircd = Ircd::start().await;
    let (store, _dir) = sqlite();
    let chat = Arc::new(Recorder::default());
    chat.bind(&["#inc-13", "bad channel,#x", "#\u{7}"]);
    // The bot's nick is taken: it appends `_`.
    let mut squatter = IrcClient::connect(ircd.port, "commandpost", "squat")
        .await
        .expect("squatter");
    squatter.join("#inc-13").await.expect("join");
    let bot = start_bot(settings(ircd.port), store, chat.clone(), "node-a");
    joined(&mut squatter, "commandpost_", "#inc-13").await;

    let mut mallory = IrcClient::connect(ircd.port, "mallory", "mallory")
        .await
        .expect("mallory");
    mallory.join("#inc-13").await.expect("join");
    // A CTCP flood: never answered, never heard.
    for _ in 0..8 {
        mallory
            .send("PRIVMSG #inc-13 :\u{1}VERSION\u{1}")
            .await
            .expect("ctcp");
        mallory
            .send("PRIVMSG commandpost_ :\u{1}PING 1\u{1}")
            .await
            .expect("ctcp");
    }
    // Control characters (not NUL: no IRC line can carry it, and ngircd stalls the sender's connection on it),
    // formatting, invalid UTF-8, an empty line, a bare CTCP marker.
    mallory
        .send_raw(b"PRIVMSG #inc-13 :a\x07b\x1b[31mc\x01d\x0f\x16e\tf")
        .await
        .expect("control characters");
    mallory
        .send_raw(b"PRIVMSG #inc-13 :caf\xc3 \xff\xfe")
        .await
        .expect("bad utf-8");
    mallory.say("#inc-13", "").await.expect("empty");
    mallory
        .say("#inc-13", "\u{3}4,5\u{2}\u{2}")
        .await
        .expect("formatting only");
    mallory.say("#inc-13", "last").await.expect("say");
    // ngircd slows a flooding client down (it is not the bot's doing): give its lines time.
    eventually("the last line", Duration::from_secs(90), || async {
        chat.texts()
            .last()
            .is_some_and(|text| text == "last")
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}; mallory saw {:?}; ngircd: {}",
            chat.texts(),
            mallory.seen,
            ircd.log()
        )
    });
    let texts = chat.texts();
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert_eq!(texts[0], "ab[31mcde f");
    assert!(
        texts[1].starts_with("caf") && !texts[1].chars().any(char::is_control),
        "{:?}",
        texts[1]
    );
    // A nick pretending to be someone: the mask tells it apart (user name and host are the server's to say).
    let mut fake = IrcClient::connect(ircd.port, "alice", "impostor")
        .await
        .expect("fake alice");
    fake.join("#inc-13").await.expect("join");
    fake.say("#inc-13", "!sev SEV1").await.expect("say");
    heard_count(&chat, 4).await;
    let impostor = chat.heard().pop().expect("the impostor's line");
    assert_eq!(impostor.speaker.name, "alice");
    let mask = impostor.speaker.mask.expect("a mask");
    assert!(
        mask.starts_with("alice!~impostor@") || mask.starts_with("alice!impostor@"),
        "{mask}"
    );
    // Nothing was said back to any of it, and the bot is still there.
    assert!(
        !mallory
            .seen
            .iter()
            .any(|line| line.nick.as_deref() == Some("commandpost_")
                && matches!(line.command.as_str(), "PRIVMSG" | "NOTICE")),
        "the bot answered hostile input"
    );
    // An over-long line (the server cuts or refuses it; whatever reaches the bot is read safely).
    let mut longcat = IrcClient::connect(ircd.port, "longcat", "longcat")
        .await
        .expect("longcat");
    longcat.join("#inc-13").await.expect("join");
    longcat
        .say("#inc-13", &"x".repeat(3000))
        .await
        .expect("long");
    longcat.names("#inc-13").await.ok();
    fake.say("#inc-13", "after the long line")
        .await
        .expect("say");
    eventually(
        "the line after the long one",
        Duration::from_secs(60),
        || async {
            chat.texts()
                .contains(&"after the long line".to_owned())
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", chat.texts()));
    for line in chat.heard() {
        assert!(line.text.len() < 512, "{}", line.text.len());
    }
    assert_eq!(bot.metrics.irc_reconnects.get(), 0);
    assert!(
        squatter
            .names("#inc-13")
            .await
            .expect("names")
            .contains(&"commandpost_".to_owned())
    );
    bot.stop().await;
}

/// Two nodes on one PostgreSQL store: one connection; the holder dies without releasing (its task is dropped
/// mid-flight, as a killed process leaves the lease): the other takes over within the lease's lifetime, hears
/// every later line once, and every post, queued before and after, arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_per_cluster_and_takeover() {
    let ircd = Ircd::start().await;
    let database = TestDatabase::create();
    let node = |_: u8| -> Arc<dyn Store> {
        Arc::new(PostgresStore::open(&database.url()).expect("store"))
    };
    let (store_a, store_b) = (node(0), node(1));
    let chat_a = Arc::new(Recorder::default());
    let chat_b = Arc::new(Recorder::default());
    chat_a.bind(&["#inc-21"]);
    chat_b.bind(&["#inc-21"]);
    let mut watcher = IrcClient::connect(ircd.port, "watcher", "watcher")
        .await
        .expect("watcher");
    watcher.join("#inc-21").await.expect("join");
    let a = start_bot(
        settings(ircd.port),
        store_a.clone(),
        chat_a.clone(),
        "node-a",
    );
    joined(&mut watcher, "commandpost", "#inc-21").await;
    let b = start_bot(
        settings(ircd.port),
        store_b.clone(),
        chat_b.clone(),
        "node-b",
    );
    // Give node b several lease periods to (wrongly) connect too.
    one_bot_throughout(&mut watcher, "#inc-21").await;
    let (first, second) = if a.metrics.irc_connected.get() == 1 {
        (a, b)
    } else {
        (b, a)
    };
    watcher.say("#inc-21", "before").await.expect("say");
    let heard_by_both = || {
        let mut all = chat_a.texts();
        all.extend(chat_b.texts());
        all
    };
    eventually("the line before the death", SOON, || async {
        (!heard_by_both().is_empty()).then_some(())
    })
    .await
    .expect("heard");
    store_a
        .enqueue(vec![post(1, "#inc-21", "queued before")])
        .await
        .expect("queue");
    assert_eq!(
        watcher
            .messages_from("commandpost", "#inc-21", 1, SOON)
            .await
            .expect("post"),
        vec!["queued before"]
    );

    // The holder dies: its task is gone mid-flight, its socket closed, its lease left to expire.
    first.task.abort();
    let died = Instant::now();
    store_b
        .enqueue(vec![post(2, "#inc-21", "queued after")])
        .await
        .expect("queue");
    taken_over(&mut watcher, died).await;
    assert_eq!(second.metrics.irc_connected.get(), 1);
    assert_eq!(
        watcher
            .messages_from("commandpost", "#inc-21", 1, SOON)
            .await
            .expect("post"),
        vec!["queued after"]
    );
    watcher.say("#inc-21", "after").await.expect("say");
    eventually("the line after the takeover", SOON, || async {
        heard_by_both().contains(&"after".to_owned()).then_some(())
    })
    .await
    .expect("heard");
    let mut all = heard_by_both();
    all.sort();
    assert_eq!(
        all,
        vec!["after", "before"],
        "each line heard once, by one node"
    );
    eventually("both posts recorded delivered", SOON, || async {
        let log = store_b.deliveries("#inc-21", 10).await.expect("log");
        (log.len() == 2 && log.iter().all(|row| row.state == DeliveryState::Delivered))
            .then_some(())
    })
    .await
    .expect("delivered");
    // Nothing more is said: no post repeated.
    assert!(
        watcher
            .messages_from("commandpost", "#inc-21", 1, Duration::from_secs(3))
            .await
            .is_err()
    );
    second.stop().await;
}

/// A server's config with the bot on `port` and alice mapped by her full mask (user name `alice` on loopback).
fn server_config(port: u16, database_url: Option<&str>) -> String {
    let store = database_url.map_or(String::new(), |url| format!("database-url = \"{url}\"\n"));
    format!(
        "{store}\
         [irc]\n\
         server = \"127.0.0.1\"\n\
         port = {port}\n\
         tls = false\n\
         flood-burst = 5\n\
         flood-rate = 2.0\n\
         [chat]\n\
         [[chat.people]]\n\
         name = \"alice\"\n\
         scope = \"write\"\n\
         irc = [\"alice!~alice@127.0.0.1\"]\n"
    )
}

/// The channel log of an incident, oldest first, as `speaker: text`.
async fn chat_log(server: &TestServer, token: &str, id: &str) -> Vec<String> {
    let (status, body) = server
        .call(
            reqwest::Method::GET,
            &format!("/api/incidents/{id}/chat?limit=500"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let mut lines: Vec<String> = body["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|line| {
            format!(
                "{}: {}",
                line["speaker"].as_str().unwrap_or("?"),
                line["text"].as_str().unwrap_or("?")
            )
        })
        .collect();
    lines.reverse();
    lines
}

/// Binds `channel` to a new incident declared by alice; returns its id.
async fn declare_bound(server: &TestServer, alice: &str, channel: &str) -> String {
    let incident = server.declare(alice, "Checkout database failover").await;
    let (status, body) = server
        .bind_channel(
            alice,
            &incident.id,
            &serde_json::json!({"network": "irc", "name": channel}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    incident.id
}

/// The whole path through a real server: the bot joins the bound channel and greets it; a mapped person's `!tl`
/// becomes a timeline entry and `!sev` changes the severity, which the bot announces; a stranger and a nick
/// pretending to be alice from another user name are refused; every line is logged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_bot_logs_runs_commands_and_announces() {
    let ircd = Ircd::start().await;
    let server = TestServer::start_process_with_config(&server_config(ircd.port, None)).await;
    let alice_token = server.token("alice", "write").await;
    let mut alice = IrcClient::connect(ircd.port, "alice", "alice")
        .await
        .expect("alice");
    alice.join("#inc-1-db").await.expect("join");
    let id = declare_bound(&server, &alice_token, "#inc-1-db").await;
    joined(&mut alice, "commandpost", "#inc-1-db").await;
    let greeting = alice
        .messages_from("commandpost", "#inc-1-db", 1, SOON)
        .await
        .expect("the greeting");
    assert!(
        greeting[0].contains("is now the incident's command post"),
        "{greeting:?}"
    );

    alice
        .say("#inc-1-db", "!tl \u{2}failover\u{2} started")
        .await
        .expect("say");
    alice.say("#inc-1-db", "!sev SEV1").await.expect("say");
    let announced = alice
        .messages_from("commandpost", "#inc-1-db", 2, SOON)
        .await
        .expect("the answer to !tl and the severity post");
    assert!(
        announced[0].contains("noted in the timeline"),
        "{announced:?}"
    );
    assert!(announced[1].contains("SEV1"), "{announced:?}");
    eventually("the timeline entry", SOON, || async {
        server
            .markdown(&alice_token, &id)
            .await
            .contains("failover started")
            .then_some(())
    })
    .await
    .expect("!tl makes a timeline entry");
    assert_eq!(
        server.incident_json(&alice_token, &id).await["severity"],
        "SEV1"
    );

    let mut mallory = IrcClient::connect(ircd.port, "mallory", "mallory")
        .await
        .expect("mallory");
    mallory.join("#inc-1-db").await.expect("join");
    mallory.say("#inc-1-db", "!sev SEV3").await.expect("say");
    let refusal = mallory
        .messages_from("commandpost", "#inc-1-db", 1, SOON)
        .await
        .expect("a refusal");
    assert!(
        refusal[0].contains("I don't know who you are"),
        "{refusal:?}"
    );
    // alice leaves; someone takes her nick from another user name: not alice.
    alice.send("QUIT :bye").await.expect("quit");
    mallory
        .wait_for("alice to quit", SOON, |line| {
            line.command == "QUIT" && line.nick.as_deref() == Some("alice")
        })
        .await
        .expect("alice quits");
    let mut fake = IrcClient::connect(ircd.port, "alice", "impostor")
        .await
        .expect("fake alice");
    fake.join("#inc-1-db").await.expect("join");
    fake.say("#inc-1-db", "!sev SEV4").await.expect("say");
    let refusal = fake
        .messages_from("commandpost", "#inc-1-db", 1, SOON)
        .await
        .expect("a refusal");
    assert!(
        refusal[0].contains("I don't know who you are"),
        "{refusal:?}"
    );
    assert_eq!(
        server.incident_json(&alice_token, &id).await["severity"],
        "SEV1"
    );

    let log = chat_log(&server, &alice_token, &id).await;
    assert_eq!(
        log,
        vec![
            "alice: !tl failover started",
            "alice: !sev SEV1",
            "mallory: !sev SEV3",
            "alice: !sev SEV4",
        ],
        "every line logged once, formatting stripped"
    );
    assert!(
        server
            .metric("commandpost_irc_lines_heard_total")
            .await
            .expect("metric")
            >= 4
    );
    assert_eq!(
        server
            .metric("commandpost_irc_connected")
            .await
            .expect("metric"),
        1
    );

    // Closing frees the channel, and the bot says so there before it leaves.
    let closed = server
        .operations(
            &alice_token,
            &id,
            serde_json::json!([{"op": "setStatus", "status": "closed", "overrideReason": "resolved in the test"}]),
        )
        .await;
    assert!(closed.status().is_success(), "{}", closed.status());
    mallory
        .wait_for("the closing post", SOON, |line| {
            line.command == "PRIVMSG"
                && line.nick.as_deref() == Some("commandpost")
                && line.param(1).ends_with(": closed")
        })
        .await
        .expect("the bot says the incident closed");
    mallory
        .wait_for("the bot to part", SOON, |line| {
            line.command == "PART" && line.nick.as_deref() == Some("commandpost")
        })
        .await
        .expect("the bot leaves a closed incident's channel");
}

/// Two server processes on one PostgreSQL database: one bot connection; `kill -9` the node holding it: the other
/// joins within seconds, logs the lines said after once, and the posts queued before and after the kill arrive
/// once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_one_bot_and_takeover_after_kill9() {
    let ircd = Ircd::start().await;
    let database = TestDatabase::create();
    let config = server_config(ircd.port, Some(&database.url()));
    let node1 = TestServer::start_process_with_config(&config).await;
    let node2 = TestServer::start_node(&config, &node1.admin_token).await;
    let alice_token = node1.token("alice", "write").await;
    let mut alice = IrcClient::connect(ircd.port, "alice", "alice")
        .await
        .expect("alice");
    alice.join("#inc-2-db").await.expect("join");
    let id = declare_bound(&node1, &alice_token, "#inc-2-db").await;
    joined(&mut alice, "commandpost", "#inc-2-db").await;
    let mut said = alice
        .messages_from("commandpost", "#inc-2-db", 1, SOON)
        .await
        .expect("the greeting");
    // One connection, whatever the nodes do for several lease periods.
    one_bot_throughout(&mut alice, "#inc-2-db").await;
    let holder1 = node1
        .metric("commandpost_irc_connected")
        .await
        .expect("metric");
    let holder2 = node2
        .metric("commandpost_irc_connected")
        .await
        .expect("metric");
    assert_eq!(holder1 + holder2, 1, "exactly one node is connected");
    let (mut holder, survivor) = if holder1 == 1 {
        (node1, node2)
    } else {
        (node2, node1)
    };

    alice.say("#inc-2-db", "!sev SEV2").await.expect("say");
    said.extend(
        alice
            .messages_from("commandpost", "#inc-2-db", 1, SOON)
            .await
            .expect("before"),
    );
    holder.kill9();
    let killed = Instant::now();
    // A post queued while no node is connected: a status change through the survivor.
    let response = survivor
        .operations(
            &alice_token,
            &id,
            serde_json::json!([{"op": "setChoice", "field": "severity", "value": "SEV1"}]),
        )
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    taken_over(&mut alice, killed).await;
    let bot = alice
        .seen
        .iter()
        .rev()
        .find(|line| line.command == "JOIN")
        .and_then(|line| line.nick.clone())
        .expect("the new bot's nick");
    said.extend(
        alice
            .messages_from(&bot, "#inc-2-db", 1, SOON)
            .await
            .expect("after"),
    );
    alice
        .say("#inc-2-db", "!tl after the takeover")
        .await
        .expect("say");
    let answer = alice
        .messages_from(&bot, "#inc-2-db", 1, SOON)
        .await
        .expect("the answer");
    assert!(answer[0].contains("noted in the timeline"), "{answer:?}");
    eventually("the line after the takeover logged", SOON, || async {
        chat_log(&survivor, &alice_token, &id)
            .await
            .contains(&"alice: !tl after the takeover".to_owned())
            .then_some(())
    })
    .await
    .expect("logged");
    // Nothing more comes: no post repeated by the new holder.
    let extra = alice
        .messages_from(&bot, "#inc-2-db", 1, Duration::from_secs(4))
        .await;
    assert!(
        extra.is_err(),
        "a post said twice: {extra:?}; all: {:?}; log: {:?}",
        alice
            .seen
            .iter()
            .filter(|line| line.command == "PRIVMSG"
                || line.command == "JOIN"
                || line.command == "QUIT")
            .map(|line| line.raw.clone())
            .collect::<Vec<_>>(),
        chat_log(&survivor, &alice_token, &id).await
    );
    assert_eq!(said.len(), 3, "{said:?}");
    assert!(
        said[1].contains("SEV2") && said[2].contains("SEV1"),
        "{said:?}"
    );
    assert_eq!(
        chat_log(&survivor, &alice_token, &id).await,
        vec!["alice: !sev SEV2", "alice: !tl after the takeover"],
        "each line logged once"
    );
    assert_eq!(
        survivor
            .metric("commandpost_irc_connected")
            .await
            .expect("metric"),
        1
    );
}

/// A node that shuts down gracefully releases the lease, so the other node connects at its next attempt rather
/// than after the lease's lifetime. Checked without timing: a probe asks for the lease as of a moment before the
/// stop, when the holder's lease was still valid, and gets it only if the holder gave it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_hands_the_connection_over_at_once() {
    let ircd = Ircd::start().await;
    let database = TestDatabase::create();
    let store_a: Arc<dyn Store> = Arc::new(PostgresStore::open(&database.url()).expect("store"));
    let store_b: Arc<dyn Store> = Arc::new(PostgresStore::open(&database.url()).expect("store"));
    let chat = Arc::new(Recorder::default());
    chat.bind(&["#inc-30"]);
    let mut watcher = IrcClient::connect(ircd.port, "watcher", "watcher")
        .await
        .expect("watcher");
    watcher.join("#inc-30").await.expect("join");
    let a = start_bot(settings(ircd.port), store_a, chat.clone(), "node-a");
    joined(&mut watcher, "commandpost", "#inc-30").await;
    let before_stop = Utc::now();
    a.stop().await;
    let ttl = chrono::Duration::from_std(irc::LEASE_TTL).expect("ttl");
    assert!(
        store_b
            .acquire_lease(irc::LEASE, "probe", ttl, before_stop)
            .await
            .expect("probe")
            .is_some(),
        "the stopped node still holds the lease: it was not released"
    );
    store_b
        .release_lease(irc::LEASE, "probe")
        .await
        .expect("release the probe");
    let b = start_bot(settings(ircd.port), store_b, chat.clone(), "node-b");
    joined(&mut watcher, "commandpost", "#inc-30").await;
    assert_eq!(b.metrics.irc_connected.get(), 1);
    b.stop().await;
}
