-- One incident's deliveries of one sink in order, for its mail thread (server/src/store.rs, `deliveries_of`); the
-- same index as the embedded store's entry for it (version 12 on main).

CREATE INDEX deliveries_by_doc ON deliveries (doc, sink, id);
