-- trigger-relay outbox schema, version 3: retention's index (rows finished long ago).
-- Without it, a retention pass that found few rows to delete walked the whole primary key.
--
-- CONCURRENTLY, so that the site's inserts (its firings) go on while it builds; it cannot
-- run in a transaction block, hence a file of its own: apply it with psql in autocommit
-- (no --single-transaction). IF NOT EXISTS makes a re-run after an interruption safe; an
-- index left INVALID by one must be dropped by hand first (psql's \d shows it).
CREATE INDEX CONCURRENTLY IF NOT EXISTS trigger_relay_outbox_finished_idx
    ON trigger_relay_outbox (finished_at) WHERE state IN ('done', 'skipped', 'cancelled');
