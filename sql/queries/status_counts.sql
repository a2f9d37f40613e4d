-- `trigger-relay status`: rows per state (a full count, run on demand only).
SELECT state, count(*)::bigint AS rows,
       extract(epoch FROM now() - min(created_at))::float8 AS oldest_age_seconds
FROM trigger_relay_outbox
GROUP BY state
ORDER BY state
