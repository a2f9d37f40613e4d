-- dispatched -> failed, by the reconciler: the row's workflow ($3) closed without recording
-- an outcome (terminated, timed out, failed, reset away) or no longer exists. Guarded on
-- the workflow id, so a replay or a late record_outcome in between wins. `replay` then
-- performs what did not complete, once (the ledger).
UPDATE trigger_relay_outbox
SET state = 'failed',
    finished_at = now(),
    last_error = $4,
    claimed_by = NULL,
    claimed_until = NULL
WHERE id = $1 AND generation = $2 AND state = 'dispatched' AND workflow_id = $3
RETURNING id
