"""Who performs the firing of each of dj-triggers' Celery tasks (guarantees §2.5): the model
behind :mod:`trigger_relay.adoption`, registered by :mod:`trigger_relay.models`.

One row per ``handle_event`` task id, saying who performs that firing: ``temporal``
(adopted: an outbox row was written for it) or ``celery`` (a Celery worker started it). The
primary key makes the two claims mutually exclusive: whoever inserts first wins, the other
sees its row (PostgreSQL makes a concurrent insert of the same key wait for the first
transaction, then conflict).
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


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
