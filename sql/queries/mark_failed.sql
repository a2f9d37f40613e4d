-- pending -> failed: a row that can never start (guarantees §4.5).
UPDATE trigger_relay_outbox
SET state = 'failed',
    finished_at = now(),
    last_error = $3,
    claimed_by = NULL,
    claimed_until = NULL
WHERE id = $1 AND generation = $2 AND state = 'pending'
RETURNING id
