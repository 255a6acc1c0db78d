-- Replay drills (server/src/store/replays.rs), the same table as the embedded store's version 13: one row per drill,
-- its steps as JSON, its clock and the next step; `version` moves on with every update, made only at the version read.

CREATE TABLE replays (
    drill TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    facilitator TEXT NOT NULL,
    speed_centi BIGINT NOT NULL,
    state TEXT NOT NULL,
    elapsed_ms BIGINT NOT NULL,
    since TIMESTAMPTZ NOT NULL,
    next_step BIGINT NOT NULL,
    total BIGINT NOT NULL,
    steps TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX replays_by_state ON replays (state);
