"""The outbox table, owned by ``sql/schema/`` (guarantees §1) and mapped here unmanaged."""

from __future__ import annotations

from django.contrib.postgres.functions import RandomUUID
from django.db import models
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _

from trigger_relay.compat import database_default
from trigger_relay.states import State


class OutboxRow(models.Model):
    """One firing of a Temporal-routed trigger (guarantees §1.2).

    The table is created by ``sql/schema/*.sql`` (through migration 0001), not by Django:
    ``managed = False``. ``database_default`` (``db_default`` on Django >= 5.0) mirrors the
    SQL defaults so that the ORM leaves those columns to the database on insert.
    """

    #: The row's states (:class:`trigger_relay.states.State`), as ``OutboxRow.State`` too.
    State = State

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(_("created at"), **database_default(Now()))
    event_id = models.BigIntegerField(_("event id"))
    trigger_id = models.BigIntegerField(_("trigger id"))
    user_pk = models.TextField(_("user pk"))
    context = models.JSONField(_("context"), **database_default({}))
    due_at = models.DateTimeField(_("due at"))
    state = models.TextField(_("state"), choices=State.choices, **database_default(State.PENDING))
    skip_reason = models.TextField(_("skip reason"), null=True, blank=True)
    attempts = models.IntegerField(_("attempts"), **database_default(0))
    last_error = models.TextField(_("last error"), null=True, blank=True)
    claimed_by = models.TextField(_("claimed by"), null=True, blank=True)
    claimed_until = models.DateTimeField(_("claimed until"), null=True, blank=True)
    dispatched_at = models.DateTimeField(_("dispatched at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    replayed_at = models.DateTimeField(_("replayed at"), null=True, blank=True)
    workflow_id = models.TextField(_("workflow id"), null=True, blank=True)
    run_id = models.TextField(_("run id"), null=True, blank=True)
    generation = models.IntegerField(_("generation"), **database_default(0))
    # Schema version 3: one firing's identity for good, unlike the id, which a restore or
    # `TRUNCATE ... RESTART IDENTITY` hands out again. NULL on rows older than the
    # migration. database_default leaves it to gen_random_uuid() on insert (a plain field would
    # make the ORM write NULL explicitly).
    firing_uuid = models.UUIDField(
        _("firing uuid"), null=True, editable=False, **database_default(RandomUUID())
    )

    class Meta:
        managed = False
        db_table = "trigger_relay_outbox"
        ordering = ("id",)
        verbose_name = _("outbox row")
        verbose_name_plural = _("outbox rows")
        # The context (whatever the site passed to Event.fire()) and the last error (the
        # site's exception messages) may hold personal data or secrets: the admin shows them
        # only with this permission, not with the plain view permission (admin.py).
        permissions = [("view_outbox_payload", "Can view outbox row context and last error")]

    def __str__(self) -> str:
        return f"outbox row {self.pk} ({self.state})"


# The ledger, the routes and the Celery task claims live in their own modules (one job per
# module), none of which imports this one; importing them here registers them.
from trigger_relay.ledger import LedgerEntry  # noqa: E402
from trigger_relay.routes import TriggerRoute  # noqa: E402

# isort: split
# Registered last, as when it was defined in trigger_relay.adoption: the app's models keep
# their order (that of their content types and permissions).
from trigger_relay.claims import CeleryTaskClaim  # noqa: E402

__all__ = ["CeleryTaskClaim", "LedgerEntry", "OutboxRow", "TriggerRoute"]
