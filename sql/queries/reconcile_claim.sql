-- The reconciler's share of dispatched rows (issue: rows left `dispatched` forever when an
-- operator terminates or resets a workflow, or it times out). Rows dispatched more than $2
-- seconds ago whose workflow has not been looked at within the last $2 seconds, up to $1,
-- for replica $3. On a dispatched row the lease columns mean "looked at by this replica;
-- next look after claimed_until", so every replica may run the reconciler and each row is
-- described about once per period, by one of them. The partial index on dispatched_at
-- (schema version 3) keeps this proportional to the dispatched rows.
WITH due AS (
    SELECT id
    FROM trigger_relay_outbox
    WHERE state = 'dispatched'
      AND dispatched_at < now() - make_interval(secs => $2)
      AND (claimed_until IS NULL OR claimed_until < now())
    ORDER BY dispatched_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE trigger_relay_outbox AS o
SET claimed_by = $3,
    claimed_until = now() + make_interval(secs => $2)
FROM due
WHERE o.id = due.id
RETURNING o.id, o.generation, o.workflow_id, o.firing_uuid::text AS firing_uuid
