-- trigger-relay outbox schema, version 7: the daemon's role may change a row's lifecycle,
-- never what the row fires (this file), and a site identity that both workers check
-- (0007_site.sql). Versions 4 to 6 do not exist: schema version N is applied by the add-on's
-- migration N, and migrations 0004 to 0006 change only Django's own tables.
--
-- The Python worker performs `event.handle(row.user_pk, **row.context)` from the row: the
-- row, not the workflow input, is what is trusted (django-trigger-relay README, "The
-- activity worker"). Until version 3 the role had UPDATE on every column, so stolen relay
-- credentials could point any row at any trigger, user, context or due time and have the
-- site act on it. The role keeps UPDATE on the columns the daemon's statements write
-- (sql/queries/: claims, dispatch, outcomes, replays, reconciling), and only those;
-- firing_uuid among them because a replay gives a row from before version 3 its uuid.
-- created_at, event_id, trigger_id, user_pk, context and due_at are written once, by the
-- site's INSERT.
--
-- The daemon never reads the action ledger: retention's DELETE of finished rows removes
-- their ledger rows through the foreign key's ON DELETE CASCADE, which PostgreSQL runs with
-- the ledger owner's rights. Its SELECT grant of version 2 is revoked.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'trigger_relay_daemon') THEN
        -- Revoking the table privilege revokes column privileges too: revoke, then grant.
        REVOKE UPDATE ON trigger_relay_outbox FROM trigger_relay_daemon;
        GRANT UPDATE (state, skip_reason, attempts, last_error, claimed_by, claimed_until,
                      dispatched_at, finished_at, replayed_at, workflow_id, run_id,
                      generation, firing_uuid)
            ON trigger_relay_outbox TO trigger_relay_daemon;
        REVOKE SELECT ON trigger_relay_action_ledger FROM trigger_relay_daemon;
    END IF;
END;
$$;
