-- Rows chosen for a replay by hand (guarantees §4.6). Every selector is optional
-- (NULL = any); the CLI refuses a call with no selector at all. Pending rows are never
-- chosen: they are already on their way. Dispatched rows (workflow may still run) only
-- when $8 is true.
SELECT id, state, generation, trigger_id, event_id, user_pk, created_at, workflow_id
FROM trigger_relay_outbox
WHERE ($1::bigint[] IS NULL OR id = ANY($1))
  AND ($2::bigint IS NULL OR id >= $2)
  AND ($3::bigint IS NULL OR id <= $3)
  AND ($4::text[] IS NULL OR state = ANY($4))
  AND ($5::bigint[] IS NULL OR trigger_id = ANY($5))
  AND ($6::timestamptz IS NULL OR created_at >= $6)
  AND ($7::timestamptz IS NULL OR created_at < $7)
  AND state <> 'pending'
  AND (state <> 'dispatched' OR $8::bool)
ORDER BY id

