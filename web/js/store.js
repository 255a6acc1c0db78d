/**
 * The device's copy of each open incident, in IndexedDB (one database per origin, one record per incident id,
 * holding `LiveIncident.save()` bytes), so the page renders and edits while the server is unreachable and offline
 * edits survive a reload until they sync.
 */

const DB_NAME = "commandpost";
const STORE = "incidents";

let opened = null;

function database() {
  opened ??= new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  // A failed open (private mode, quota) must not stick: the next call tries again.
  opened.catch(() => {
    opened = null;
  });
  return opened;
}

async function transact(mode, use) {
  const db = await database();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const request = use(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(request.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("the browser refused to store the incident"));
  });
}

/** The saved bytes of incident `id`, or undefined when this device has none. */
export async function loadIncident(id) {
  const value = await transact("readonly", (store) => store.get(id));
  return value instanceof Uint8Array ? value : undefined;
}

export function saveIncident(id, bytes) {
  return transact("readwrite", (store) => store.put(bytes, id));
}
