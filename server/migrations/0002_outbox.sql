-- The webhook outbox (server/src/store/outbox.rs), the same table as the embedded store's version 2: one row per
-- event and endpoint, queued in the transaction of the change that caused the event, kept as the delivery log.

CREATE TABLE deliveries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint TEXT NOT NULL,
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    doc TEXT NOT NULL,
    coalesce_key TEXT,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_attempt_at TIMESTAMPTZ,
    last_status INTEGER,
    last_error TEXT,
    delivered_at TIMESTAMPTZ,
    CONSTRAINT deliveries_event_unique UNIQUE (endpoint, event_id)
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint, id);
