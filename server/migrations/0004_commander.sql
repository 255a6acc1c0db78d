-- The Incident Commander in the index (server/src/store.rs, `IncidentSummary::commander`), the same column as the
-- embedded store's version 4, so the incident list names whom to call. Rows gain it on their next change.

ALTER TABLE incidents ADD COLUMN commander TEXT;
