"""dj-triggers main: several actions per trigger (one-to-one becomes a foreign key)."""

from __future__ import annotations

import django.db.models.deletion
from django.db import migrations
from django.db import models


class Migration(migrations.Migration):
    dependencies = [("triggers", "0003_event_delay")]

    operations = [
        migrations.AlterField(
            model_name="action",
            name="trigger",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="actions",
                related_query_name="action",
                to="triggers.trigger",
                verbose_name="trigger",
            ),
        ),
    ]
