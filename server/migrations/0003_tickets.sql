-- `/sync` tickets (server/src/api/tickets.rs), the same table as the embedded store's version 3: a short-lived,
-- single-use stand-in for a token, by the hash of the ticket, so that any node accepts a ticket another issued.
-- Rows live for seconds: creating a ticket deletes the expired ones.

CREATE TABLE tickets (
    hash TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX tickets_by_expiry ON tickets (expires_at);
CREATE INDEX tickets_by_token ON tickets (token_hash);
