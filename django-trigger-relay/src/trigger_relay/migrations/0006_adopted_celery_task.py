"""Adopting firings waiting in Celery (guarantees §2.5): ``trigger_relay_celery_claim``, who
performs each dj-triggers ``handle_event`` task, Temporal (adopted) or Celery (started).

A table of Django's own (managed): only the site reads and writes it; the daemon never does.
"""

from __future__ import annotations

from django.db import migrations
from django.db import models


class Migration(migrations.Migration):
    dependencies = [
        ("trigger_relay", "0005_trigger_route"),
    ]

    operations = [
        migrations.CreateModel(
            name="CeleryTaskClaim",
            fields=[
                (
                    "task_id",
                    models.CharField(
                        max_length=255,
                        primary_key=True,
                        serialize=False,
                        verbose_name="Celery task id",
                    ),
                ),
                (
                    "owner",
                    models.CharField(
                        choices=[
                            ("temporal", "Temporal (adopted)"),
                            ("celery", "Celery (started by a worker)"),
                        ],
                        max_length=16,
                        verbose_name="owner",
                    ),
                ),
                (
                    "outbox_id",
                    models.BigIntegerField(blank=True, null=True, verbose_name="outbox row id"),
                ),
                ("claimed_at", models.DateTimeField(auto_now_add=True, verbose_name="claimed at")),
            ],
            options={
                "verbose_name": "Celery task claim",
                "verbose_name_plural": "Celery task claims",
                "db_table": "trigger_relay_celery_claim",
            },
        ),
    ]
