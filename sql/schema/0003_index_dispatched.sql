-- trigger-relay outbox schema, version 3: the reconciler's index (rows dispatched for a
-- while). Dispatched rows are few next to the table's history; without this index each
-- reconcile pass read the whole table.
--
-- CONCURRENTLY, so that the site's inserts (its firings) go on while it builds; it cannot
-- run in a transaction block, hence a file of its own: apply it with psql in autocommit
-- (no --single-transaction). IF NOT EXISTS makes a re-run after an interruption safe; an
-- index left INVALID by one must be dropped by hand first (psql's \d shows it).
CREATE INDEX CONCURRENTLY IF NOT EXISTS trigger_relay_outbox_dispatched_idx
    ON trigger_relay_outbox (dispatched_at) WHERE state = 'dispatched';
