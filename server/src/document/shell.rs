//! The document actor's shell: the tokio task around a [`Core`]. It batches queued commands, does the IO the core
//! asks for (catch-ups and appends through the store, compactions), reads the clocks, and carries out the core's
//! effects on the connections' outboxes and the HTTP callers' reply channels. Everything it decides about the
//! document is the core's; what is left here is waiting and IO.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use super::core::{Append, Core, Effect, Written};
use super::handle::{Command, DocError, DocHandle};
use super::registry::Registry;
use crate::metrics::Metrics;
use crate::peer::ConnId;
use crate::store::{ChunkId, Store, StoreError};
use crate::webhooks::Webhooks;

/// How many queued commands one batch takes at most, so one busy document cannot starve the fan-out.
const MAX_BATCH: usize = 512;

/// Where a connection's frames go and how to cut it off.
struct Outlet {
    /// Bounded: a full queue means the client stopped reading.
    outbox: mpsc::Sender<Vec<u8>>,
    cancel: CancellationToken,
}

/// The task's state: the core and the IO around it.
struct Shell {
    core: Core,
    /// The attached connections' outboxes, by connection.
    outlets: HashMap<ConnId, Outlet>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    webhooks: Arc<Webhooks>,
    /// Which incarnation of the document's actor this is, so that its exit never removes a successor's due times.
    generation: u64,
}

/// Writes one chunk with its index row and webhook deliveries in one transaction, and wakes the deliverer if it
/// queued any. The one way a document's changes reach storage: a new document's first chunk and every later one.
pub(super) async fn commit(
    store: &dyn Store,
    metrics: &Metrics,
    webhooks: &Webhooks,
    append: Append,
) -> Result<(Written, ChunkId), StoreError> {
    let Append {
        doc,
        chunk,
        summary,
        deliveries,
        written,
    } = append;
    let queued = !deliveries.is_empty();
    let started = Instant::now();
    let result = store
        .append_with(doc, chunk, Some(summary), deliveries)
        .await;
    metrics.storage_append.observe(started.elapsed());
    let chunk = result?;
    if queued {
        webhooks.wake.notify_one();
    }
    Ok((written, chunk))
}

/// Starts the actor task for `core`; returns its handle.
pub(super) fn spawn(core: Core, generation: u64, registry: Registry) -> DocHandle {
    let config = registry.config();
    let (tx, rx) = mpsc::channel(config.queue);
    // Appends by other nodes between the load and the registry knowing this actor sent notices nobody acted
    // on: the first batch catches up with them.
    let _ = tx.try_send(Command::Refresh);
    let id = core.id();
    let idle = config.idle_unload;
    let mut shell = Shell {
        core,
        outlets: HashMap::new(),
        store: registry.store(),
        metrics: registry.metrics(),
        webhooks: config.webhooks.clone(),
        generation,
    };
    let span = info_span!("document", id = %id);
    registry.clone().spawn_task(
        async move {
            shell.metrics.documents_loaded.inc();
            shell.publish_due_times();
            shell.run(rx, idle, registry.shutdown()).await;
            shell.metrics.due.remove(id, generation);
            shell.metrics.documents_loaded.dec();
            registry.forget(id, generation);
        }
        .instrument(span),
    );
    DocHandle::new(id, tx, generation)
}

impl Shell {
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Command>,
        idle: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            let now = Instant::now();
            let flush_at = self.core.flush_due(now);
            let idle_at = self.core.idle_at(idle);
            let first = tokio::select! {
                biased;
                () = tokio::time::sleep_until(flush_at.unwrap_or(now).into()), if flush_at.is_some() => {
                    self.core.flush(Instant::now());
                    self.deliver();
                    continue;
                }
                command = rx.recv() => match command {
                    Some(command) => command,
                    None => break,
                },
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(idle_at.unwrap_or(now).into()), if idle_at.is_some() => {
                    debug!("idle, unloading");
                    break;
                }
            };
            let mut commands = vec![first];
            while commands.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(command) => commands.push(command),
                    Err(_) => break,
                }
            }
            let closing = commands.iter().any(|c| matches!(c, Command::Close));
            if let Err(e) = self.process(commands).await {
                warn!(error = %e, "storage failed; dropping the document's peers until storage recovers");
                self.core.fail(&e);
                self.deliver();
                return;
            }
            if closing {
                self.core.close();
                self.deliver();
                break;
            }
            let now = Instant::now();
            if self.core.flush_due(now).is_some_and(|at| at <= now) {
                self.core.flush(now);
                self.deliver();
            }
        }
        // Nothing is pending: every batch was made durable before its replies went out.
        rx.close();
        while let Ok(command) = rx.try_recv() {
            if let Command::Apply { reply, .. } = command {
                let _ = reply.send(Err(DocError::Gone));
            }
        }
    }

    /// One batch: catch up if asked, apply, append, then let the core answer.
    async fn process(&mut self, commands: Vec<Command>) -> Result<(), StoreError> {
        for command in &commands {
            match command {
                Command::Attach { conn, link } => {
                    let outlet = Outlet {
                        outbox: link.outbox.clone(),
                        cancel: link.cancel.clone(),
                    };
                    self.outlets.insert(*conn, outlet);
                }
                Command::Detach { conn } => {
                    self.outlets.remove(conn);
                }
                _ => {}
            }
        }
        // First, before this batch's own changes, so that everything in memory is still durable.
        let mut changed = Core::wants_catch_up(&commands) && self.catch_up().await?;
        self.core.apply(commands, Utc::now());
        self.deliver();
        if let Some(append) = self.core.append(Utc::now()) {
            let (written, chunk) =
                commit(&*self.store, &self.metrics, &self.webhooks, append).await?;
            if self.core.appended(written, chunk) {
                self.compact().await?;
            }
            changed = true;
        }
        // Before anyone hears of the changes, so a writer who got its answer finds them in `/metrics`.
        if changed {
            self.publish_due_times();
        }
        self.core.durable(Instant::now());
        self.deliver();
        Ok(())
    }

    /// Merges what storage holds beyond what the core has seen; returns whether the document changed.
    async fn catch_up(&mut self) -> Result<bool, StoreError> {
        let stored = self
            .store
            .load_after(self.core.id(), self.core.seen())
            .await?;
        let changed = self.core.merge_stored(stored)?;
        self.deliver();
        Ok(changed)
    }

    /// Folds the chunks into one snapshot. It must hold every chunk it replaces, other nodes' included: catch up
    /// first (every local change is durable at this point), then cover exactly what was seen.
    async fn compact(&mut self) -> Result<(), StoreError> {
        self.catch_up().await?;
        let (snapshot, upto) = self.core.compaction();
        let len = snapshot.len();
        match self.store.compact(self.core.id(), snapshot, upto).await {
            Ok(()) => self.core.compacted(len),
            // Compaction is an optimisation: the chunks are still there, so a failure loses nothing.
            Err(e) => warn!(error = %e, "compaction failed"),
        }
        Ok(())
    }

    /// Carries out the core's effects. A connection whose outbox is full stopped reading: it is cut off, and the
    /// rest of its frames go nowhere.
    fn deliver(&mut self) {
        for effect in self.core.take_effects() {
            match effect {
                Effect::Send(conn, frame) => {
                    let Some(outlet) = self.outlets.get(&conn) else {
                        continue;
                    };
                    if outlet.outbox.try_send(frame).is_err() {
                        outlet.cancel.cancel();
                        self.outlets.remove(&conn);
                        self.core.drop_slow(conn);
                    }
                }
                Effect::CutOff(conn) => {
                    if let Some(outlet) = self.outlets.remove(&conn) {
                        outlet.cancel.cancel();
                    }
                }
                Effect::Answer(reply, result) => {
                    let _ = reply.send(result);
                }
                Effect::Snapshot(reply, snapshot) => {
                    let _ = reply.send(snapshot);
                }
                // Off the actor: recording never holds up the document, and never fails it (`audit::record`).
                Effect::Audit(change) => {
                    let (store, metrics) = (self.store.clone(), self.metrics.clone());
                    tokio::spawn(async move {
                        let target = change.doc.to_string();
                        let event = crate::audit::Event {
                            actor: &change.actor,
                            action: change.action,
                            target: &target,
                            detail: change.detail,
                            from: change.from,
                        };
                        crate::audit::record(&*store, &metrics, event).await;
                    });
                }
            }
        }
    }

    /// Tells the metrics when this document's fields fall due, so `/metrics` counts stale fields from the clock
    /// alone and never calls into an actor.
    fn publish_due_times(&mut self) {
        if let Some(due) = self.core.due_times() {
            self.metrics.due.set(self.core.id(), self.generation, due);
        }
    }
}
