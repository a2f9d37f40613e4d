-- Retention (guarantees §4.7): delete up to $2 finished rows (done, skipped, cancelled)
-- that finished more than $1 seconds ago; their ledger rows go with them (ON DELETE
-- CASCADE). Failed rows stay until an operator replays or deletes them. Small batches
-- keep each transaction short next to the site's traffic; the partial index on
-- finished_at (schema version 3) finds them without walking the table, and SKIP LOCKED
-- lets replicas delete disjoint batches instead of queueing on the same rows.
WITH deleted AS (
    DELETE FROM trigger_relay_outbox
    WHERE id IN (
        SELECT id
        FROM trigger_relay_outbox
        WHERE state IN ('done', 'skipped', 'cancelled')
          AND finished_at < now() - make_interval(secs => $1)
        ORDER BY finished_at
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )
    RETURNING 1
)
SELECT count(*)::bigint FROM deleted
