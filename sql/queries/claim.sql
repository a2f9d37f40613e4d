-- Claim up to $1 pending rows for replica $2 with a lease of $3 seconds (SPEC §4.2).
-- FOR UPDATE SKIP LOCKED lets replicas claim disjoint rows without waiting on each other; the
-- lease (claimed_until) keeps a claimed row away from other replicas after this short
-- transaction commits, and hands it back if this replica dies before recording the outcome.
-- The context is read as text and carried to the workflow verbatim (exact numbers, any
-- depth); timestamps are decoded one row at a time, so one undecodable row fails alone.
-- The claim also writes the id of the workflow it is about to start ($4 is the prefix;
-- `{prefix}-{id}-g{generation}-{firing_uuid}`, or without the uuid for rows from before
-- schema version 3): the row knows its workflow before that workflow runs, and the
-- activities refuse a caller that is not it (README, "Security model").
WITH claimable AS (
    SELECT id
    FROM trigger_relay_outbox
    WHERE state = 'pending'
      AND (claimed_until IS NULL OR claimed_until < now())
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE trigger_relay_outbox AS o
SET claimed_by = $2,
    claimed_until = now() + make_interval(secs => $3),
    attempts = o.attempts + 1,
    workflow_id = $4 || '-' || o.id || '-g' || o.generation
                  || coalesce('-' || o.firing_uuid::text, '')
FROM claimable
WHERE o.id = claimable.id
RETURNING o.id, o.generation, o.firing_uuid::text AS firing_uuid, o.event_id, o.trigger_id,
          o.user_pk, o.context::text AS context, o.created_at, o.due_at, o.attempts,
          o.workflow_id
