"""Adopting dj-triggers' firings still waiting in Celery (guarantees §2.5).

For each waiting task found in the broker (:mod:`trigger_relay.celery.broker`),
:func:`adopt` writes the outbox row (due at the task's ETA, with its context) and the
``temporal`` :class:`~trigger_relay.models.CeleryTaskClaim` in one transaction. The claim's
primary key makes the two owners mutually exclusive: whoever inserts first wins, the other
sees its row (PostgreSQL makes a concurrent insert of the same key wait for the first
transaction, then conflict); Celery workers claim for Celery first
(:mod:`trigger_relay.celery.guard`).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import IntegrityError
from django.db import router
from django.db import transaction
from django.db.models.functions import Now

from trigger_relay.celery.broker import WaitingTask
from trigger_relay.models import CeleryTaskClaim
from trigger_relay.models import OutboxRow

ADOPTED = "adopted"
ALREADY_ADOPTED = "already adopted"
STARTED_IN_CELERY = "already started by a Celery worker"


def adopt(task: WaitingTask, trigger_id: int) -> tuple[str, int | None]:
    """Write the outbox row and the ``temporal`` claim of ``task`` in one transaction.

    Returns (:data:`ADOPTED`, the row's id), or (:data:`ALREADY_ADOPTED` or
    :data:`STARTED_IN_CELERY`, the adopted row's id or None) when the task id is claimed
    already: the claim is inserted first, so the transaction writes both rows or neither.
    """
    using = router.db_for_write(OutboxRow)
    try:
        with transaction.atomic(using=using):
            claim = CeleryTaskClaim.objects.using(using).create(
                task_id=task.task_id, owner=CeleryTaskClaim.Owner.TEMPORAL
            )
            row = OutboxRow(
                event_id=task.event_id,
                trigger_id=trigger_id,
                user_pk=str(task.user_pk),
                context=dict(task.context),
                created_at=Now(),
                # The task's own due time; a task without ETA was due when it was sent.
                due_at=task.eta or Now(),
            )
            row.save(force_insert=True, using=using)
            claim.outbox_id = row.pk
            claim.save(update_fields=["outbox_id"], using=using)
    except IntegrityError:
        existing = CeleryTaskClaim.objects.using(using).filter(task_id=task.task_id).first()
        if existing is None:
            raise
        if existing.owner == CeleryTaskClaim.Owner.TEMPORAL:
            return ALREADY_ADOPTED, existing.outbox_id
        return STARTED_IN_CELERY, None
    return ADOPTED, row.pk


def existing_claims(task_ids: Iterable[str]) -> dict[str, str]:
    """The owner of each of ``task_ids`` that is claimed already."""
    return dict(
        CeleryTaskClaim.objects.filter(task_id__in=list(task_ids)).values_list("task_id", "owner")
    )
