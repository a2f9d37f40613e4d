"""Schema version 3: applies ``sql/schema/0003_*.sql`` verbatim (the firing identity
``firing_uuid`` and the reconciler's and retention's indexes, SPEC §4.3, §4.7, §4.8).

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

from trigger_relay.schema import run_sql_operations

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
            database_operations=run_sql_operations(3, reverse_sql=REVERSE_SQL),
            state_operations=[
                migrations.AddField(
                    model_name="outboxrow",
                    name="firing_uuid",
                    field=models.UUIDField(
                        db_default=django.contrib.postgres.functions.RandomUUID(),
                        editable=False,
                        null=True,
                        verbose_name="firing uuid",
                    ),
                ),
            ],
        ),
    ]
