//! Heavy reads never block a document or the server: read tokens hammer a document with a long history through
//! every heavy read (history, exports now and at a past time, the postmortem, the status update, the JSON view)
//! while its writer keeps editing it over HTTP and over `/sync`. The reads are bounded (`max-heavy-reads`): past
//! the limit they get 503 with `Retry-After` and the JSON error body, and `/metrics` keeps answering.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chrono::{SecondsFormat, Utc};
use incident_doc::Operation;
use reqwest::{Method, StatusCode, header};
use serde_json::Value;
use tests::{DEADLINE, SyncClient, TestServer, eventually};

/// Changes in the long document: enough that every heavy read costs the server real work.
const CHANGES: usize = 3_000;

/// Concurrent readers: far more than the server's places for heavy reads, so they saturate them.
const READERS: usize = 8;

/// What the readers saw.
#[derive(Default)]
struct Seen {
    /// Reads answered 200.
    served: AtomicUsize,
    /// Reads answered 503 with `Retry-After` and the `busy` error body.
    busy: AtomicUsize,
    /// Anything else, described; the test fails on any.
    wrong: std::sync::Mutex<Vec<String>>,
}

impl Seen {
    /// Records an answer the test fails on.
    fn wrong(&self, what: String) {
        self.wrong
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }
}

/// Reads `paths` in turn with `token` until `stop`, sorting the answers into `seen`.
async fn read_until(
    server: Arc<TestServer>,
    token: String,
    paths: Vec<String>,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
) {
    for path in paths.iter().cycle() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let response = match server.request(Method::GET, path, Some(&token)).send().await {
            Ok(response) => response,
            Err(e) => {
                seen.wrong(format!("{path}: {e}"));
                continue;
            }
        };
        let status = response.status();
        let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        let body = response.bytes().await.unwrap_or_default();
        match status {
            StatusCode::OK => {
                seen.served.fetch_add(1, Ordering::Relaxed);
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                let error: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let retry = retry_after
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .is_some_and(|secs| secs >= 1);
                if retry
                    && error["error"]["code"] == "busy"
                    && error["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("retry"))
                {
                    seen.busy.fetch_add(1, Ordering::Relaxed);
                } else {
                    seen.wrong(format!(
                        "{path}: 503 without Retry-After or the busy body: {error}"
                    ));
                }
            }
            other => seen.wrong(format!(
                "{path}: {other}: {}",
                String::from_utf8_lossy(&body)
            )),
        }
    }
}

/// A document with [`CHANGES`] changes, made by `writer` over `/sync`: keystrokes in the summary and a timeline
/// entry every tenth change, sent together and acknowledged.
async fn long_document(server: &TestServer, token: &str) -> anyhow::Result<(String, SyncClient)> {
    let id = server.declare(token, "A long night").await.id;
    let mut writer = SyncClient::connect(&server.ws_url(token)).await?;
    writer.open(&id).await?;
    for i in 0..CHANGES {
        if i.is_multiple_of(10) {
            writer.apply_local(Operation::AddTimelineEntry {
                text: format!("Entry {i}: checked the dashboards"),
                at: None,
            })?;
        } else {
            writer.splice_local("summary", 0, 0, "x")?;
        }
    }
    writer.flush().await?;
    writer.sync_until_acknowledged(DEADLINE * 3).await?;
    Ok((id, writer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_are_acknowledged_while_read_tokens_saturate_heavy_reads() -> anyhow::Result<()> {
    let server = Arc::new(TestServer::start_with(|config| config.max_heavy_reads = 1).await);
    let write = server.token("writer", "write").await;
    let read = server.token("reader", "read").await;
    let (id, mut writer) = long_document(&server, &write).await?;
    // A moment inside the history: reads "as it was then" fork the document there.
    let at = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let paths: Vec<String> = [
        "/history?limit=1000".to_owned(),
        format!("/export?format=postmortem&at={at}"),
        format!("/export?format=markdown&at={at}"),
        "/export?format=html".to_owned(),
        "/update".to_owned(),
        String::new(),
    ]
    .iter()
    .map(|tail| format!("/api/incidents/{id}{tail}"))
    .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            let mut mine = paths.clone();
            mine.rotate_left(i % paths.len());
            tokio::spawn(read_until(
                server.clone(),
                read.clone(),
                mine,
                stop.clone(),
                seen.clone(),
            ))
        })
        .collect();
    eventually("the heavy reads to saturate", DEADLINE, || async {
        (seen.busy.load(Ordering::Relaxed) > 0).then_some(())
    })
    .await?;

    // While they are saturated, the writer's edits keep being acknowledged, over HTTP and over /sync.
    let busy_before = seen.busy.load(Ordering::Relaxed);
    for i in 0..5 {
        server
            .append_timeline(&write, &id, &format!("Written while read: {i}"))
            .await;
        writer.splice("summary", 0, 0, "y").await?;
    }
    // And /metrics, which needs no token, answers from its counters.
    let (status, _) = server.call(Method::GET, "/metrics", None, None).await;
    anyhow::ensure!(status == StatusCode::OK, "/metrics answered {status}");
    let refused = server
        .metric("commandpost_limit_rejections_total{limit=\"heavy_reads\"}")
        .await?;
    anyhow::ensure!(refused > 0, "no heavy read counted as refused");
    // The reads were saturated throughout: more of them were refused while the edits went through.
    let busy_after = seen.busy.load(Ordering::Relaxed);
    anyhow::ensure!(
        busy_after > busy_before,
        "no read was refused during the edits ({busy_before} before, {busy_after} after)"
    );

    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await?;
    }
    let wrong = std::mem::take(&mut *seen.wrong.lock().unwrap_or_else(|e| e.into_inner()));
    anyhow::ensure!(wrong.is_empty(), "unexpected answers: {wrong:#?}");
    anyhow::ensure!(
        seen.served.load(Ordering::Relaxed) > 0,
        "no heavy read was served"
    );
    // Every acknowledged edit is there.
    let markdown = server.markdown(&read, &id).await;
    for i in 0..5 {
        anyhow::ensure!(
            markdown.contains(&format!("Written while read: {i}")),
            "entry {i} is missing"
        );
    }
    anyhow::ensure!(
        server.document(&read, &id).await.has_heads(&writer.heads()),
        "the writer's /sync edits are not all in the server's copy"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_at_a_past_time_show_the_document_as_it_was() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let write = server.token("writer", "write").await;
    let id = server.declare(&write, "Then and now").await.id;
    server.append_timeline(&write, &id, "before the cut").await;
    // Change times are whole seconds: the cut is a second after the last change before it, and the change
    // after it a second later still.
    let last = Utc::now();
    eventually("a second to pass", DEADLINE, || async {
        (Utc::now().timestamp() > last.timestamp() + 1).then_some(())
    })
    .await?;
    let cut = Utc::now();
    eventually("another second to pass", DEADLINE, || async {
        (Utc::now().timestamp() > cut.timestamp()).then_some(())
    })
    .await?;
    server.append_timeline(&write, &id, "after the cut").await;
    let at = cut.to_rfc3339_opts(SecondsFormat::Secs, true);
    for format in ["markdown", "postmortem", "json"] {
        let response = server
            .request(
                Method::GET,
                &format!("/api/incidents/{id}/export?format={format}&at={at}"),
                Some(&write),
            )
            .send()
            .await?;
        anyhow::ensure!(response.status() == StatusCode::OK, "{format}");
        let text = response.text().await?;
        anyhow::ensure!(
            text.contains("before the cut") && !text.contains("after the cut"),
            "{format} at {at}:\n{text}"
        );
    }
    // The Automerge export at that time is the document as it was: a prefix of the history.
    let response = server
        .request(
            Method::GET,
            &format!("/api/incidents/{id}/export?format=automerge&at={at}"),
            Some(&write),
        )
        .send()
        .await?;
    let mut past = incident_doc::Incident::load(&response.bytes().await?)?;
    let mut now = server.document(&write, &id).await;
    let (past_changes, now_changes) = (
        past.doc_mut().get_changes(&[]).len(),
        now.doc_mut().get_changes(&[]).len(),
    );
    anyhow::ensure!(
        past_changes + 1 == now_changes,
        "{past_changes} changes then, {now_changes} now"
    );
    let (status, body) = server
        .call(
            Method::GET,
            &format!("/api/incidents/{id}/export?format=markdown&at=2000-01-01T00:00:00Z"),
            Some(&write),
            None,
        )
        .await;
    anyhow::ensure!(
        status == StatusCode::UNPROCESSABLE_ENTITY && body["error"]["code"] == "unprocessable",
        "before the declaration: {status} {body}"
    );
    Ok(())
}
