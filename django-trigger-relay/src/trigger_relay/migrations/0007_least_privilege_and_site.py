"""Schema version 7: applies ``sql/schema/0007_*.sql`` verbatim, from the copies frozen below:
the daemon's role may update only the lifecycle columns of the outbox and no longer reads
the ledger, and the site identity ``trigger_relay_site`` that both workers check (README,
"Security model"). There are no schema versions 4 to 6: migration N applies schema version
N, and migrations 0004 to 0006 change only Django's own tables.

Reversing gives the role back its grants of version 3, drops the site table and forgets
schema version 7; a daemon that needs version 7 then refuses to start.
"""

from __future__ import annotations

from django.db import migrations

from trigger_relay.schema import run_sql_operations

# Frozen copies of sql/schema/0007_*.sql, as released with this migration: applied
# verbatim, never edited (tests/test_schema.py checks that they equal the files, so the
# released files cannot change either; a schema change is a new file and migration).
SCHEMA_FILES: dict[str, str] = {
    "0007_column_grants.sql": r"""-- trigger-relay outbox schema, version 7: the daemon's role may change a row's lifecycle,
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
""",
    "0007_site.sql": r"""-- trigger-relay outbox schema, version 7: the site identity.
--
-- Two sites may share a Temporal namespace, and with the default task queue names their
-- workers would take each other's tasks and look the row up in the wrong database. The
-- daemon writes this id into every workflow input (`site`), and the Python worker and the
-- daemon's own activities refuse a task of another site (docs/contract.md, "Site
-- identity"). It is generated here, once per database: a restore of this database keeps
-- it (the same site), a clone copies it (give a clone that shares a namespace with its
-- origin an id of its own: `UPDATE trigger_relay_site SET id = gen_random_uuid()`, or set
-- TRIGGER_RELAY_SITE for its daemon and workers).
CREATE TABLE trigger_relay_site (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- At most one row.
    singleton  boolean     NOT NULL DEFAULT true UNIQUE,
    CONSTRAINT trigger_relay_site_singleton CHECK (singleton)
);
INSERT INTO trigger_relay_site DEFAULT VALUES;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'trigger_relay_daemon') THEN
        GRANT SELECT ON trigger_relay_site TO trigger_relay_daemon;
    END IF;
END;
$$;

INSERT INTO trigger_relay_schema_version (version) VALUES (7);
""",
}

REVERSE_SQL = """
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'trigger_relay_daemon') THEN
        GRANT UPDATE ON trigger_relay_outbox TO trigger_relay_daemon;
        GRANT SELECT ON trigger_relay_action_ledger TO trigger_relay_daemon;
    END IF;
END;
$$;
DROP TABLE IF EXISTS trigger_relay_site;
DELETE FROM trigger_relay_schema_version WHERE version = 7;
"""


class Migration(migrations.Migration):
    dependencies = [("trigger_relay", "0006_adopted_celery_task")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=run_sql_operations(SCHEMA_FILES.values(), reverse_sql=REVERSE_SQL),
        ),
    ]
