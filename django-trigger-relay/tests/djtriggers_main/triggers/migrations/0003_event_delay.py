from __future__ import annotations

import datetime as dt

from django.db import migrations
from django.db import models


class Migration(migrations.Migration):
    dependencies = [("triggers", "0002_action_limit_conditions")]

    operations = [
        migrations.AddField(
            model_name="event",
            name="delay",
            field=models.DurationField(
                blank=True,
                default=dt.timedelta(0),
                help_text="Delay from the moment when the event actually happened until it should be handled.",
                verbose_name="delay",
            ),
        ),
    ]
