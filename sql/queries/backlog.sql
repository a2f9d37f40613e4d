-- Backlog gauges, cheap enough to run every few seconds: both aggregates use the partial
-- index on pending rows; dispatched and failed rows are few in a healthy outbox.
SELECT
    (SELECT count(*) FROM trigger_relay_outbox WHERE state = 'pending')::bigint AS pending,
    (SELECT extract(epoch FROM now() - min(created_at))
       FROM trigger_relay_outbox WHERE state = 'pending')::float8 AS oldest_pending_age,
    (SELECT count(*) FROM trigger_relay_outbox WHERE state = 'dispatched')::bigint AS dispatched,
    (SELECT count(*) FROM trigger_relay_outbox WHERE state = 'failed')::bigint AS failed
