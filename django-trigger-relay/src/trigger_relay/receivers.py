"""The ``Event.fired`` receiver that replaces dj-triggers' own (SPEC §2.2, §2.3).

dj-triggers connects ``triggers.tasks.on_event_fired`` to ``Event.fired`` (with no
``dispatch_uid``) when ``triggers.tasks`` is imported; that receiver enqueues the Celery task
``handle_event``. :func:`install` disconnects it and connects :func:`on_event_fired`, which
sends each firing one way only: to the outbox (Temporal) or to that very same dj-triggers
function (Celery), so a Celery-routed firing behaves exactly as without the add-on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

from django.dispatch import Signal
from django.dispatch.dispatcher import _make_id

from trigger_relay import conf
from trigger_relay.outbox import record_firing
from trigger_relay.routing import route_for

if TYPE_CHECKING:
    from triggers.models import Event

DISPATCH_UID = "trigger_relay.receivers.on_event_fired"

OriginalReceiver = Callable[..., Any]


@dataclass
class _Installation:
    #: dj-triggers' ``triggers.tasks.on_event_fired``; ``None`` if it could not be imported.
    original: OriginalReceiver | None = None
    #: Why the original could not be imported.
    import_error: str = ""
    #: Whether the original was connected to ``Event.fired`` when we took over.
    original_was_connected: bool = False
    installed: bool = False


installation = _Installation()


def on_event_fired(
    sender: type[Event], signal: Signal, event: Event, user_pk: object, **context: Any
) -> None:
    """Route one firing (one event, one user) to Temporal or to Celery, never both."""
    if route_for(event) == conf.TEMPORAL:
        record_firing(event, user_pk, context)
        return
    original = installation.original
    if original is None:
        raise RuntimeError(
            "trigger_relay: this firing is routed to Celery, but dj-triggers' receiver "
            f"triggers.tasks.on_event_fired could not be imported ({installation.import_error}); "
            "run `manage.py check`."
        )
    original(sender=sender, signal=signal, event=event, user_pk=user_pk, **context)


def install() -> None:
    """Take over ``Event.fired`` from dj-triggers. Idempotent (``ready()`` may run again)."""
    from triggers.models import Event

    try:
        from triggers.tasks import on_event_fired as original
    except ImportError as exc:  # pragma: no cover - depends on the installed dj-triggers
        installation.import_error = f"{type(exc).__name__}: {exc}"
    else:
        if Event.fired.disconnect(receiver=original):
            installation.original_was_connected = True
        installation.original = original
    Event.fired.connect(on_event_fired, weak=False, dispatch_uid=DISPATCH_UID)
    installation.installed = True


def is_connected(signal: Signal, receiver: Callable[..., Any]) -> bool:
    """Whether ``receiver`` is connected to ``signal`` for any sender without a dispatch_uid."""
    receiver_id = _make_id(receiver)
    return any(entry[0][0] == receiver_id for entry in signal.receivers)
