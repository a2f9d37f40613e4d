-- Claim up to $1 pending rows for replica $2 with a lease of $3 seconds (guarantees §4.2).
-- FOR UPDATE SKIP LOCKED lets replicas claim disjoint rows without waiting on each other; the
-- lease (claimed_until) keeps a claimed row away from other replicas after this short
-- transaction commits, and hands it back if this replica dies before recording the outcome.
-- The context is read as text and carried to the workflow verbatim (exact numbers, any
-- depth); timestamps are decoded one row at a time, so one undecodable row fails alone.
--
-- Memory (docs/contract.md, "Memory"): the size of each locked row's
-- context is measured here, as the text the relay would carry (a jsonb's stored size bounds
-- nothing: `1e100000` is a few bytes on disk and 100,001 digits as text), and
--  * a row whose context is over $4 bytes (TRIGGER_RELAY_MAX_INPUT_BYTES; its workflow input,
--    which holds that text escaped, would be larger still) is claimed with a NULL context and
--    its size: the relay fails it without ever fetching it;
--  * the batch stops before the row that would take the contexts returned past $5 bytes, so
--    a batch holds at most $5 bytes of context, or the one first row that alone is larger.
--    The rows after the cut stay locked only until this statement ends, unclaimed.
-- `sized` is MATERIALIZED so that each context is printed once here, not once per use of
-- its size (inlined, the planner evaluated octet_length in each window and the filter: 6 s
-- instead of 2 s for 100 contexts of 1.5 MB), and it measures only the rows `claimable`
-- locked, never those it skipped (an expression in `claimable` itself is evaluated below
-- the lock, for skipped rows too). `candidates` (rows locked) tells
-- the relay whether the cut left rows behind for its next claim.
--
-- The claim also writes the id of the workflow it is about to start ($6 is the prefix;
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
),
sized AS MATERIALIZED (
    SELECT claimable.id, octet_length(t.context::text) AS context_bytes
    FROM claimable
    JOIN trigger_relay_outbox AS t ON t.id = claimable.id
),
batch AS (
    SELECT id,
           context_bytes,
           CASE WHEN context_bytes <= $4 THEN context_bytes ELSE 0 END AS returned_bytes,
           coalesce(sum(context_bytes) FILTER (WHERE context_bytes <= $4)
                        OVER (ORDER BY id ROWS UNBOUNDED PRECEDING), 0) AS bytes_through,
           count(*) OVER () AS candidates
    FROM sized
)
UPDATE trigger_relay_outbox AS o
SET claimed_by = $2,
    claimed_until = now() + make_interval(secs => $3),
    attempts = o.attempts + 1,
    workflow_id = $6 || '-' || o.id || '-g' || o.generation
                  || coalesce('-' || o.firing_uuid::text, '')
FROM batch
WHERE o.id = batch.id
  -- Within the budget, or nothing returned before it: a batch is never empty.
  AND (batch.bytes_through <= $5 OR batch.bytes_through = batch.returned_bytes)
RETURNING o.id, o.generation, o.firing_uuid::text AS firing_uuid, o.event_id, o.trigger_id,
          o.user_pk, CASE WHEN batch.context_bytes <= $4 THEN o.context::text END AS context,
          batch.context_bytes, batch.candidates, o.created_at, o.due_at, o.attempts,
          o.workflow_id
