from __future__ import annotations

import datetime as dt

import django.core.validators
import django.db.models.deletion
from django.db import migrations
from django.db import models


def _condition_ptr() -> tuple[str, models.Field]:
    return (
        "condition_ptr",
        models.OneToOneField(
            auto_created=True,
            on_delete=django.db.models.deletion.CASCADE,
            parent_link=True,
            primary_key=True,
            serialize=False,
            to="triggers.condition",
        ),
    )


class Migration(migrations.Migration):
    dependencies = [("triggers", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="ActionCountCondition",
            fields=[
                _condition_ptr(),
                (
                    "limit",
                    models.PositiveIntegerField(
                        default=1,
                        help_text="Maximal number of actions that can be triggered for the user.",
                        validators=[django.core.validators.MinValueValidator(1)],
                        verbose_name="action count limit",
                    ),
                ),
            ],
            options={"verbose_name": "action count", "verbose_name_plural": "action count"},
            bases=("triggers.condition",),
        ),
        migrations.CreateModel(
            name="ActionFrequencyCondition",
            fields=[
                _condition_ptr(),
                (
                    "limit",
                    models.DurationField(
                        default=dt.timedelta(days=30),
                        help_text="Minimal period of time that should run out before the next action can be triggered.",
                        verbose_name="action frequency limit",
                    ),
                ),
            ],
            options={"verbose_name": "action frequency", "verbose_name_plural": "action frequency"},
            bases=("triggers.condition",),
        ),
    ]
