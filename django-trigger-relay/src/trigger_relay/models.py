"""Every model of the add-on: the outbox and the action ledger, owned by ``sql/schema/``
(guarantees §1, §3.4) and mapped here unmanaged; each trigger's route (guarantees §2.3); and
who performs each of dj-triggers' Celery tasks (guarantees §2.5). Their order is that of
their content types and permissions."""

from __future__ import annotations

from django.contrib.postgres.functions import RandomUUID
from django.db import models
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _

from trigger_relay import conf
from trigger_relay.compat import HAS_COMPOSITE_PRIMARY_KEY
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


class TriggerRoute(models.Model):
    """The route of one trigger, by pk: renaming the trigger keeps it."""

    class Route(models.TextChoices):
        TEMPORAL = conf.TEMPORAL, _("Temporal")
        CELERY = conf.CELERY, _("Celery")

    trigger = models.OneToOneField(
        "triggers.Trigger",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="relay_route",
        verbose_name=_("trigger"),
    )
    route = models.CharField(_("route"), max_length=16, choices=Route.choices)
    changed_at = models.DateTimeField(_("changed at"), auto_now=True)
    #: Who set it: ``admin: <username>``, ``manage.py trigger_relay_route``, ``rename``.
    changed_by = models.CharField(_("changed by"), max_length=200, blank=True, default="")

    class Meta:
        db_table = "trigger_relay_route"
        verbose_name = _("trigger route")
        verbose_name_plural = _("trigger routes")

    def __str__(self) -> str:
        return f"trigger {self.trigger_id} → {self.route}"


class CeleryTaskClaim(models.Model):
    """Who performs the firing of one ``handle_event`` task: Temporal or Celery."""

    class Owner(models.TextChoices):
        TEMPORAL = "temporal", _("Temporal (adopted)")
        CELERY = "celery", _("Celery (started by a worker)")

    task_id = models.CharField(_("Celery task id"), max_length=255, primary_key=True)
    owner = models.CharField(_("owner"), max_length=16, choices=Owner.choices)
    #: The outbox row written for an adopted task (``temporal``); NULL for ``celery``.
    outbox_id = models.BigIntegerField(_("outbox row id"), null=True, blank=True)
    claimed_at = models.DateTimeField(_("claimed at"), auto_now_add=True)

    class Meta:
        db_table = "trigger_relay_celery_claim"
        verbose_name = _("Celery task claim")
        verbose_name_plural = _("Celery task claims")

    def __str__(self) -> str:
        return f"Celery task {self.task_id} → {self.owner}"
