-- A replayed row starts over as pending with the next generation, hence a new workflow id
-- (guarantees §4.6). Its history of the previous generation stays in Temporal. The
-- selection's guards are applied again ($2: dispatched rows too), since `replay` does not
-- hold locks between listing and replaying. A row from before schema version 3 gets its
-- firing_uuid.
UPDATE trigger_relay_outbox
SET state = 'pending',
    generation = generation + 1,
    firing_uuid = coalesce(firing_uuid, gen_random_uuid()),
    replayed_at = now(),
    skip_reason = NULL,
    last_error = NULL,
    attempts = 0,
    claimed_by = NULL,
    claimed_until = NULL,
    dispatched_at = NULL,
    finished_at = NULL,
    workflow_id = NULL,
    run_id = NULL
WHERE id = ANY($1)
  AND state <> 'pending'
  AND (state <> 'dispatched' OR $2::bool)
RETURNING id, generation
