-- Who sends a delivery (server/src/store/outbox.rs, `Sink`), the same column as the embedded store's version 9: the
-- webhook deliverer, the mailer or a chat bot, each claiming only its own rows.

ALTER TABLE deliveries ADD COLUMN sink TEXT NOT NULL DEFAULT 'webhook';
CREATE INDEX deliveries_due_by_sink ON deliveries (sink, state, next_attempt_at);
