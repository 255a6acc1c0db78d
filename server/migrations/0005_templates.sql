-- Templates uploaded through the admin API (server/src/templates.rs), the same table as the embedded store's
-- version 5. The `counters` row `templates_revision` moves with every put and delete: every node polls it.

CREATE TABLE templates (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
