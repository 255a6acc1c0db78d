//! The chat core as the IRC bot uses it (`server::chat::Chat`), over a real store (SQLite, and PostgreSQL): lines
//! said in a bound channel are logged with the incident (the channel compared case-insensitively) and their
//! commands run as the `[[chat.people]]` person (mask or services account) through the command rules; strangers
//! and rule-breakers are refused in one line; hostile lines are logged as written and run nothing; the
//! incident's events are queued for the channel's bot in the outbox (`Sink::Irc`), handoffs included; closing frees
//! the channel. And the channel log keeps up with a chatty channel without slowing the live document: a flood of
//! lines is measured against the latency of document edits made meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use incident_doc::channel::Network;
use incident_doc::schema::Status;
use incident_doc::{Declaration, Editor, Incident, Operation, template};
use serde_json::Value;
use server::chat::{Chat, Heard, Speaker};
use server::config::{ChatPerson, ChatSettings, Config};
use server::document::{DocHandle, Registry};
use server::metrics::Metrics;
use server::reads::HeavyReads;
use server::store::Store;
use server::store::outbox::{Attempt, Next, Sink};
use server::store::postgres::PostgresStore;
use server::store::sqlite::SqliteStore;
use tests::TestDatabase;
use tokio_util::sync::CancellationToken;
use wire::DocumentId;

struct Setup {
    store: Arc<dyn Store>,
    registry: Registry,
    chat: Chat,
    stop: CancellationToken,
}

fn settings() -> ChatSettings {
    let person = |name: &str, irc: &[&str], account: Option<&str>| ChatPerson {
        name: name.into(),
        scope: "write".into(),
        irc: irc.iter().map(|m| (*m).to_owned()).collect(),
        irc_account: account.map(str::to_owned),
        slack: None,
    };
    ChatSettings {
        timeline_prefix: "!tl ".into(),
        people: vec![
            person("alice", &["alice!*@*.corp.example"], None),
            person("bob", &[], Some("BobAcct")),
        ],
    }
}

fn setup(store: Arc<dyn Store>) -> Setup {
    let config = Config {
        chat: Some(settings()),
        ..Config::default()
    };
    let webhooks = Arc::new(config.webhooks().expect("no webhooks"));
    let metrics = Arc::new(Metrics::default());
    let stop = CancellationToken::new();
    let registry = Registry::new(
        store.clone(),
        metrics.clone(),
        wire::PeerId::from("commandpost-chat-test".to_owned()),
        config.doc_config(webhooks),
        stop.clone(),
    );
    let reads = HeavyReads::new(2, metrics);
    let chat = Chat::new(store.clone(), registry.clone(), reads, &settings()).expect("valid");
    Setup {
        store,
        registry,
        chat,
        stop,
    }
}

async fn declare(setup: &Setup, title: &str) -> DocHandle {
    let templates = template::builtin();
    let template = templates
        .iter()
        .find(|t| t.id == "incident")
        .expect("built in");
    let number = setup.store.next_incident_number().await.expect("a number");
    let incident = Incident::create(
        template,
        &Declaration {
            name: title.into(),
            number: Some(number),
        },
        &Editor::new("alice", Utc::now()),
        None,
    )
    .expect("declare");
    setup
        .registry
        .create(DocumentId::random(), incident)
        .await
        .expect("stored")
}

fn irc(nick_mask: &str, account: Option<&str>) -> Speaker {
    Speaker {
        name: nick_mask.split('!').next().unwrap_or_default().into(),
        mask: Some(nick_mask.into()),
        account: account.map(str::to_owned),
    }
}

fn heard(channel: &str, speaker: &Speaker, text: &str) -> Heard {
    Heard {
        network: Network::Irc,
        channel: channel.into(),
        id: None,
        speaker: speaker.clone(),
        text: text.into(),
        at: Utc::now(),
    }
}

async fn markdown(handle: &DocHandle) -> String {
    handle
        .read(|incident| incident_doc::export::markdown(&incident.view()))
        .await
        .expect("read")
}

/// The texts queued for the IRC bot so far (claimed, so each is seen once), in order.
async fn irc_posts(store: &dyn Store) -> Vec<(String, String)> {
    let now = Utc::now();
    let claimed = store
        .claim_deliveries(Sink::Irc, now, now + chrono::Duration::seconds(60), 1000)
        .await
        .expect("claim");
    let said = Attempt {
        at: now,
        status: None,
        error: None,
        next: Next::Done,
    };
    let mut posts = Vec::new();
    for d in claimed {
        store.finish_delivery(d.id, &said).await.expect("said");
        let payload: Value = serde_json::from_str(&d.payload).expect("JSON");
        assert_eq!(payload["channel"].as_str(), Some(d.endpoint.as_str()));
        posts.push((
            d.endpoint,
            payload["text"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    posts
}

async fn the_chat_core_works(store: Arc<dyn Store>) {
    let s = setup(store);
    let alice = irc("alice!~a@vpn.corp.example", None);
    let bob = irc("bobby!b@198.51.100.7", Some("bobacct"));
    let mallory = irc("alice!~a@evil.example", None);
    let handle = declare(&s, "Database failover").await;
    assert!(
        s.chat
            .channels(Network::Irc)
            .await
            .expect("channels")
            .is_empty()
    );
    // Nothing is logged for a channel bound to no incident.
    assert!(
        s.chat
            .hear(heard("#inc-1-db", &alice, "!tl hello"))
            .await
            .is_empty()
    );

    let bind = Operation::BindChannel {
        network: Network::Irc,
        name: "#inc-1-db".into(),
        id: None,
    };
    handle
        .apply(vec![bind], Editor::new("alice", Utc::now()))
        .await
        .expect("bind");
    assert_eq!(
        s.chat.channels(Network::Irc).await.expect("channels"),
        vec!["#inc-1-db"]
    );
    assert!(
        s.chat
            .channels(Network::Slack)
            .await
            .expect("channels")
            .is_empty()
    );
    let posts = irc_posts(&*s.store).await;
    assert!(
        posts.iter().any(|(c, t)| c == "#inc-1-db"
            && t.contains("this channel is now the incident's command post")),
        "{posts:?}"
    );

    // The timeline prefix, in a channel named in another case.
    assert_eq!(
        s.chat
            .hear(heard(
                "#INC-1-db",
                &alice,
                "!tl failover to replica 2 started"
            ))
            .await,
        vec!["noted in the timeline"]
    );
    assert!(
        markdown(&handle)
            .await
            .contains("failover to replica 2 started")
    );

    // A command whose change the channel hears through the outbox, not the reply.
    assert!(
        s.chat
            .hear(heard("#inc-1-db", &alice, "!sev SEV1"))
            .await
            .is_empty()
    );
    let posts = irc_posts(&*s.store).await;
    assert!(
        posts
            .iter()
            .any(|(_, t)| t.contains("severity SEV3 → SEV1")),
        "{posts:?}"
    );

    // A nick from the wrong host is nobody; bob by his account whatever his nick.
    let refused = s.chat.hear(heard("#inc-1-db", &mallory, "!sev SEV4")).await;
    assert_eq!(
        refused,
        vec!["I don't know who you are: ask an admin to map alice in [[chat.people]]"]
    );
    let refused = s.chat.hear(heard("#inc-1-db", &bob, "!role ops bob")).await;
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0].starts_with("refused: ") && refused[0].contains("Incident Commander"),
        "{refused:?}"
    );

    // A handoff, proposed by alice and accepted by bob.
    assert!(
        s.chat
            .hear(heard("#inc-1-db", &alice, "!handoff ic bob"))
            .await
            .is_empty()
    );
    assert_eq!(
        s.chat.hear(heard("#inc-1-db", &alice, "!ack")).await,
        vec!["no handoff is waiting for alice"]
    );
    assert!(
        s.chat
            .hear(heard("#inc-1-db", &bob, "!ack"))
            .await
            .is_empty()
    );
    let posts = irc_posts(&*s.store).await;
    assert!(
        posts
            .iter()
            .any(|(_, t)| t.contains("Incident Commander handoff proposed from alice to bob")),
        "{posts:?}"
    );
    assert!(
        posts
            .iter()
            .any(|(_, t)| t.contains("bob is now the Incident Commander")),
        "{posts:?}"
    );

    // `!status` answers in the channel.
    let status = s.chat.hear(heard("#inc-1-db", &alice, "!status")).await;
    assert_eq!(status.len(), 1);
    assert!(
        status[0].contains("Database failover")
            && status[0].contains("severity SEV1")
            && status[0].contains("commander bob"),
        "{status:?}"
    );
    let update = s.chat.hear(heard("#inc-1-db", &alice, "!update")).await;
    assert!(update[0].contains("Database failover"), "{update:?}");

    // Hostile lines: logged as written, running nothing.
    let hostile = [
        "hi\r\nPRIVMSG #other :injected",
        "\u{0}\u{1b}[31m red \u{202e}reversed",
        "<script>alert(1)</script> & <!channel>",
        &"x".repeat(20_000),
    ];
    for text in hostile {
        assert!(
            s.chat
                .hear(heard("#inc-1-db", &alice, text))
                .await
                .is_empty()
        );
    }
    let too_long = s
        .chat
        .hear(heard(
            "#inc-1-db",
            &alice,
            &format!("!tl {}", "y".repeat(200_000)),
        ))
        .await;
    assert!(too_long[0].starts_with("refused: "), "{too_long:?}");
    let log = s.store.chat_log(handle.id, None, 100).await.expect("log");
    for text in hostile {
        // As written, but NUL, which no store's text holds, as U+FFFD.
        let kept = text.replace('\0', "\u{FFFD}");
        assert!(
            log.iter().any(|l| l.text == kept),
            "{text:?} logged as written"
        );
    }
    let first = log.last().expect("lines");
    assert_eq!(first.text, "!tl failover to replica 2 started");
    assert_eq!(first.person.as_deref(), Some("alice"));
    assert_eq!(first.channel, "#INC-1-db");
    assert!(
        log.iter()
            .any(|l| l.speaker == "alice" && l.person.is_none()),
        "mallory's line has no person"
    );

    // Closing frees the channel.
    handle
        .apply(
            vec![Operation::SetStatus {
                status: Status::Closed,
                override_reason: Some("test over".into()),
            }],
            Editor::new("bob", Utc::now()),
        )
        .await
        .expect("close");
    assert_eq!(
        s.chat.channels(Network::Irc).await.expect("channels"),
        vec!["#inc-1-db".to_owned()],
        "the bot stays until it has said the closing post"
    );
    let posts = irc_posts(&*s.store).await;
    assert!(
        posts.iter().any(|(_, t)| t.ends_with(": closed")),
        "{posts:?}"
    );
    assert!(
        s.chat
            .channels(Network::Irc)
            .await
            .expect("channels")
            .is_empty()
    );
    let before = s
        .store
        .chat_log(handle.id, None, 1000)
        .await
        .expect("log")
        .len();
    assert!(
        s.chat
            .hear(heard("#inc-1-db", &alice, "after the close"))
            .await
            .is_empty()
    );
    assert_eq!(
        s.store
            .chat_log(handle.id, None, 1000)
            .await
            .expect("log")
            .len(),
        before
    );
    s.stop.cancel();
    s.registry.drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_core_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("open"));
    the_chat_core_works(store.clone()).await;
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_core_on_postgres() {
    let db = TestDatabase::create();
    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&db.url()).expect("open"));
    the_chat_core_works(store.clone()).await;
    store.close().await.expect("close");
}

/// A chatty channel against the live document: four speakers' lines are heard as fast as the store logs them while
/// an editor applies edits; every line is logged once and every edit succeeds meanwhile. The rate and the edits'
/// latency are printed, not asserted (a loaded machine must not fail the test): BENCHMARKS.md has the figures of
/// `cargo test -p tests --test chat a_chatty_channel -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_channel_loses_no_line_and_blocks_no_edit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("open"));
    let s = Arc::new(setup(store.clone()));
    let handle = declare(&s, "Chatty").await;
    let bind = Operation::BindChannel {
        network: Network::Irc,
        name: "#chatty".into(),
        id: None,
    };
    handle
        .apply(vec![bind], Editor::new("alice", Utc::now()))
        .await
        .expect("bind");

    // Edits alone.
    let edit = |n: usize| Operation::SetText {
        field: "summary".into(),
        text: format!("summary {n}"),
    };
    let mut quiet = Vec::new();
    for n in 0..40 {
        let t = Instant::now();
        handle
            .apply(vec![edit(n)], Editor::new("alice", Utc::now()))
            .await
            .expect("edit");
        quiet.push(t.elapsed());
    }

    // Edits while four speakers flood the channel.
    const LINES: usize = 2_000;
    let flood = {
        let s = s.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let speakers: Vec<_> = (0..4)
                .map(|k| {
                    let s = s.clone();
                    tokio::spawn(async move {
                        let speaker = irc(&format!("user{k}!u@host"), None);
                        for n in 0..LINES / 4 {
                            let line =
                                format!("line {n} from user{k}: looking at the graphs, p99 is up");
                            s.chat.hear(heard("#chatty", &speaker, &line)).await;
                        }
                    })
                })
                .collect();
            for speaker in speakers {
                speaker.await.expect("speaker");
            }
            start.elapsed()
        })
    };
    let mut busy = Vec::new();
    let mut n = 100;
    while !flood.is_finished() {
        let t = Instant::now();
        handle
            .apply(vec![edit(n)], Editor::new("alice", Utc::now()))
            .await
            .expect("edit");
        busy.push(t.elapsed());
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = flood.await.expect("flood");
    let rate = LINES as f64 / took.as_secs_f64();
    let p = |v: &mut Vec<Duration>, q: f64| {
        v.sort();
        v[((v.len() as f64 - 1.0) * q) as usize]
    };
    let (quiet_p50, busy_p50, busy_p95) =
        (p(&mut quiet, 0.5), p(&mut busy, 0.5), p(&mut busy, 0.95));
    println!(
        "chat flood: {LINES} lines in {took:?} = {rate:.0} lines/s; edit latency quiet p50 {quiet_p50:?}, during the flood p50 {busy_p50:?} p95 {busy_p95:?} ({} edits)",
        busy.len()
    );
    assert_eq!(
        store
            .chat_log(handle.id, None, LINES + 10)
            .await
            .expect("log")
            .len(),
        LINES
    );
    assert!(!busy.is_empty(), "edits were applied during the flood");
    s.stop.cancel();
    s.registry.drained().await;
    store.close().await.expect("close");
}
