-- pending -> dispatched, for the rows of one batch whose starts Temporal accepted or reported
-- as already started. $5 is when each start returned; the result is the seconds from the
-- row's created_at (the start of the site's inserting transaction, database clock) or its
-- replay to that moment. Rows no longer pending (cancelled, replayed, or already finished by
-- a quick workflow) are left alone.
UPDATE trigger_relay_outbox AS o
SET state = 'dispatched',
    dispatched_at = now(),
    workflow_id = d.workflow_id,
    run_id = d.run_id,
    claimed_by = NULL,
    claimed_until = NULL,
    last_error = NULL
FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::timestamptz[])
     AS d(id, generation, workflow_id, run_id, started_at)
WHERE o.id = d.id AND o.generation = d.generation AND o.state = 'pending'
RETURNING o.id,
          extract(epoch FROM d.started_at - coalesce(o.replayed_at, o.created_at))::float8
              AS commit_to_start
