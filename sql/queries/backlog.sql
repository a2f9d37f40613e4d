-- Backlog gauges, cheap enough to run every few seconds on an outbox of millions of rows:
-- the count of pending rows and the oldest of them come from the partial index on pending
-- rows (the oldest by id: ids are assigned in commit order closely enough for an age
-- gauge, and min(created_at) would read every pending row); failed rows are read from the
-- (state, created_at) index. Dispatched rows, which long delays make many, are counted by
-- the reconciler once per pass (dispatched_overdue.sql), not here.
SELECT
    (SELECT count(*) FROM trigger_relay_outbox WHERE state = 'pending')::bigint AS pending,
    (SELECT extract(epoch FROM now() - created_at)
       FROM trigger_relay_outbox WHERE state = 'pending'
       ORDER BY id LIMIT 1)::float8 AS oldest_pending_age,
    (SELECT count(*) FROM trigger_relay_outbox WHERE state = 'failed')::bigint AS failed
