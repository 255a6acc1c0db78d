-- Chat channels bound to incidents and the channel log (server/src/store/chat_log.rs), the same columns and table
-- as the embedded store's version 10: the index keeps each incident's channel (JSON) and `channel_key` (the
-- network and the lowercased address a heard line is looked up by); lines with a network id (Slack `ts`) are
-- unique per incident and channel, so a repeated event or a second node logs nothing twice.

ALTER TABLE incidents ADD COLUMN channel text;
ALTER TABLE incidents ADD COLUMN channel_key text;
CREATE INDEX incidents_by_channel ON incidents (channel_key);

CREATE TABLE chat_lines (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    doc TEXT NOT NULL,
    network TEXT NOT NULL,
    channel TEXT NOT NULL,
    line_id TEXT,
    speaker TEXT NOT NULL,
    person TEXT,
    text TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX chat_lines_once ON chat_lines (doc, network, channel, line_id);
CREATE INDEX chat_lines_by_doc ON chat_lines (doc, id);
