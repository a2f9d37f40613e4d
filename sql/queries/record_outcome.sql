-- dispatched -> done | skipped | failed | cancelled, written by the trigger workflow's
-- record_outcome activity, or (done, skipped) by the Python perform_firing activity in the
-- firing's own transaction (trigger_relay/outcome.py runs this very file). $7 and $8 are the
-- caller's workflow id and run id, as Temporal tells the activity (never its input).
-- Guards: the generation keeps a workflow of an older generation from touching a replayed
-- row; the firing_uuid ($6) keeps a workflow of another firing that had the same row id (a
-- restored database) from writing onto this one; the workflow id, which the claim wrote
-- before the start, and the run id, once the relay recorded it, keep any other workflow in
-- the namespace (one started by hand with a copied input, or under this row's id after
-- terminating its run) from writing an outcome (README, "Security model"). A row still
-- `pending` is accepted: its workflow can finish before the relay has recorded the start
-- (a quick firing, or a relay that died mid-call); the run id is then recorded here.
UPDATE trigger_relay_outbox
SET state = $3,
    skip_reason = $4,
    last_error = $5,
    finished_at = now(),
    dispatched_at = coalesce(dispatched_at, now()),
    run_id = coalesce(run_id, $8),
    claimed_by = NULL,
    claimed_until = NULL
WHERE id = $1 AND generation = $2 AND state IN ('pending', 'dispatched')
  AND firing_uuid IS NOT DISTINCT FROM $6::uuid
  AND workflow_id = $7
  AND (run_id IS NULL OR run_id = $8)
RETURNING id
