-- pending -> cancelled (guarantees §5.1). Rows not started yet never reach Temporal: the
-- claim query only takes pending rows. A row claimed at this moment may still get its
-- workflow started; that workflow finds the row cancelled and performs nothing
-- (activities.py).
-- Selectors as in select_for_cancel.sql; with $4 (dry run) nothing changes.
UPDATE trigger_relay_outbox
SET state = 'cancelled',
    finished_at = now(),
    claimed_by = NULL,
    claimed_until = NULL
WHERE state = 'pending'
  AND NOT $4::bool
  AND ($1::bigint[] IS NULL OR id = ANY($1))
  AND ($2::bigint[] IS NULL OR trigger_id = ANY($2))
  AND ($3::text[] IS NULL OR user_pk = ANY($3))
RETURNING id, trigger_id, user_pk, workflow_id
