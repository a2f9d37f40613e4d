-- Dispatched rows, and those of them whose due time passed more than $1 seconds ago (their
-- workflows should have finished by now). Run once per reconcile pass, not with every
-- backlog refresh: with long delays most of the table can be dispatched.
SELECT count(*)::bigint AS dispatched,
       (count(*) FILTER (WHERE due_at < now() - make_interval(secs => $1)))::bigint AS overdue
FROM trigger_relay_outbox
WHERE state = 'dispatched'
