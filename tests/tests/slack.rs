//! Slack end to end, against a local stand-in of the Web API that checks every request against Slack's documented
//! shapes (`tests/src/slack.rs`): an incident bound to a Slack channel hears about itself there; correctly signed
//! Events API requests log the channel's lines (each `ts` once, however often Slack retries), run their commands
//! as the `[[chat.people]]` person through the command rules, and refuse strangers in the channel; the configured
//! reaction promotes a line to the timeline; the slash command answers in Slack's shape; forged, stale and
//! unsigned requests are 401 and change nothing; a 429 and an `ok: false` are retried and counted. On SQLite and
//! PostgreSQL.

use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::config::{ChatPerson, ChatSettings, Config, SlackSettings};
use server::store::Store;
use server::store::outbox::{DeliveryState, Sink};
use server::store::postgres::PostgresStore;
use sha2::Sha256;
use tests::slack::{SLACK_BOT_TOKEN, SlackStandIn};
use tests::{TestDatabase, TestServer, eventually};
use wire::DocumentId;

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const ALICE: &str = "U0ALICE001";
const BOB: &str = "U0BOB00001";
const MALLORY: &str = "U0MALLORY1";

fn configure(config: &mut Config, slack: &SlackStandIn) {
    let person = |name: &str, id: &str| ChatPerson {
        name: name.into(),
        scope: "write".into(),
        irc: Vec::new(),
        irc_account: None,
        slack: Some(id.into()),
    };
    config.chat = Some(ChatSettings {
        timeline_prefix: "!tl ".into(),
        people: vec![person("alice", ALICE), person("bob", BOB)],
    });
    config.slack = Some(SlackSettings {
        bot_token: SLACK_BOT_TOKEN.into(),
        signing_secret: SECRET.into(),
        api_url: slack.api_url(),
        reaction: "pushpin".into(),
    });
}

/// `v0=` and the HMAC-SHA256 of `v0:{ts}:{body}`, computed here independently of the server.
fn sign(secret: &str, ts: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends `body` to `path` as Slack would, signed with `secret` at `ts` (None: no signature headers).
async fn send(
    server: &TestServer,
    path: &str,
    content_type: &str,
    body: &str,
    signed: Option<(&str, i64)>,
) -> (StatusCode, Value) {
    let mut request = server
        .http()
        .post(server.url(path))
        .header("content-type", content_type)
        .body(body.to_owned());
    if let Some((secret, ts)) = signed {
        request = request
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", sign(secret, ts, body));
    }
    let response = request.send().await.expect("sending");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A signed Events API `message` event.
async fn say(server: &TestServer, channel: &str, user: &str, text: &str, ts: &str) -> StatusCode {
    let body = json!({
        "type": "event_callback",
        "event_id": format!("Ev{}", ts.replace('.', "")),
        "event": {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts, "channel_type": "channel"},
    })
    .to_string();
    send(
        server,
        "/api/slack/events",
        "application/json",
        &body,
        Some((SECRET, now())),
    )
    .await
    .0
}

/// The Markdown export without its channel log: the document itself.
async fn document_md(server: &TestServer, token: &str, id: &str) -> String {
    let md = server.markdown(token, id).await;
    md.split("\n## Channel log")
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn chat_log(server: &TestServer, token: &str, id: &str) -> Vec<Value> {
    let (status, page) = server
        .call(
            Method::GET,
            &format!("/api/incidents/{id}/chat?limit=500"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["lines"].as_array().cloned().unwrap_or_default()
}

/// Waits (with a deadline, never a fixed sleep) until `check` holds.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(what, Duration::from_secs(20), || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await
    .expect(what);
}

async fn wait_for_post(slack: &SlackStandIn, channel: &str, needle: &str) {
    let what = format!("a post containing {needle:?} in {channel}");
    until(&what, || async {
        slack.texts(channel).iter().any(|t| t.contains(needle))
    })
    .await;
}

async fn the_channel_works(server: TestServer, slack: SlackStandIn) {
    let alice = server.token("alice", "write").await;
    let incident = server.declare(&alice, "Checkout errors").await;
    let id = incident.id.clone();
    let channel = slack.add_channel("inc-1-checkout");

    // Binding: the commander binds; Slack hears that the channel is the command post.
    let (status, bound) = server
        .bind_channel(
            &alice,
            &id,
            &json!({"network": "slack", "name": "inc-1-checkout", "id": channel}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{bound}");
    assert_eq!(bound["id"], json!(channel));
    wait_for_post(
        &slack,
        &channel,
        "this channel is now the incident's command post",
    )
    .await;
    let view = server.incident_json(&alice, &id).await;
    assert_eq!(
        view["channel"],
        json!({"network": "slack", "name": "inc-1-checkout", "id": channel})
    );

    // A line with the timeline prefix, from alice.
    assert_eq!(
        say(
            &server,
            &channel,
            ALICE,
            "!tl rolled back deploy 4411",
            "1764000000.000100"
        )
        .await,
        StatusCode::OK
    );
    wait_for_post(&slack, &channel, "noted in the timeline").await;
    let md = server.markdown(&alice, &id).await;
    assert!(md.contains("rolled back deploy 4411"), "{md}");
    // Slack retries the same event: logged once, run once.
    assert_eq!(
        say(
            &server,
            &channel,
            ALICE,
            "!tl rolled back deploy 4411",
            "1764000000.000100"
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        document_md(&server, &alice, &id)
            .await
            .matches("rolled back deploy 4411")
            .count(),
        1
    );

    // A command that posts through the document's events.
    say(&server, &channel, ALICE, "!sev SEV1", "1764000001.000100").await;
    wait_for_post(&slack, &channel, "severity SEV3 → SEV1").await;

    // A stranger: logged under their Slack id, refused in the channel, nothing changed.
    say(
        &server,
        &channel,
        MALLORY,
        "looking at the <!channel> dashboards & graphs",
        "1764000002.000100",
    )
    .await;
    say(&server, &channel, MALLORY, "!sev SEV4", "1764000003.000100").await;
    wait_for_post(
        &slack,
        &channel,
        &format!("I don't know who you are: ask an admin to map {MALLORY} in [[chat.people]]"),
    )
    .await;
    assert!(server.markdown(&alice, &id).await.contains("SEV1"));

    // bob is mapped but not the commander: the command rule's own words.
    say(&server, &channel, BOB, "!role ops bob", "1764000004.000100").await;
    wait_for_post(&slack, &channel, "refused: ").await;

    // Bot messages, edits and joins are not lines.
    let bot = json!({"type": "event_callback", "event": {"type": "message", "subtype": "bot_message", "bot_id": "B01", "channel": channel, "text": "beep", "ts": "1764000005.000100"}}).to_string();
    assert_eq!(
        send(
            &server,
            "/api/slack/events",
            "application/json",
            &bot,
            Some((SECRET, now()))
        )
        .await
        .0,
        StatusCode::OK
    );
    let lines = chat_log(&server, &alice, &id).await;
    let texts: Vec<&str> = lines.iter().filter_map(|l| l["text"].as_str()).collect();
    assert!(!texts.contains(&"beep"), "{texts:?}");
    assert_eq!(
        texts
            .iter()
            .filter(|t| **t == "!tl rolled back deploy 4411")
            .count(),
        1
    );
    let stranger = lines
        .iter()
        .find(|l| l["speaker"] == json!(MALLORY))
        .expect("the stranger's line");
    assert!(stranger.get("person").is_none());
    let mapped = lines
        .iter()
        .find(|l| l["speaker"] == json!(ALICE))
        .expect("alice's line");
    assert_eq!(mapped["person"], json!("alice"));
    assert_eq!(mapped["network"], json!("slack"));
    // The stranger's markup reached Slack escaped, never as a mention.
    assert!(slack.posts().iter().all(|p| !p.text.contains("<!channel>")));

    // The reaction promotes the stranger's line, by the reacting person, dated when it was said.
    let reaction = json!({"type": "event_callback", "event_id": "EvR1", "event": {"type": "reaction_added", "user": ALICE, "reaction": "pushpin", "item": {"type": "message", "channel": channel, "ts": "1764000002.000100"}}}).to_string();
    for _ in 0..2 {
        assert_eq!(
            send(
                &server,
                "/api/slack/events",
                "application/json",
                &reaction,
                Some((SECRET, now()))
            )
            .await
            .0,
            StatusCode::OK
        );
    }
    until("the promoted line", || async {
        server
            .markdown(&alice, &id)
            .await
            .contains(&format!("{MALLORY} (in chat): looking at the"))
    })
    .await;
    assert_eq!(
        server
            .markdown(&alice, &id)
            .await
            .matches("(in chat): looking at the")
            .count(),
        1
    );
    // Another reaction does nothing.
    let other = reaction.replace("pushpin", "eyes").replace("EvR1", "EvR2");
    send(
        &server,
        "/api/slack/events",
        "application/json",
        &other,
        Some((SECRET, now())),
    )
    .await;

    // The log is exported with the incident: a section in Markdown and HTML (inert), `chatLog` in JSON, an
    // appendix in the postmortem draft.
    let md = String::from_utf8(server.export(&alice, &id, "markdown").await).expect("UTF-8");
    let section = md
        .split("## Channel log")
        .nth(1)
        .expect("a Channel log section");
    assert!(
        section.contains(&format!(
            "{MALLORY}: looking at the <!channel> dashboards & graphs"
        )),
        "{section}"
    );
    assert!(
        section.contains("alice (U0ALICE001): !sev SEV1"),
        "{section}"
    );
    let html = String::from_utf8(server.export(&alice, &id, "html").await).expect("UTF-8");
    assert!(html.contains("<h2>Channel log</h2>"));
    assert!(html.contains("looking at the &lt;!channel&gt; dashboards &amp; graphs"));
    assert!(!html.contains("<!channel>"));
    let json: Value =
        serde_json::from_slice(&server.export(&alice, &id, "json").await).expect("JSON");
    let exported = json["chatLog"].as_array().expect("chatLog");
    assert_eq!(exported.len(), chat_log(&server, &alice, &id).await.len());
    assert_eq!(exported[0]["text"], json!("!tl rolled back deploy 4411"));
    let postmortem =
        String::from_utf8(server.export(&alice, &id, "postmortem").await).expect("UTF-8");
    assert!(
        postmortem.contains("## Appendix: channel log"),
        "{postmortem}"
    );
    assert!(
        postmortem.contains("in C0000000001 (Slack)"),
        "{postmortem}"
    );

    // The slash command, form-encoded; `status` is said in the channel.
    let form = format!(
        "token=x&team_id=T1&channel_id={channel}&user_id={ALICE}&command=%2Fincident&text=status&response_url=https%3A%2F%2Fhooks.slack.com%2Fx&trigger_id=1.2.3"
    );
    let (status, answer) = send(
        &server,
        "/api/slack/commands",
        "application/x-www-form-urlencoded",
        &form,
        Some((SECRET, now())),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["response_type"], json!("in_channel"));
    assert!(
        answer["text"]
            .as_str()
            .is_some_and(|t| t.contains("Checkout errors")
                && t.contains("severity SEV1")
                && t.contains("commander alice")),
        "{answer}"
    );
    let form = format!("channel_id={channel}&user_id={MALLORY}&text=sev+SEV2");
    let (_, answer) = send(
        &server,
        "/api/slack/commands",
        "application/x-www-form-urlencoded",
        &form,
        Some((SECRET, now())),
    )
    .await;
    assert_eq!(answer["response_type"], json!("ephemeral"));
    assert!(
        answer["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("I don't know who you are")),
        "{answer}"
    );

    // Forged, stale, replayed and unsigned requests: 401 in our error shape, nothing logged.
    let before = chat_log(&server, &alice, &id).await.len();
    let body = json!({"type": "event_callback", "event": {"type": "message", "channel": channel, "user": ALICE, "text": "!sev SEV4", "ts": "1764000009.000100"}}).to_string();
    for signed in [
        Some(("wrong secret", now())),
        Some((SECRET, now() - 301)),
        Some((SECRET, now() + 301)),
        None,
    ] {
        let (status, error) = send(
            &server,
            "/api/slack/events",
            "application/json",
            &body,
            signed,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{error}");
        assert_eq!(error["error"]["code"], json!("bad_signature"));
    }
    // A signature over another body.
    let ts = now();
    let response = server
        .http()
        .post(server.url("/api/slack/commands"))
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sign(SECRET, ts, "text=status"))
        .body("text=sev+SEV4")
        .send()
        .await
        .expect("sending");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(chat_log(&server, &alice, &id).await.len(), before);
    assert!(
        server
            .metric("commandpost_slack_requests_refused_total")
            .await
            .expect("metric")
            >= 5
    );

    // The URL verification challenge, and nonsense that is signed.
    let challenge = json!({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}).to_string();
    let (status, answer) = send(
        &server,
        "/api/slack/events",
        "application/json",
        &challenge,
        Some((SECRET, now())),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer,
        json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    let (status, _) = send(
        &server,
        "/api/slack/events",
        "application/json",
        "{not json",
        Some((SECRET, now())),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A 429 is retried after Retry-After; the post arrives once.
    slack.rate_limit(1);
    say(
        &server,
        &channel,
        ALICE,
        "!status mitigated",
        "1764000010.000100",
    )
    .await;
    wait_for_post(&slack, &channel, "→ mitigated").await;
    assert_eq!(
        slack
            .texts(&channel)
            .iter()
            .filter(|t| t.contains("→ mitigated"))
            .count(),
        1
    );
    assert!(
        server
            .metric("commandpost_slack_posts_failed_total")
            .await
            .expect("metric")
            >= 1
    );
    assert!(
        server
            .metric("commandpost_slack_posts_delivered_total")
            .await
            .expect("metric")
            >= 5
    );

    // A channel Slack does not know: ok:false, retried, failure counted; the other channel is unaffected.
    let second = server.declare(&alice, "Payments slow").await;
    let (status, _) = server
        .bind_channel(
            &alice,
            &second.id,
            &json!({"network": "slack", "name": "ghost", "id": "C0GHOST0001"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let failed_before = server
        .metric("commandpost_slack_posts_failed_total")
        .await
        .expect("metric");
    until("a failed post to a channel Slack does not know", || async {
        server
            .metric("commandpost_slack_posts_failed_total")
            .await
            .unwrap_or(0)
            > failed_before
    })
    .await;

    // One open incident per channel.
    let (status, error) = server
        .bind_channel(
            &alice,
            &second.id,
            &json!({"network": "slack", "name": "inc-1-checkout", "id": channel}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");

    assert_eq!(slack.problems(), Vec::<String>::new());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slack_channel_on_sqlite() {
    let slack = SlackStandIn::start().await;
    let server = TestServer::start_with(|c| configure(c, &slack)).await;
    the_channel_works(server, slack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slack_channel_on_postgres() {
    let slack = SlackStandIn::start().await;
    let db = TestDatabase::create();
    let server = TestServer::start_with(|c| {
        configure(c, &slack);
        c.database_url = Some(db.url());
    })
    .await;
    the_channel_works(server, slack).await;
}

#[tokio::test]
async fn without_slack_the_routes_are_not_found() {
    let server = TestServer::start().await;
    let body = "{}";
    let (status, _) = send(
        &server,
        "/api/slack/events",
        "application/json",
        body,
        Some((SECRET, now())),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

/// The general template with a channel naming rule instead of its plain annotation, under another id.
fn template_with(id: &str, rule: &str) -> (String, String) {
    // The header comment's attributes are the first line starting `<!-- commandpost`; the rule joins them.
    let source = include_str!("../../templates/incident.md").replacen(
        "<!-- commandpost",
        &format!("<!-- commandpost {rule}"),
        1,
    );
    (format!("{id}.md"), source)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn templates_bind_a_channel_at_declaration() {
    let slack = SlackStandIn::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, source) in [
        template_with("irc-room", "channel.irc=#inc-{slug}"),
        template_with("slack-room", "channel.slack=inc-{number}-{slug}"),
    ] {
        std::fs::write(dir.path().join(file), source).expect("write");
    }
    let templates = dir.path().to_owned();
    let server = TestServer::start_with(|c| {
        configure(c, &slack);
        c.templates_dir = Some(templates);
    })
    .await;
    let alice = server.token("alice", "write").await;
    let declare = |template: &'static str| {
        let server = &server;
        let alice = alice.clone();
        async move {
            let (status, answer) = server
                .call(
                    Method::POST,
                    "/api/incidents",
                    Some(&alice),
                    Some(&json!({"title": "Checkout errors!", "template": template})),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{answer}");
            let id = answer["id"].as_str().expect("id").to_owned();
            let view = server.incident_json(&alice, &id).await;
            (id, view, answer["number"].as_i64().expect("a number"))
        }
    };
    // IRC: the rule's name, then a suffix while an open incident holds it.
    let (_, first, _) = declare("irc-room").await;
    let (_, second, _) = declare("irc-room").await;
    let text = |view: &Value| view.to_string();
    assert!(
        text(&first).contains("#inc-checkout-errors (IRC)"),
        "{first}"
    );
    assert!(
        text(&second).contains("#inc-checkout-errors-2 (IRC)"),
        "{second}"
    );

    // Slack: the channel is created; a name already taken gets a suffix; the declaration is said there.
    let (_, view, number) = declare("slack-room").await;
    let name = format!("inc-{number}-checkout-errors");
    assert!(
        slack.channels().values().any(|n| *n == name),
        "{:?}",
        slack.channels()
    );
    slack.add_channel(&format!("inc-{}-checkout-errors", number + 1));
    let (_, taken, _) = declare("slack-room").await;
    let suffixed = format!("inc-{}-checkout-errors-2", number + 1);
    let (id, _) = slack
        .channels()
        .into_iter()
        .find(|(_, n)| *n == suffixed)
        .expect("the suffixed channel");
    assert!(
        text(&taken).contains(&format!(
            "#{suffixed} (Slack): https://slack.com/app_redirect?channel={id}"
        )),
        "{taken}"
    );
    assert!(text(&view).contains(&name));
    wait_for_post(&slack, &id, "declared (SEV3)").await;
    assert!(
        slack
            .calls()
            .iter()
            .filter(|c| *c == "conversations.create")
            .count()
            >= 3
    );
    assert_eq!(slack.problems(), Vec::<String>::new());
    server.stop().await;
}

/// Two nodes on one PostgreSQL database, each with the Slack app: Slack's retry of an event reaching the other
/// node (here: the same event sent to both at once) logs the line once, runs its command once and answers once;
/// each post goes out once though both nodes send the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_log_and_post_each_line_once() {
    let slack = SlackStandIn::start().await;
    let db = TestDatabase::create();
    let url = db.url();
    let node1 = TestServer::start_with(|c| {
        configure(c, &slack);
        c.database_url = Some(url.clone());
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let node2 = TestServer::start_on(
        listener,
        |c| {
            configure(c, &slack);
            c.database_url = Some(url.clone());
        },
        Some(&node1.admin_token),
    )
    .await;
    let alice = node1.token("alice", "write").await;
    let id = node1.declare(&alice, "Checkout errors").await.id;
    let channel = slack.add_channel("inc-1-checkout");
    let (status, _) = node1
        .bind_channel(
            &alice,
            &id,
            &json!({"network": "slack", "name": "inc-1-checkout", "id": channel}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for n in 0..5 {
        let ts = format!("1764000{n:03}.000100");
        let text = format!("!tl step {n} done");
        let (a, b) = tokio::join!(
            say(&node1, &channel, ALICE, &text, &ts),
            say(&node2, &channel, ALICE, &text, &ts)
        );
        assert_eq!((a, b), (StatusCode::OK, StatusCode::OK));
    }
    say(&node2, &channel, ALICE, "!sev SEV2", "1764000100.000100").await;
    wait_for_post(&slack, &channel, "severity SEV3 → SEV2").await;
    until("five acknowledgements", || async {
        slack
            .texts(&channel)
            .iter()
            .filter(|t| *t == "noted in the timeline")
            .count()
            >= 5
    })
    .await;
    let lines = chat_log(&node2, &alice, &id).await;
    assert_eq!(lines.len(), 6, "{lines:?}");
    let md = document_md(&node1, &alice, &id).await;
    for n in 0..5 {
        assert_eq!(md.matches(&format!("step {n} done")).count(), 1, "{md}");
    }
    // Once every Slack row of the outbox is delivered, no sender holds a claim on any (claims are exclusive and a
    // delivered row is final), so nothing more can go out: count then.
    let store = PostgresStore::open(&url).expect("store");
    let doc: DocumentId = id.parse().expect("document id");
    until("every Slack post delivered", || async {
        let rows = store.deliveries_of(doc, Sink::Slack).await.expect("rows");
        !rows.is_empty()
            && rows
                .iter()
                .all(|row| row.record.state == DeliveryState::Delivered)
    })
    .await;
    let texts = slack.texts(&channel);
    assert_eq!(
        texts
            .iter()
            .filter(|t| *t == "noted in the timeline")
            .count(),
        5,
        "{texts:?}"
    );
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.contains("severity SEV3 → SEV2"))
            .count(),
        1,
        "{texts:?}"
    );
    assert_eq!(slack.problems(), Vec::<String>::new());
    node2.stop().await;
    node1.stop().await;
}
