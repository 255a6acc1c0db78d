-- Leases (server/src/store/lease.rs), the same table as the embedded store's version 11: which node holds a
-- cluster-wide role such as a chat bot's one connection; `epoch` is the fencing token.

CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
