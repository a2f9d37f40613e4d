from __future__ import annotations

import django.db.models.deletion
from django.conf import settings
from django.db import migrations
from django.db import models

POLYMORPHIC_CTYPE = (
    "polymorphic_ctype",
    models.ForeignKey(
        editable=False,
        null=True,
        on_delete=django.db.models.deletion.CASCADE,
        related_name="polymorphic_%(app_label)s.%(class)s_set+",
        to="contenttypes.contenttype",
    ),
)


def _id() -> tuple[str, models.Field]:
    return (
        "id",
        models.BigAutoField(
            auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
        ),
    )


def _trigger_fk(related_name: str, related_query_name: str) -> tuple[str, models.Field]:
    return (
        "trigger",
        models.ForeignKey(
            on_delete=django.db.models.deletion.CASCADE,
            related_name=related_name,
            related_query_name=related_query_name,
            to="triggers.trigger",
            verbose_name="trigger",
        ),
    )


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Trigger",
            fields=[
                _id(),
                ("name", models.CharField(max_length=64, unique=True, verbose_name="name")),
                ("is_enabled", models.BooleanField(default=False, verbose_name="enabled")),
                POLYMORPHIC_CTYPE,
            ],
            options={"verbose_name": "trigger", "verbose_name_plural": "triggers"},
        ),
        migrations.CreateModel(
            name="Event",
            fields=[_id(), POLYMORPHIC_CTYPE, _trigger_fk("events", "event")],
            options={"verbose_name": "event", "verbose_name_plural": "events"},
        ),
        migrations.CreateModel(
            name="Condition",
            fields=[_id(), POLYMORPHIC_CTYPE, _trigger_fk("conditions", "condition")],
            options={"verbose_name": "condition", "verbose_name_plural": "conditions"},
        ),
        migrations.CreateModel(
            name="Action",
            fields=[
                _id(),
                POLYMORPHIC_CTYPE,
                (
                    "trigger",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="action",
                        to="triggers.trigger",
                        verbose_name="trigger",
                    ),
                ),
            ],
            options={"verbose_name": "action", "verbose_name_plural": "actions"},
        ),
        migrations.CreateModel(
            name="Activity",
            fields=[
                _id(),
                (
                    "last_action_datetime",
                    models.DateTimeField(blank=True, null=True, verbose_name="last action"),
                ),
                ("action_count", models.PositiveIntegerField(default=0, verbose_name="actions")),
                POLYMORPHIC_CTYPE,
                _trigger_fk("activities", "activity"),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="trigger_activities",
                        related_query_name="trigger_activity",
                        to=settings.AUTH_USER_MODEL,
                        verbose_name="user",
                    ),
                ),
            ],
            options={
                "verbose_name": "activity",
                "verbose_name_plural": "activities",
                "unique_together": {("trigger", "user")},
            },
        ),
    ]
