//! The mailer: one task per server node that claims the outbox's due mail rows ([`Sink::Mail`]), sends each
//! through the relay, and records every attempt in the delivery log.
//!
//! The relay's answer decides: accepted is delivered; a permanent refusal (5xx: no such list, message refused) is
//! failed at once, since sending it again gets the same answer; anything else (the relay down, a timeout, 4xx
//! "try later", a TLS failure) is retried after the `[webhook-delivery]` backoff until `max-attempts`. Claims keep
//! two nodes from sending one row at once, and the queue lives in the store, so a restart resumes the retries.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Mail, Outgoing};
use crate::metrics::Metrics;
use crate::store::outbox::{Attempt, Delivery, Next, Sink, clip_error};
use crate::store::{Store, StoreError};

/// How often the outbox is polled for retries that became due and rows other nodes queued (rows this node queues
/// wake the task at once).
const POLL: Duration = Duration::from_secs(1);

/// Rows claimed per round: one, so each claim's lease covers one bounded attempt (a node that dies mid-send holds
/// up only that message, for three attempt times); the mailer claims again at once while rows are due.
const BATCH: usize = 1;

/// Starts the mailer; it stops when `shutdown` is cancelled, after the message under way.
pub fn spawn(
    store: Arc<dyn Store>,
    mail: Arc<Mail>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while !shutdown.is_cancelled() {
            let (full, next_retry) = match round(&*store, &mail, &metrics).await {
                Ok((claimed, next_retry)) => (claimed == BATCH, next_retry),
                Err(e) => {
                    debug!(error = %e, "mail outbox unavailable");
                    (false, None)
                }
            };
            if full {
                continue;
            }
            let pause = next_retry.map_or(POLL, |at| {
                (at - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(POLL)
            });
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = mail.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    })
}

/// Claims the due rows and sends them; returns how many were claimed and the earliest retry scheduled.
async fn round(
    store: &dyn Store,
    mail: &Mail,
    metrics: &Metrics,
) -> Result<(usize, Option<DateTime<Utc>>), StoreError> {
    let now = Utc::now();
    // The lease outlasts the attempt (bounded by `Mail::send`), so only a node that died mid-send leaves it to expire.
    let lease = now + mail.timeout * 3;
    let claimed = store
        .claim_deliveries(Sink::Mail, now, lease, BATCH)
        .await?;
    let count = claimed.len();
    let mut next_retry: Option<DateTime<Utc>> = None;
    for delivery in claimed {
        let attempt = attempt(mail, &delivery).await;
        match (&attempt.next, &attempt.error) {
            (Next::Done, _) => metrics.mail_sent.inc(),
            (Next::RetryAt(at), error) => {
                metrics.mail_retried.inc();
                next_retry = Some(next_retry.map_or(*at, |t| t.min(*at)));
                debug!(message = %delivery.event_id, error = error.as_deref().unwrap_or(""), "mail attempt failed, retrying");
            }
            (Next::GiveUp, error) => {
                metrics.mail_failed.inc();
                warn!(message = %delivery.event_id, attempts = delivery.attempts, error = error.as_deref().unwrap_or(""), "status update email given up");
            }
        }
        if let Err(e) = store.finish_delivery(delivery.id, &attempt).await {
            // The claim's lease runs out and the message is tried again: a repeat, never a loss.
            warn!(error = %e, "recording a mail attempt failed");
        }
    }
    Ok((count, next_retry))
}

/// One attempt at one message.
async fn attempt(mail: &Mail, delivery: &Delivery) -> Attempt {
    let give_up = |error: String| Attempt {
        at: Utc::now(),
        status: None,
        error: Some(clip_error(&error)),
        next: Next::GiveUp,
    };
    let outgoing: Outgoing = match serde_json::from_str(&delivery.payload) {
        Ok(outgoing) => outgoing,
        Err(e) => return give_up(format!("the queued message is unreadable: {e}")),
    };
    let message = match mail.message(&outgoing) {
        Ok(message) => message,
        Err(e) => return give_up(e),
    };
    match mail.send(message).await {
        Ok(code) => Attempt {
            at: Utc::now(),
            status: Some(code),
            error: None,
            next: Next::Done,
        },
        Err(failure) => {
            let next = if failure.permanent || delivery.attempts >= mail.retry.max_attempts {
                Next::GiveUp
            } else {
                let delay = chrono::Duration::from_std(mail.retry.backoff(delivery.attempts))
                    .unwrap_or(chrono::Duration::MAX);
                Next::RetryAt(Utc::now() + delay)
            };
            Attempt {
                at: Utc::now(),
                status: failure.status,
                error: Some(clip_error(&failure.error)),
                next,
            }
        }
    }
}
