//! Write load for the crash, shutdown and durability tests: writers that keep writing until the server stops
//! answering, and return exactly what it acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};

/// Appends timeline entries (`"{tag} entry {n}"`) with `POST url` (an incident's `/timeline`) as fast as the server
/// answers, counting each 201 in `acked`, until an answer is anything else or never comes (the server was killed or
/// stopped). Returns `(entry id, text)` for every 201: the entries the server promised to keep. A request the kill
/// cut off may or may not have landed, so it is neither returned nor counted.
pub async fn append_until_refused(
    http: reqwest::Client,
    url: String,
    token: String,
    tag: String,
    acked: Arc<AtomicUsize>,
) -> Vec<(String, String)> {
    let mut promised = Vec::new();
    for n in 0.. {
        let text = format!("{tag} entry {n}");
        let sent = http
            .post(&url)
            .bearer_auth(&token)
            .json(&json!({ "text": text }))
            .send()
            .await;
        let Ok(response) = sent else { break };
        if response.status() != StatusCode::CREATED {
            break;
        }
        let Ok(body) = response.json::<Value>().await else {
            break;
        };
        let Some(id) = body["id"].as_str() else { break };
        promised.push((id.to_owned(), text));
        acked.fetch_add(1, Ordering::SeqCst);
    }
    promised
}
