-- The names of the claimed rows' triggers (dj-triggers' `triggers_trigger`), for the memo and
-- the search attributes of their workflows. A separate statement, not a join in claim.sql:
-- the claim must never depend on a table of another application (missing in a database
-- without dj-triggers, or not granted to the daemon's role); this one may fail, and the
-- workflows then start without the names. A trigger deleted meanwhile has no row here.
-- Primary-key lookups: one index probe per distinct trigger of the batch.
SELECT id::bigint AS id, name::text AS name
FROM triggers_trigger
WHERE id = ANY($1)
