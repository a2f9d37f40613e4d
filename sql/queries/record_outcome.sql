-- dispatched -> done | skipped | failed | cancelled, written by the trigger workflow's
-- record_outcome activity, or (done, skipped) by the Python perform_firing activity in the
-- firing's own transaction (trigger_relay/outcome.py runs this very file). A row still `pending` is accepted too: its workflow can finish
-- before the relay has recorded the start (a quick firing, or a relay that died mid-call);
-- the workflow's id and run id ($7, $8) are then recorded here. The generation guard keeps
-- a workflow of an older generation from touching a replayed row; the firing_uuid guard ($6)
-- keeps a workflow of another firing that had the same row id (a restored database) from
-- writing onto this one.
UPDATE trigger_relay_outbox
SET state = $3,
    skip_reason = $4,
    last_error = $5,
    finished_at = now(),
    dispatched_at = coalesce(dispatched_at, now()),
    workflow_id = coalesce(workflow_id, $7),
    run_id = coalesce(run_id, $8),
    claimed_by = NULL,
    claimed_until = NULL
WHERE id = $1 AND generation = $2 AND state IN ('pending', 'dispatched')
  AND firing_uuid IS NOT DISTINCT FROM $6::uuid
RETURNING id
