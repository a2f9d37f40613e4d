-- The request path (guarantees §2.2, §2.3; its cost: docs/performance.md), run by the
-- add-on's Event.fired receiver (trigger_relay/outbox.py) in the site's own transaction: the
-- firing's route and, when that route is Temporal, its outbox row, in one round trip. The
-- route is the trigger's stored one (trigger_relay_route, one primary-key lookup), else $6:
-- what the settings say of this trigger (NULL when they cannot say; the caller then raises
-- the settings' error). Exactly one row comes back: the route read, and the new row's id
-- (NULL when nothing was written, which then goes to Celery, or is refused for a route that
-- is neither).
-- created_at and due_at come from the database clock, which the relay compares them with:
-- the statement's timestamp, as Django's Now(), and the same plus the event's delay ($5).
-- Every other column takes its default from sql/schema/ (the firing uuid above all). The casts
-- let any driver send the values as untyped literals (psycopg2, psycopg's client-side binding).
WITH route AS (
    SELECT coalesce(
        (SELECT stored.route FROM trigger_relay_route AS stored WHERE stored.trigger_id = $2::bigint),
        $6::text
    ) AS name
), inserted AS (
    INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, context, created_at, due_at)
    SELECT $1::bigint, $2::bigint, $3::text, $4::jsonb,
           statement_timestamp(), statement_timestamp() + $5::interval
    FROM route
    WHERE route.name = 'temporal'
    RETURNING id
)
SELECT route.name, inserted.id
FROM route LEFT JOIN inserted ON true
