"""Schema version 1: applies ``sql/schema/0001_*.sql`` verbatim (SPEC §1.1).

The files are executed as they are, one ``execute()`` per file, exactly as ``psql -f``
would run them; Django's state gets the unmanaged ``OutboxRow``. Each later schema file
``NNNN_*.sql`` gets its own migration ``NNNN_...`` that applies it (the test suite checks
that every file is covered), so existing sites receive it through ``migrate``.

Reversing drops the tables and the function. The role ``trigger_relay_daemon`` is left in
place: roles belong to the whole PostgreSQL cluster and may serve other databases.
"""

from __future__ import annotations

import django.db.models.functions.datetime
from django.db import migrations
from django.db import models

from trigger_relay.schema import run_sql_operations

REVERSE_SQL = """
DROP TABLE IF EXISTS trigger_relay_outbox;
DROP FUNCTION IF EXISTS trigger_relay_outbox_notify();
DROP TABLE IF EXISTS trigger_relay_schema_version;
"""


class Migration(migrations.Migration):
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=run_sql_operations(1, reverse_sql=REVERSE_SQL),
            state_operations=[
                migrations.CreateModel(
                    name="OutboxRow",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        (
                            "created_at",
                            models.DateTimeField(
                                db_default=django.db.models.functions.datetime.Now(),
                                verbose_name="created at",
                            ),
                        ),
                        ("event_id", models.BigIntegerField(verbose_name="event id")),
                        ("trigger_id", models.BigIntegerField(verbose_name="trigger id")),
                        ("user_pk", models.TextField(verbose_name="user pk")),
                        ("context", models.JSONField(db_default={}, verbose_name="context")),
                        ("due_at", models.DateTimeField(verbose_name="due at")),
                        (
                            "state",
                            models.TextField(
                                choices=[
                                    ("pending", "pending"),
                                    ("dispatched", "dispatched"),
                                    ("done", "done"),
                                    ("skipped", "skipped"),
                                    ("failed", "failed"),
                                    ("cancelled", "cancelled"),
                                ],
                                db_default="pending",
                                verbose_name="state",
                            ),
                        ),
                        (
                            "skip_reason",
                            models.TextField(blank=True, null=True, verbose_name="skip reason"),
                        ),
                        ("attempts", models.IntegerField(db_default=0, verbose_name="attempts")),
                        (
                            "last_error",
                            models.TextField(blank=True, null=True, verbose_name="last error"),
                        ),
                        (
                            "claimed_by",
                            models.TextField(blank=True, null=True, verbose_name="claimed by"),
                        ),
                        (
                            "claimed_until",
                            models.DateTimeField(
                                blank=True, null=True, verbose_name="claimed until"
                            ),
                        ),
                        (
                            "dispatched_at",
                            models.DateTimeField(
                                blank=True, null=True, verbose_name="dispatched at"
                            ),
                        ),
                        (
                            "finished_at",
                            models.DateTimeField(blank=True, null=True, verbose_name="finished at"),
                        ),
                        (
                            "replayed_at",
                            models.DateTimeField(blank=True, null=True, verbose_name="replayed at"),
                        ),
                        (
                            "workflow_id",
                            models.TextField(blank=True, null=True, verbose_name="workflow id"),
                        ),
                        ("run_id", models.TextField(blank=True, null=True, verbose_name="run id")),
                        (
                            "generation",
                            models.IntegerField(db_default=0, verbose_name="generation"),
                        ),
                    ],
                    options={
                        "verbose_name": "outbox row",
                        "verbose_name_plural": "outbox rows",
                        "db_table": "trigger_relay_outbox",
                        "ordering": ("id",),
                        "managed": False,
                    },
                ),
            ],
        ),
    ]
