//! Heavy reads: the history, exports (now and at past heads), the postmortem, the status update and the JSON view
//! each walk a whole document, tens of milliseconds for a long incident. They run on a [`Snapshot`] that the
//! document actor hands out, on tokio's blocking threads: never inside the actor, where they would hold up the
//! document's writers and peers, and never on the async workers, which serve every connection.
//!
//! At most `max-heavy-reads` run at once and as many again wait for a place; a request that finds every place
//! taken is answered at once with 503, `Retry-After` and the JSON error body, so a flood of reads (read tokens
//! included) costs the server a bounded amount of CPU and memory and never a growing queue.

use std::sync::Arc;

use incident_doc::Incident;
use tokio::sync::Semaphore;

use crate::document::DocHandle;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// The places for heavy reads; clones share them.
#[derive(Clone)]
pub struct HeavyReads {
    inner: Arc<Inner>,
}

struct Inner {
    /// Places for a read that runs or waits to. Taken without waiting: a request that finds none is refused at
    /// once, so waiting requests never pile up.
    admitted: Semaphore,
    /// Places to run. Owned permits, moved into the blocking task, so a read whose client went away still holds
    /// its place until it finishes (a blocking task cannot be stopped half way).
    running: Arc<Semaphore>,
    /// How many run at once: the configured limit, named in the busy answer.
    limit: usize,
    metrics: Arc<Metrics>,
}

impl HeavyReads {
    /// Places for `limit` reads at once (at least one) and as many waiting.
    pub fn new(limit: usize, metrics: Arc<Metrics>) -> HeavyReads {
        let limit = limit.max(1);
        HeavyReads {
            inner: Arc::new(Inner {
                admitted: Semaphore::new(limit.saturating_mul(2)),
                running: Arc::new(Semaphore::new(limit)),
                limit,
                metrics,
            }),
        }
    }

    /// Runs `read` on a snapshot of the document's durable state, off the actor and the async workers; answers
    /// [`ApiError::Busy`] at once when every place is taken.
    pub async fn run<T: Send + 'static>(
        &self,
        handle: &DocHandle,
        read: impl FnOnce(&mut Incident) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let Ok(_admitted) = self.inner.admitted.try_acquire() else {
            self.inner.metrics.rejected_reads.inc();
            return Err(ApiError::Busy(self.inner.limit));
        };
        self.run_waiting(handle, read).await
    }

    /// Like [`HeavyReads::run`], but waits for a place however many reads are queued: for reads that answer (or
    /// prepare) a write, which a flood of other reads must delay at most, never refuse. An edit that is already
    /// durable must not be answered with an error, which would promise it was not made.
    pub async fn run_waiting<T: Send + 'static>(
        &self,
        handle: &DocHandle,
        read: impl FnOnce(&mut Incident) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self
            .inner
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Internal)?;
        // Taken only once a place is free, so the actor copies the document for at most `limit` reads at a time.
        let snapshot = handle.snapshot().await?;
        let metrics = self.inner.metrics.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            metrics.heavy_reads.inc();
            let mut incident = snapshot.into_incident();
            let result = read(&mut incident);
            metrics.heavy_reads.dec();
            result
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "a heavy read panicked");
            ApiError::Internal
        })?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use chrono::Utc;
    use incident_doc::{Declaration, Editor, Operation, template};
    use tokio::sync::oneshot;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::Config;
    use crate::document::Registry;
    use crate::store::sqlite::SqliteStore;
    use wire::{DocumentId, PeerId};

    /// Far longer than anything here takes on a loaded machine: only a deadlock reaches it.
    const DEADLINE: Duration = Duration::from_secs(30);

    fn entry(text: &str) -> Operation {
        Operation::AddTimelineEntry {
            text: text.into(),
            at: None,
        }
    }

    fn markdown(incident: &mut Incident) -> String {
        incident_doc::export::markdown(&incident.view())
    }

    /// A read that has not finished holds up neither its document's writers nor other documents, it reads the
    /// document as it was when it started, and the reads past the limit and its queue are refused at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unfinished_read_holds_up_no_writer_and_the_overflow_is_refused() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store: Arc<dyn crate::store::Store> =
            Arc::new(SqliteStore::open(dir.path()).expect("store"));
        let metrics = Arc::new(Metrics::default());
        let webhooks = Arc::new(Config::default().webhooks().expect("no webhooks"));
        let registry = Registry::new(
            store,
            metrics.clone(),
            PeerId::from("server".to_owned()),
            Config::default().doc_config(webhooks),
            CancellationToken::new(),
        );
        let template = template::builtin().into_iter().next().expect("a template");
        let editor = || Editor::new("alice", Utc::now());
        let declaration = Declaration {
            name: "Slow reads".into(),
            number: None,
        };
        let incident = Incident::create(&template, &declaration, &editor(), None).expect("declare");
        let handle = registry
            .create(DocumentId::random(), incident)
            .await
            .expect("create");
        handle
            .apply(vec![entry("before the read")], editor())
            .await
            .expect("edit");

        let reads = HeavyReads::new(1, metrics.clone());
        let (started, read_started) = oneshot::channel();
        let (release, released) = mpsc::channel::<()>();
        let running = {
            let (reads, handle) = (reads.clone(), handle.clone());
            tokio::spawn(async move {
                reads
                    .run(&handle, move |incident| {
                        let _ = started.send(());
                        let _ = released.recv();
                        Ok(markdown(incident))
                    })
                    .await
            })
        };
        tokio::time::timeout(DEADLINE, read_started)
            .await
            .expect("the read starts")
            .expect("the read runs");

        // With the read stuck half way, the document still takes edits and answers them.
        tokio::time::timeout(
            DEADLINE,
            handle.apply(vec![entry("during the read")], editor()),
        )
        .await
        .expect("an edit completes while a read is unfinished")
        .expect("the edit is applied");

        // The one place to run is taken: the next read waits for it, and the one after finds no place at all.
        let waiting = {
            let (reads, handle) = (reads.clone(), handle.clone());
            tokio::spawn(async move { reads.run(&handle, |i| Ok(markdown(i))).await })
        };
        while reads.inner.admitted.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = reads.run(&handle, |i| Ok(markdown(i))).await;
        assert!(matches!(refused, Err(ApiError::Busy(1))), "{refused:?}");
        assert_eq!(metrics.rejected_reads.get(), 1);

        release.send(()).expect("the read is waiting");
        let then = running.await.expect("no panic").expect("read");
        assert!(
            then.contains("before the read") && !then.contains("during the read"),
            "the snapshot was taken before the edit:\n{then}"
        );
        let now = waiting.await.expect("no panic").expect("read");
        assert!(now.contains("during the read"), "{now}");
        assert_eq!(metrics.heavy_reads.get(), 0);
    }
}
