-- Single sign-on (server/src/sso.rs), the same tables as the embedded store's: browser sessions by the hash of their
-- secret (ended ones kept until their absolute expiry, for admins), and sign-ins in progress by the hash of their
-- OAuth state, taken once (rows live for minutes). 0006 is the audit log's.

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    created_from TEXT,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

CREATE TABLE logins (
    hash TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX logins_by_expiry ON logins (expires_at);
