"""Adopting dj-triggers' firings still waiting in Celery (guarantees §2.5).

Three parts:

- :class:`CeleryTaskClaim` (defined in :mod:`trigger_relay.claims`): one row per
  ``handle_event`` task id, saying who performs that firing: ``temporal`` (adopted: an
  outbox row was written for it) or ``celery`` (a Celery worker started it). The primary
  key makes the two claims mutually exclusive: whoever inserts first wins, the other sees
  its row (PostgreSQL makes a concurrent insert of the same key wait for the first
  transaction, then conflict).
- :func:`install_celery_guard`: wraps the ``run`` of dj-triggers' ``handle_event`` task in
  Celery workers. Before dj-triggers' body, the wrapper claims the task id for Celery (one
  committed insert); if the task was adopted, it logs one line and returns without
  performing anything. Celery signal receivers cannot do this (the dispatcher logs and
  swallows their exceptions), hence a wrapper.
- :func:`find_tasks` / :func:`adopt`: read the waiting ``handle_event`` messages from the
  broker (kombu's Redis transport: the queue's lists and the ``unacked`` hash of messages
  that workers hold) and write, per task, the outbox row (due at the task's ETA, with its
  context) and the ``temporal`` claim in one transaction.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import logging
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from django.db import IntegrityError
from django.db import ProgrammingError
from django.db import connections
from django.db import router
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from trigger_relay.claims import CeleryTaskClaim
from trigger_relay.models import OutboxRow

logger = logging.getLogger("trigger_relay")

#: dj-triggers' Celery task.
HANDLE_EVENT = "triggers.tasks.handle_event"
#: Set on the wrapper, so that installing twice wraps once.
_GUARD_MARK = "__trigger_relay_celery_guard__"


# -- the guard, in Celery workers ---------------------------------------------------------


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


# -- finding the waiting tasks ----------------------------------------------------------


class UnsupportedBroker(Exception):
    pass


@dataclass
class WaitingTask:
    """One ``handle_event`` message found in the broker."""

    task_id: str
    #: ``queue <name>`` or ``held by a worker (unacked)``.
    where: str
    event_id: Any = None
    user_pk: Any = None
    context: dict[str, Any] = field(default_factory=dict)
    eta: dt.datetime | None = None
    expires: dt.datetime | None = None
    #: Why it cannot be read (then the other fields are unset).
    problem: str = ""


def _parse_time(value: Any, tz: Any) -> dt.datetime | None:
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(str(value))
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, tz)
    return parsed


def decode_message(raw: bytes | str, where: str, *, tz: Any) -> WaitingTask | None:
    """A kombu Redis message (JSON envelope, Celery message protocol 2); None if it is not
    a ``handle_event`` task."""
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    headers = message.get("headers") or {}
    if headers.get("task") != HANDLE_EVENT:
        return None
    task = WaitingTask(task_id=str(headers.get("id")), where=where)
    if message.get("content-type") != "application/json":
        task.problem = f"content type {message.get('content-type')!r} (only JSON is read)"
        return task
    try:
        body = message["body"]
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _embed = json.loads(body)
        task.event_id, task.user_pk = args
        task.context = dict(kwargs)
        task.eta = _parse_time(headers.get("eta"), tz)
        task.expires = _parse_time(headers.get("expires"), tz)
    except (KeyError, TypeError, ValueError) as exc:
        task.problem = f"unreadable message ({type(exc).__name__}: {exc})"
    return task


def celery_app() -> Any:
    """The Celery app that dj-triggers' ``handle_event`` is bound to."""
    from triggers.tasks import handle_event

    return handle_event.app


def find_tasks(app: Any = None, queues: Iterable[str] = ()) -> Iterator[WaitingTask]:
    """Every ``handle_event`` message waiting in the broker: in ``queues`` (default: the
    queue ``handle_event`` is routed to), oldest first, and those of these queues held
    unacknowledged by workers (ETA/countdown tasks, prefetched ones), once per task id.

    Only kombu's Redis transport is read (its queue lists and ``unacked`` hash): other
    brokers raise :class:`UnsupportedBroker`.
    """
    app = app or celery_app()
    with app.connection_for_read() as connection:
        if connection.transport.driver_type != "redis":
            raise UnsupportedBroker(
                f"the broker is {connection.transport.driver_type!r}; only Redis is supported "
                "(see 'Adopting firings waiting in Celery' in the add-on's README)"
            )
        channel = connection.default_channel
        client = channel.client
        names = list(queues) or [app.amqp.router.route({}, HANDLE_EVENT)["queue"].name]
        tz = app.timezone
        seen: set[str] = set()
        for name in names:
            for priority in channel.priority_steps:
                key = channel._q_for_pri(name, priority)
                # kombu LPUSHes and BRPOPs: the oldest message is last.
                for raw in reversed(client.lrange(key, 0, -1)):
                    task = decode_message(raw, f"queue {name}", tz=tz)
                    if task is not None and task.task_id not in seen:
                        seen.add(task.task_id)
                        yield task
        # The unacked hash is shared by every queue of the Redis database: only messages
        # delivered from the queues read above count.
        routing_keys = set(names) | {
            app.amqp.queues[name].routing_key for name in names if name in app.amqp.queues
        }
        for raw in client.hvals(channel.unacked_key):
            try:
                message, _exchange, routing_key = json.loads(raw)
            except (TypeError, ValueError):
                continue
            if routing_key not in routing_keys:
                continue
            task = decode_message(json.dumps(message), "held by a worker (unacked)", tz=tz)
            if task is not None and task.task_id not in seen:
                seen.add(task.task_id)
                yield task


# -- adopting ---------------------------------------------------------------------------

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
