-- Restricted incidents in the index (server/src/store.rs, `IncidentSummary::restricted` and `members`), the same
-- columns as the embedded store's: whether only members (and admins) may see the incident, and the members
-- (the declarer, the role holders and the people the commander added) as a JSON array of names, so that listings
-- filter without loading documents. Existing rows are open until their incident next changes.

ALTER TABLE incidents ADD COLUMN restricted integer NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN members text NOT NULL DEFAULT '[]';
