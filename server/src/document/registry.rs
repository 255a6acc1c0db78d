//! The registry of loaded documents: finds a document's actor, loading the document from storage on first use,
//! and forgets actors that unloaded themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use incident_doc::Incident;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{DocConfig, DocHandle, spawn, summary_row};
use crate::metrics::Metrics;
use tokio::sync::broadcast;

use crate::store::{ChunkNotice, Store, StoreError};
use crate::wire::{DocumentId, PeerId};

/// Shared by the HTTP handlers and every connection; clones are cheap.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    /// Loaded documents. A std mutex: it is held only to look up or insert, never across an `.await`.
    docs: Mutex<HashMap<DocumentId, DocHandle>>,
    /// Numbers actor incarnations, so an old actor's exit never removes its successor.
    next_generation: AtomicU64,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// This server's peer id in the sync protocol.
    server_id: PeerId,
    config: DocConfig,
    /// Cancelled at shutdown: actors finish their batch and stop.
    shutdown: CancellationToken,
    /// Tracks actor tasks so shutdown can wait for the last batch to be durable.
    tasks: TaskTracker,
}

impl Registry {
    /// A registry over `store`. Actors stop when `shutdown` is cancelled.
    pub fn new(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        server_id: PeerId,
        config: DocConfig,
        shutdown: CancellationToken,
    ) -> Registry {
        Registry {
            inner: Arc::new(Inner {
                docs: Mutex::new(HashMap::new()),
                next_generation: AtomicU64::new(1),
                store,
                metrics,
                server_id,
                config,
                shutdown,
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The actor of document `id`, loading it from storage if needed; `None` if no such document exists.
    pub async fn get(&self, id: DocumentId) -> Result<Option<DocHandle>, StoreError> {
        if let Some(handle) = self.lookup(id) {
            return Ok(Some(handle));
        }
        let Some(stored) = self.inner.store.load(id).await? else {
            return Ok(None);
        };
        // Loading a long document takes tens of milliseconds (BENCHMARKS.md): off the async workers, like the
        // heavy reads, so that any token's first read of a stored incident holds up no connection.
        let upto = stored.upto;
        let (incident, size) = tokio::task::spawn_blocking(move || {
            let bytes: Vec<u8> = stored.chunks.concat();
            Incident::load(&bytes).map(|incident| (incident, bytes.len()))
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("document {id}: loading it panicked: {e}")))?
        .map_err(|e| StoreError::Corrupt(format!("document {id}: {e}")))?;
        Ok(Some(self.install(id, incident, size, upto)))
    }

    /// Stores a new document durably, then starts its actor.
    pub async fn create(
        &self,
        id: DocumentId,
        mut incident: Incident,
    ) -> Result<DocHandle, StoreError> {
        let bytes = incident.save();
        let size = bytes.len();
        let summary = summary_row(id, &incident.headline());
        let webhooks = &self.inner.config.webhooks;
        let deliveries = if webhooks.enabled() {
            let event = [incident_doc::signals::Event::Declared];
            webhooks.deliveries(id, &incident.signals(), &event, chrono::Utc::now())
        } else {
            Vec::new()
        };
        let queued = !deliveries.is_empty();
        let chunk = self
            .inner
            .store
            .append_with(id, bytes, Some(summary), deliveries)
            .await?;
        if queued {
            webhooks.wake.notify_one();
        }
        Ok(self.install(id, incident, size, chunk))
    }

    fn lookup(&self, id: DocumentId) -> Option<DocHandle> {
        let docs = self.inner.docs.lock().unwrap_or_else(|e| e.into_inner());
        docs.get(&id).filter(|h| !h.is_closed()).cloned()
    }

    /// Starts an actor unless another task loaded the same document meanwhile; then that one wins.
    fn install(
        &self,
        id: DocumentId,
        incident: Incident,
        size: usize,
        upto: crate::store::ChunkId,
    ) -> DocHandle {
        let mut docs = self.inner.docs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = docs.get(&id).filter(|h| !h.is_closed()) {
            return existing.clone();
        }
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        let handle = spawn(
            id,
            incident,
            size,
            upto,
            generation,
            &self.inner.config,
            self.clone(),
        );
        docs.insert(id, handle.clone());
        handle
    }

    /// Called by an actor as it stops.
    pub(crate) fn forget(&self, id: DocumentId, generation: u64) {
        let mut docs = self.inner.docs.lock().unwrap_or_else(|e| e.into_inner());
        if docs.get(&id).is_some_and(|h| h.generation() == generation) {
            docs.remove(&id);
        }
    }

    /// Removes a deleted document's actor; its peers are dropped when it stops.
    pub fn evict(&self, id: DocumentId) -> Option<DocHandle> {
        let mut docs = self.inner.docs.lock().unwrap_or_else(|e| e.into_inner());
        docs.remove(&id)
    }

    /// How many documents are in memory.
    pub fn loaded(&self) -> usize {
        self.inner
            .docs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Keeps the loaded documents current with other nodes' appends, as `notices` reports them (stores shared by
    /// several nodes); stops at shutdown.
    pub fn follow(&self, mut notices: broadcast::Receiver<ChunkNotice>) {
        let registry = self.clone();
        let shutdown = self.inner.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let notice = tokio::select! {
                    () = shutdown.cancelled() => return,
                    notice = notices.recv() => notice,
                };
                match notice {
                    Ok(ChunkNotice::Appended { doc, .. }) => {
                        if let Some(handle) = registry.lookup(doc) {
                            handle.refresh();
                        }
                    }
                    // Notices were missed: every live document catches up.
                    Ok(ChunkNotice::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        for handle in registry.handles() {
                            handle.refresh();
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Every loaded document's actor.
    pub fn handles(&self) -> Vec<DocHandle> {
        let docs = self.inner.docs.lock().unwrap_or_else(|e| e.into_inner());
        docs.values().cloned().collect()
    }

    /// Waits until every actor has finished its last batch (after the shutdown token was cancelled).
    pub async fn drained(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    pub(crate) fn spawn_task<F>(&self, future: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tasks.spawn(future);
    }

    pub(crate) fn store(&self) -> Arc<dyn Store> {
        self.inner.store.clone()
    }

    pub(crate) fn metrics(&self) -> Arc<Metrics> {
        self.inner.metrics.clone()
    }

    pub(crate) fn server_id(&self) -> &PeerId {
        &self.inner.server_id
    }

    pub(crate) fn shutdown(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }
}
