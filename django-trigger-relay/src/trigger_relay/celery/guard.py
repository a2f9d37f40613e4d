"""The guard in Celery workers (guarantees §2.5): dj-triggers' ``handle_event`` performs a
firing only if it was not adopted into the outbox.

:func:`install_celery_guard` wraps the ``run`` of dj-triggers' ``handle_event`` task in
Celery workers. Before dj-triggers' body, the wrapper claims the task id for Celery (one
committed insert of a :class:`~trigger_relay.models.CeleryTaskClaim`); if the task was
adopted (:mod:`trigger_relay.celery.adoption`), it logs one line and returns without
performing anything. Celery signal receivers cannot do this (the dispatcher logs and swallows
their exceptions), hence a wrapper.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.db import ProgrammingError
from django.db import connections
from django.db import router
from django.db import transaction

from trigger_relay.celery.broker import HANDLE_EVENT
from trigger_relay.models import CeleryTaskClaim

logger = logging.getLogger("trigger_relay")

#: Set on the wrapper, so that installing twice wraps once.
_GUARD_MARK = "__trigger_relay_celery_guard__"


def claim_for_celery(task_id: str) -> CeleryTaskClaim:
    """Claim ``task_id`` for Celery unless it is claimed already; the claim that holds.

    Committed before dj-triggers' body runs when the worker is in autocommit (as Celery
    workers are): an adoption that comes later sees it and leaves the task to Celery.
    """
    using = router.db_for_write(CeleryTaskClaim)
    with transaction.atomic(using=using):
        CeleryTaskClaim.objects.using(using).bulk_create(
            [CeleryTaskClaim(task_id=task_id, owner=CeleryTaskClaim.Owner.CELERY)],
            ignore_conflicts=True,
        )
        return CeleryTaskClaim.objects.using(using).get(task_id=task_id)


def _claim_unless_unmigrated(task_id: str) -> CeleryTaskClaim | None:
    """:func:`claim_for_celery`, or None when the claims' table does not exist yet (a worker
    of this version started before ``migrate``): nothing can have been adopted then, and
    dj-triggers' task runs as before instead of failing."""
    try:
        return claim_for_celery(task_id)
    except ProgrammingError:
        using = router.db_for_write(CeleryTaskClaim)
        with connections[using].cursor() as cursor:
            tables = connections[using].introspection.table_names(cursor)
        if CeleryTaskClaim._meta.db_table in tables:
            raise
        logger.warning(
            "trigger_relay: table %s is missing (run `manage.py migrate`); Celery task %s[%s] "
            "runs unguarded.",
            CeleryTaskClaim._meta.db_table,
            HANDLE_EVENT,
            task_id,
        )
        return None


def guard(task: Any, run: Callable[..., Any]) -> Callable[..., Any]:
    """``run`` of ``task``, performed only if the task was not adopted by Temporal."""

    @functools.wraps(run)
    def guarded_run(*args: Any, **kwargs: Any) -> Any:
        task_id = getattr(task.request, "id", None)
        if task_id:
            claim = _claim_unless_unmigrated(str(task_id))
            if claim is not None and claim.owner == CeleryTaskClaim.Owner.TEMPORAL:
                logger.warning(
                    "trigger_relay: Celery task %s[%s] was adopted into the outbox (row %s); "
                    "Temporal performs it, Celery does not.",
                    HANDLE_EVENT,
                    task_id,
                    claim.outbox_id,
                )
                return None
        return run(*args, **kwargs)

    setattr(guarded_run, _GUARD_MARK, True)
    return guarded_run


def guard_task(task: Any) -> bool:
    """Wrap ``task.run`` (the task instance of ``handle_event`` of one Celery app);
    False if it was wrapped already."""
    if getattr(task.run, _GUARD_MARK, False):
        return False
    task.run = guard(task, task.run)
    return True


def _on_worker_init(sender: Any = None, **kwargs: Any) -> None:
    app = getattr(sender, "app", None)
    if app is None:
        return
    task = app.tasks.get(HANDLE_EVENT)
    if task is not None:
        guard_task(task)


def install_celery_guard() -> None:
    """From ``AppConfig.ready()``: guard ``handle_event`` in every Celery worker.

    A worker sets Django up (Celery's Django fix-up) before it sends ``worker_init``, and
    builds its task tracers (which take ``task.run``) after it: the wrapper is installed in
    between, for every pool (prefork children inherit it). Without Celery installed there
    is nothing to guard.
    """
    try:
        from celery import signals
    except ImportError:  # pragma: no cover - a Celery-free site
        return
    signals.worker_init.connect(
        _on_worker_init, weak=False, dispatch_uid="trigger_relay.adoption.celery_guard"
    )
