-- dispatched -> done | skipped | failed | cancelled, written by the trigger workflow's
-- record_outcome activity. A row still `pending` is accepted too: its workflow can finish
-- before a relay that died mid-call has recorded the start. The generation guard keeps a
-- workflow of an older generation from touching a replayed row.
UPDATE trigger_relay_outbox
SET state = $3,
    skip_reason = $4,
    last_error = $5,
    finished_at = now(),
    claimed_by = NULL,
    claimed_until = NULL
WHERE id = $1 AND generation = $2 AND state IN ('pending', 'dispatched')
