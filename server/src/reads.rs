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
