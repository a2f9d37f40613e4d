"""Schema version 3: applies ``sql/schema/0003_*.sql`` verbatim, from the copies frozen below
(the firing identity ``firing_uuid`` and the reconciler's and retention's indexes,
guarantees §4.3, §4.7, §4.8).

Not atomic: the two index files use ``CREATE INDEX CONCURRENTLY``, which cannot run in a
transaction, so that building them does not block the site's inserts into the outbox. Each
file is still one statement batch of its own.

Reversing drops the indexes and the column and forgets schema version 3; a daemon that
needs version 3 then refuses to start until the migration is applied again.
"""

from __future__ import annotations

import django.contrib.postgres.functions
from django.db import migrations
from django.db import models

from trigger_relay.compat import database_default
from trigger_relay.schema import run_sql_operations

# Frozen copies of sql/schema/0003_*.sql, as released with this migration: applied
# verbatim, never edited (tests/test_schema.py checks that they equal the files, so the
# released files cannot change either; a schema change is a new file and migration).
SCHEMA_FILES: dict[str, str] = {
    "0003_firing_uuid.sql": r"""-- trigger-relay outbox schema, version 3: a firing identity that survives restores (this
-- file), and indexes for the reconciler and retention (the two 0003_index_*.sql files).
--
-- firing_uuid identifies one firing for good. Row ids are reused after a point-in-time
-- restore, `TRUNCATE ... RESTART IDENTITY`, or a staging database cloned from production,
-- and two sites can share a namespace: a workflow id built from the row id alone then
-- names another firing's workflow. The workflow id now contains the uuid
-- (`{prefix}-{id}-g{generation}-{firing_uuid}`), and every write of a workflow's outcome
-- is guarded by it.
--
-- Rows that exist when this runs keep firing_uuid NULL and their old workflow id
-- (`{prefix}-{id}-g{generation}`): a relay of the previous release may have started them
-- under that id already, and a new id would start them twice. A replay gives such a row
-- its uuid. Adding the column without a default and setting the default afterwards keeps
-- this migration from rewriting the table.
ALTER TABLE trigger_relay_outbox ADD COLUMN firing_uuid uuid;
ALTER TABLE trigger_relay_outbox ALTER COLUMN firing_uuid SET DEFAULT gen_random_uuid();

-- The indexes of this version are built CONCURRENTLY, one per file
-- (0003_index_dispatched.sql, 0003_index_finished.sql): a plain CREATE INDEX would block
-- every insert into the outbox, i.e. every firing of the site, while it reads the table.

INSERT INTO trigger_relay_schema_version (version) VALUES (3);
""",
    "0003_index_dispatched.sql": r"""-- trigger-relay outbox schema, version 3: the reconciler's index (rows dispatched for a
-- while). Dispatched rows are few next to the table's history; without this index each
-- reconcile pass read the whole table.
--
-- CONCURRENTLY, so that the site's inserts (its firings) go on while it builds; it cannot
-- run in a transaction block, hence a file of its own: apply it with psql in autocommit
-- (no --single-transaction). IF NOT EXISTS makes a re-run after an interruption safe; an
-- index left INVALID by one must be dropped by hand first (psql's \d shows it).
CREATE INDEX CONCURRENTLY IF NOT EXISTS trigger_relay_outbox_dispatched_idx
    ON trigger_relay_outbox (dispatched_at) WHERE state = 'dispatched';
""",
    "0003_index_finished.sql": r"""-- trigger-relay outbox schema, version 3: retention's index (rows finished long ago).
-- Without it, a retention pass that found few rows to delete walked the whole primary key.
--
-- CONCURRENTLY, so that the site's inserts (its firings) go on while it builds; it cannot
-- run in a transaction block, hence a file of its own: apply it with psql in autocommit
-- (no --single-transaction). IF NOT EXISTS makes a re-run after an interruption safe; an
-- index left INVALID by one must be dropped by hand first (psql's \d shows it).
CREATE INDEX CONCURRENTLY IF NOT EXISTS trigger_relay_outbox_finished_idx
    ON trigger_relay_outbox (finished_at) WHERE state IN ('done', 'skipped', 'cancelled');
""",
}

REVERSE_SQL = """
DROP INDEX IF EXISTS trigger_relay_outbox_finished_idx;
DROP INDEX IF EXISTS trigger_relay_outbox_dispatched_idx;
ALTER TABLE trigger_relay_outbox DROP COLUMN IF EXISTS firing_uuid;
DELETE FROM trigger_relay_schema_version WHERE version = 3;
"""


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("trigger_relay", "0002_action_ledger")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=run_sql_operations(SCHEMA_FILES.values(), reverse_sql=REVERSE_SQL),
            state_operations=[
                migrations.AddField(
                    model_name="outboxrow",
                    name="firing_uuid",
                    field=models.UUIDField(
                        editable=False,
                        null=True,
                        verbose_name="firing uuid",
                        **database_default(django.contrib.postgres.functions.RandomUUID()),
                    ),
                ),
            ],
        ),
    ]
