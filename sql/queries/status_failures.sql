-- `trigger-relay status`: the most recent failures, newest first.
SELECT id, trigger_id, event_id, user_pk, attempts, finished_at, last_error
FROM trigger_relay_outbox
WHERE state = 'failed'
ORDER BY finished_at DESC NULLS LAST, id DESC
LIMIT $1
