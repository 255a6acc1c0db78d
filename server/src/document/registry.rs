//! The registry of loaded documents: finds a document's actor, loading the document from storage on first use,
//! and forgets actors that unloaded themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use incident_doc::Incident;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wire::{DocumentId, PeerId};

use super::core::{Context, Core};
use super::handle::{Command, DocHandle};
use super::shell::{commit, spawn};
use crate::config::DocConfig;
use crate::metrics::Metrics;
use crate::store::{ChunkNotice, Store, StoreError};

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
    /// Counts deletions, so a load that a deletion overtook is read again rather than installed (see
    /// [`Registry::get`]).
    deletions: AtomicU64,
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

/// What [`Registry::load`] found.
enum Loaded {
    /// An actor already runs the document.
    Live(DocHandle),
    /// Read from storage, not yet running (boxed: a core is large, and this is the rare path).
    Found(Box<Core>),
    /// No such document.
    Missing,
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
                deletions: AtomicU64::new(0),
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
    ///
    /// A document deleted while it was being read from storage must not come back to life in memory, serving what is
    /// gone: a load during which any deletion happened is read again (and then finds nothing).
    pub async fn get(&self, id: DocumentId) -> Result<Option<DocHandle>, StoreError> {
        loop {
            let deletions = self.inner.deletions.load(Ordering::Acquire);
            match self.load(id).await? {
                Loaded::Missing => return Ok(None),
                Loaded::Found(core) => {
                    if let Some(handle) = self.install_loaded(*core, deletions) {
                        return Ok(Some(handle));
                    }
                }
                Loaded::Live(handle) => return Ok(Some(handle)),
            }
        }
    }

    /// The live actor of `id`, or its core read from storage, or nothing.
    async fn load(&self, id: DocumentId) -> Result<Loaded, StoreError> {
        if let Some(handle) = self.lookup(id) {
            return Ok(Loaded::Live(handle));
        }
        let Some(stored) = self.inner.store.load(id).await? else {
            return Ok(Loaded::Missing);
        };
        // Loading a long document takes tens of milliseconds (BENCHMARKS.md): off the async workers, like the
        // heavy reads, so that any token's first read of a stored incident holds up no connection.
        let upto = stored.upto;
        let (incident, size) = tokio::task::spawn_blocking(move || {
            stored.incident().map(|incident| (incident, stored.size()))
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("document {id}: loading it panicked: {e}")))?
        .map_err(|e| StoreError::Corrupt(format!("document {id}: {e}")))?;
        Ok(Loaded::Found(Box::new(Core::loaded(
            id,
            incident,
            size,
            upto,
            self.context(),
        ))))
    }

    /// Stores a new document durably (through the same path as every later change), then starts its actor.
    pub async fn create(
        &self,
        id: DocumentId,
        incident: Incident,
    ) -> Result<DocHandle, StoreError> {
        let mut core = Core::declared(id, incident, self.context());
        let Some(append) = core.append(chrono::Utc::now()) else {
            return Err(StoreError::Corrupt(format!(
                "document {id}: a new incident without changes"
            )));
        };
        let inner = &self.inner;
        let (written, chunk) = commit(
            &*inner.store,
            &inner.metrics,
            &inner.config.webhooks,
            append,
        )
        .await?;
        core.appended(written, chunk);
        Ok(self.install(core))
    }

    /// What a new core needs from the server.
    fn context(&self) -> Context {
        Context {
            config: self.inner.config.clone(),
            metrics: self.inner.metrics.clone(),
            server_id: self.inner.server_id.clone(),
            now: Instant::now(),
        }
    }

    fn lookup(&self, id: DocumentId) -> Option<DocHandle> {
        let docs = self.inner.docs.lock().unwrap_or_else(|e| e.into_inner());
        docs.get(&id).filter(|h| !h.is_closed()).cloned()
    }

    /// Starts an actor for `core` unless another task loaded the same document meanwhile; then that one wins.
    fn install(&self, core: Core) -> DocHandle {
        let mut docs = self.inner.docs.lock().unwrap_or_else(|e| e.into_inner());
        self.install_locked(&mut docs, core)
    }

    /// [`Registry::install`] for a core read from storage when the deletion count was `deletions`: `None` (read it
    /// again) if a deletion happened since. Checked under the map's lock, which [`Registry::delete`]'s second stop
    /// also takes.
    fn install_loaded(&self, core: Core, deletions: u64) -> Option<DocHandle> {
        let mut docs = self.inner.docs.lock().unwrap_or_else(|e| e.into_inner());
        if deletions != self.inner.deletions.load(Ordering::Acquire) {
            return None;
        }
        Some(self.install_locked(&mut docs, core))
    }

    fn install_locked(&self, docs: &mut HashMap<DocumentId, DocHandle>, core: Core) -> DocHandle {
        let id = core.id();
        if let Some(existing) = docs.get(&id).filter(|h| !h.is_closed()) {
            return existing.clone();
        }
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        let handle = spawn(core, generation, self.clone());
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

    /// Deletes a document for good: its actor stops (telling its peers it is gone), then its chunks and index row
    /// go. A reader that loaded it again between the two would keep serving it from memory, so an actor found after
    /// the deletion is stopped too. Returns whether there was anything to delete.
    pub async fn delete(&self, id: DocumentId) -> Result<bool, StoreError> {
        self.stop(id).await;
        let deleted = self.inner.store.delete(id).await?;
        // A load that read the chunks before they went installs nothing now (see `get`), and one that installed
        // before this count moved is stopped just below.
        self.inner.deletions.fetch_add(1, Ordering::AcqRel);
        self.stop(id).await;
        Ok(deleted)
    }

    /// Removes a document's actor and tells it to close; its peers are dropped when it stops.
    async fn stop(&self, id: DocumentId) {
        let handle = {
            let mut docs = self.inner.docs.lock().unwrap_or_else(|e| e.into_inner());
            docs.remove(&id)
        };
        if let Some(handle) = handle {
            let _ = handle.send(Command::Close).await;
        }
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

    pub(crate) fn config(&self) -> &DocConfig {
        &self.inner.config
    }

    pub(crate) fn shutdown(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use incident_doc::{Declaration, Editor, Operation, template};

    use super::*;
    use crate::config::Config;
    use crate::store::sqlite::SqliteStore;

    /// Far longer than anything here takes on a loaded machine: only a deadlock reaches it.
    const DEADLINE: Duration = Duration::from_secs(30);

    fn registry(store: Arc<dyn Store>, idle_unload: Duration) -> Registry {
        let webhooks = Arc::new(Config::default().webhooks().expect("no webhooks"));
        let mut config = Config::default().doc_config(webhooks);
        config.idle_unload = idle_unload;
        Registry::new(
            store,
            Arc::new(Metrics::default()),
            PeerId::from("commandpost-test"),
            config,
            CancellationToken::new(),
        )
    }

    fn incident(name: &str) -> Incident {
        let template = template::builtin().into_iter().next().expect("a template");
        let declaration = Declaration {
            name: name.into(),
            number: None,
        };
        Incident::create(
            &template,
            &declaration,
            &Editor::new("alice", Utc::now()),
            None,
        )
        .expect("declare")
    }

    /// Concurrent first uses load a document once; an unknown id is not one; an actor that unloaded itself is
    /// forgotten, and the next use loads what it made durable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn documents_load_once_and_reload_what_was_durable_after_unloading() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
        let id = DocumentId::random();
        let first = registry(store.clone(), Duration::from_secs(600));
        first
            .create(id, incident("Queue backlog"))
            .await
            .expect("create");
        assert!(
            first
                .get(DocumentId::random())
                .await
                .expect("get")
                .is_none()
        );

        // A second server process over the same store: two tasks asking at once share one actor.
        let registry = registry(store, Duration::from_millis(50));
        let (a, b) = tokio::join!(registry.get(id), registry.get(id));
        let (a, b) = (
            a.expect("load").expect("exists"),
            b.expect("load").expect("exists"),
        );
        assert_eq!(a.generation(), b.generation());
        let entry = Operation::AddTimelineEntry {
            text: "drained the queue".into(),
            at: None,
        };
        a.apply(vec![entry], Editor::new("alice", Utc::now()))
            .await
            .expect("edit");

        let unloaded = tokio::time::timeout(DEADLINE, async {
            while registry.loaded() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        unloaded.await.expect("the idle document unloads");
        let again = registry.get(id).await.expect("reload").expect("exists");
        assert_ne!(again.generation(), a.generation());
        let markdown = again
            .read(|incident| incident_doc::export::markdown(&incident.view()))
            .await
            .expect("read");
        assert!(markdown.contains("drained the queue"));
    }
}
