/**
 * The device's copy of each open incident, so the page renders and edits while the server is unreachable and
 * offline edits survive a reload until they sync.
 *
 * In IndexedDB (one database per origin): a snapshot per incident (`LiveIncident.save()` bytes) in `incidents`,
 * and the changes made since, one record per local or remote change (`saveIncremental()` bytes), in `changes`.
 * Writing only the new change keeps a keystroke's write small and starts it the moment the change is made, so it is
 * done long before a reload. The one write a reload can still interrupt (started milliseconds before) is also put
 * in `localStorage` at `pagehide`, which is synchronous. Loading merges all three; `compact` folds the changes back
 * into a new snapshot.
 */

const DB_NAME = "commandpost";
const INCIDENTS = "incidents";
const CHANGES = "changes";
const BY_INCIDENT = "byIncident";
/** `localStorage` key prefix for changes whose IndexedDB write had not finished when the page went away. */
const UNLOAD_PREFIX = "commandpost.unsaved.";

let opened = null;

function database() {
  opened ??= new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 2);
    request.onupgradeneeded = (event) => {
      const db = request.result;
      if (event.oldVersion < 1) db.createObjectStore(INCIDENTS);
      if (event.oldVersion < 2) {
        db.createObjectStore(CHANGES, { autoIncrement: true }).createIndex(BY_INCIDENT, "id");
      }
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  // A failed open (private mode, quota) must not stick: the next call tries again.
  opened.catch(() => {
    opened = null;
  });
  return opened;
}

/** Runs `use(stores)` in one transaction over both stores; resolves with its result once the data is committed. */
async function transact(mode, use) {
  const db = await database();
  return new Promise((resolve, reject) => {
    const tx = db.transaction([INCIDENTS, CHANGES], mode);
    const result = use({ incidents: tx.objectStore(INCIDENTS), changes: tx.objectStore(CHANGES) });
    tx.oncomplete = () => resolve(result?.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("the browser refused to store the incident"));
  });
}

const toBase64 = (bytes) => btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""));
const fromBase64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

/**
 * What this device keeps of incident `id`: `{snapshot, changes}` (the snapshot undefined when there is none), to
 * merge with `LiveIncident.open` then `loadIncremental` for each change.
 */
export async function loadIncident(id) {
  let snapshot;
  let changes = [];
  await transact("readonly", ({ incidents, changes: store }) => {
    incidents.get(id).onsuccess = (e) => {
      if (e.target.result instanceof Uint8Array) snapshot = e.target.result;
    };
    store.index(BY_INCIDENT).getAll(id).onsuccess = (e) => {
      changes = e.target.result.map((record) => record.bytes);
    };
  });
  const unloaded = localStorage.getItem(UNLOAD_PREFIX + id);
  if (unloaded) changes.push(...JSON.parse(unloaded).map(fromBase64));
  return { snapshot, changes };
}

/**
 * Keeps one incident's changes on the device as they happen. `add(bytes)` starts the write at once; `flushSync()`
 * (for `pagehide`) puts any write still in flight into `localStorage`; `compact(snapshot)` replaces everything kept
 * with one snapshot.
 */
export class DeviceCopy {
  constructor(id, { failed }) {
    this.id = id;
    this.failed = failed;
    /** Changes whose IndexedDB write has not completed yet. */
    this.inFlight = new Set();
  }

  add(bytes) {
    if (!bytes.length) return;
    this.inFlight.add(bytes);
    transact("readwrite", ({ changes }) => changes.add({ id: this.id, bytes }))
      .then(() => this.inFlight.delete(bytes))
      .catch((error) => this.failed(error));
  }

  /** Writes the snapshot and drops the changes it covers (all kept so far: it was saved after them). */
  compact(snapshot) {
    transact("readwrite", ({ incidents, changes }) => {
      incidents.put(snapshot, this.id);
      changes.index(BY_INCIDENT).openKeyCursor(IDBKeyRange.only(this.id)).onsuccess = (e) => {
        const cursor = e.target.result;
        if (!cursor) return;
        changes.delete(cursor.primaryKey);
        cursor.continue();
      };
    })
      .then(() => localStorage.removeItem(UNLOAD_PREFIX + this.id))
      .catch((error) => this.failed(error));
  }

  /** At `pagehide`: what IndexedDB may not finish goes to `localStorage`, which writes before the page is gone. */
  flushSync() {
    if (!this.inFlight.size) return;
    const earlier = JSON.parse(localStorage.getItem(UNLOAD_PREFIX + this.id) ?? "[]");
    try {
      localStorage.setItem(
        UNLOAD_PREFIX + this.id,
        JSON.stringify([...earlier, ...Array.from(this.inFlight, toBase64)]),
      );
    } catch (error) {
      this.failed(error);
    }
  }
}
