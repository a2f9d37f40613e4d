"""Routes as data (guarantees §2.3): ``trigger_relay_route``, each trigger's route by pk.

A table of Django's own (managed): only the site reads and writes it; the daemon never does.
"""

from __future__ import annotations

import django.db.models.deletion
from django.db import migrations
from django.db import models


class Migration(migrations.Migration):
    dependencies = [
        ("trigger_relay", "0004_outboxrow_payload_permission"),
        # Trigger exists since dj-triggers' first migration, on every version.
        ("triggers", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="TriggerRoute",
            fields=[
                (
                    "trigger",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="relay_route",
                        serialize=False,
                        to="triggers.trigger",
                        verbose_name="trigger",
                    ),
                ),
                (
                    "route",
                    models.CharField(
                        choices=[("temporal", "Temporal"), ("celery", "Celery")],
                        max_length=16,
                        verbose_name="route",
                    ),
                ),
                ("changed_at", models.DateTimeField(auto_now=True, verbose_name="changed at")),
                (
                    "changed_by",
                    models.CharField(
                        blank=True, default="", max_length=200, verbose_name="changed by"
                    ),
                ),
            ],
            options={
                "verbose_name": "trigger route",
                "verbose_name_plural": "trigger routes",
                "db_table": "trigger_relay_route",
            },
        ),
    ]
