"""The action ledger (guarantees §3.4): which actions of an outbox row have completed.

Owned by ``sql/schema/0002_action_ledger.sql``; mapped here unmanaged. An entry is written
in the same transaction as the action's own database writes, so it exists exactly when the
action's work committed.
"""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _

from trigger_relay.compat import HAS_COMPOSITE_PRIMARY_KEY
from trigger_relay.compat import database_default


class LedgerEntry(models.Model):
    """One completed action of an outbox row. The table's key is (outbox_id, action_id).

    Django 5.2 maps that key (``CompositePrimaryKey``). Older versions need a single-column
    primary key: ``idempotency_key`` stands in for it, being made of exactly the two key
    columns (``idempotency_key(outbox_id, action_id)``), so that an entry's ``save()`` or
    ``delete()`` still touches that entry alone. The add-on itself only inserts entries and
    reads them by ``outbox_id``.
    """

    if HAS_COMPOSITE_PRIMARY_KEY:
        pk = models.CompositePrimaryKey("outbox_id", "action_id")
    outbox = models.ForeignKey(
        "trigger_relay.OutboxRow",
        on_delete=models.DO_NOTHING,
        db_column="outbox_id",
        related_name="ledger_entries",
    )
    action_id = models.BigIntegerField(_("action id"))
    generation = models.IntegerField(_("generation"))
    idempotency_key = models.TextField(
        _("idempotency key"), primary_key=not HAS_COMPOSITE_PRIMARY_KEY
    )
    performed_at = models.DateTimeField(_("performed at"), **database_default(Now()))

    class Meta:
        managed = False
        db_table = "trigger_relay_action_ledger"
        verbose_name = _("ledger entry")
        verbose_name_plural = _("ledger entries")

    def __str__(self) -> str:
        return f"outbox row {self.outbox_id}, action {self.action_id}"


def idempotency_key(outbox_id: int, action_id: int) -> str:
    """Stable across retries, crashes and replays of the same outbox row."""
    return f"trigger-relay:{outbox_id}:{action_id}"
