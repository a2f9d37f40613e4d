"""Schema version 2: applies ``sql/schema/0002_*.sql`` verbatim (the action ledger, SPEC §3.4).

Reversing drops the ledger and forgets schema version 2.
"""

from __future__ import annotations

import django.db.models.deletion
import django.db.models.functions.datetime
from django.db import migrations
from django.db import models

from trigger_relay.schema import run_sql_operations

REVERSE_SQL = """
DROP TABLE IF EXISTS trigger_relay_action_ledger;
DELETE FROM trigger_relay_schema_version WHERE version = 2;
"""


class Migration(migrations.Migration):
    dependencies = [("trigger_relay", "0001_initial")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=run_sql_operations(2, reverse_sql=REVERSE_SQL),
            state_operations=[
                migrations.CreateModel(
                    name="LedgerEntry",
                    fields=[
                        (
                            "pk",
                            models.CompositePrimaryKey(
                                "outbox_id",
                                "action_id",
                                blank=True,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        (
                            "outbox",
                            models.ForeignKey(
                                db_column="outbox_id",
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="ledger_entries",
                                to="trigger_relay.outboxrow",
                            ),
                        ),
                        ("action_id", models.BigIntegerField(verbose_name="action id")),
                        ("generation", models.IntegerField(verbose_name="generation")),
                        ("idempotency_key", models.TextField(verbose_name="idempotency key")),
                        (
                            "performed_at",
                            models.DateTimeField(
                                db_default=django.db.models.functions.datetime.Now(),
                                verbose_name="performed at",
                            ),
                        ),
                    ],
                    options={
                        "verbose_name": "ledger entry",
                        "verbose_name_plural": "ledger entries",
                        "db_table": "trigger_relay_action_ledger",
                        "managed": False,
                    },
                ),
            ],
        ),
    ]
