"""Finding dj-triggers' firings still waiting in Celery (guarantees §2.5): the
``handle_event`` messages in the broker (kombu's Redis transport: the queue's lists and the
``unacked`` hash of messages that workers hold).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from django.utils import timezone

#: dj-triggers' Celery task.
HANDLE_EVENT = "triggers.tasks.handle_event"


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
