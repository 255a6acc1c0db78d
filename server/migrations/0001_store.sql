-- The PostgreSQL store's schema (server/src/store/postgres.rs), the same tables as the embedded SQLite store.
-- Applied by sqlx at start, in one transaction; a released migration is never edited: changes are new files.
-- Unqualified names land in the first schema of the connection's search_path.

-- Documents' Automerge chunks. Ids come from an identity sequence, so they only grow and are never reused, even
-- after the newest chunk is deleted: compaction relies on an id meaning the same chunk forever. A compacted
-- snapshot keeps the id (and created_at) of the newest chunk it covers.
CREATE TABLE chunks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    doc TEXT NOT NULL,
    data BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX chunks_by_doc ON chunks (doc, id);

-- One index row per incident, upserted with the chunk that changed it, so listings never load documents.
CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    template TEXT NOT NULL,
    status TEXT NOT NULL,
    severity TEXT,
    number BIGINT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX incidents_by_created ON incidents (created_at);
CREATE INDEX incidents_by_status ON incidents (status, created_at);

-- Named counters (incident numbers). A committed row, not a sequence: a sequence's nextval is not crash-safe for
-- a transaction that has not committed, and could hand the same number out again after a crash.
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

-- API tokens, by hash. A name is unique among unrevoked tokens only, so a revoked token's record stays for audits
-- while its name can be reused.
CREATE TABLE tokens (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    hash TEXT NOT NULL CONSTRAINT tokens_hash_unique UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;
