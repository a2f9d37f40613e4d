-- Rows a `cancel` would touch: pending ones (cancelled in the table) and dispatched ones
-- (their workflow is asked to cancel; it records `cancelled` if it was still waiting).
SELECT id, state, trigger_id, user_pk, workflow_id
FROM trigger_relay_outbox
WHERE state IN ('pending', 'dispatched')
  AND ($1::bigint[] IS NULL OR id = ANY($1))
  AND ($2::bigint[] IS NULL OR trigger_id = ANY($2))
  AND ($3::text[] IS NULL OR user_pk = ANY($3))
ORDER BY id
