-- pending -> dispatched, after Temporal accepted the start or reported it already started.
-- Returns seconds from commit (or replay) to start, measured on the database clock.
UPDATE trigger_relay_outbox
SET state = 'dispatched',
    dispatched_at = now(),
    workflow_id = $3,
    run_id = $4,
    claimed_by = NULL,
    claimed_until = NULL,
    last_error = NULL
WHERE id = $1 AND generation = $2 AND state = 'pending'
RETURNING extract(epoch FROM now() - coalesce(replayed_at, created_at))::float8
