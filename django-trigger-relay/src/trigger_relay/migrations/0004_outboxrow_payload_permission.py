"""The permission ``trigger_relay.view_outbox_payload`` ("Can view outbox row context and
last error"), which the admin requires before it shows a row's ``context`` and
``last_error`` (see ``trigger_relay.admin``).

State only: no schema file and no SQL. Django creates the permission after ``migrate``
(``post_migrate``), as for every model's default permissions.
"""

from __future__ import annotations

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("trigger_relay", "0003_firing_uuid")]

    operations = [
        migrations.AlterModelOptions(
            name="outboxrow",
            options={
                "managed": False,
                "ordering": ("id",),
                "permissions": [
                    ("view_outbox_payload", "Can view outbox row context and last error")
                ],
                "verbose_name": "outbox row",
                "verbose_name_plural": "outbox rows",
            },
        ),
    ]
