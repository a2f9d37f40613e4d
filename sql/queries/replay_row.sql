-- A replayed row starts over as pending with the next generation, hence a new workflow id
-- (SPEC §4.6). Its history of the previous generation stays in Temporal.
UPDATE trigger_relay_outbox
SET state = 'pending',
    generation = generation + 1,
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
RETURNING id, generation
