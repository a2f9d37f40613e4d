"""The ``Event.fired`` receiver that replaces dj-triggers' own (guarantees §2.2, §2.3).

dj-triggers connects ``triggers.tasks.on_event_fired`` to ``Event.fired`` (with no
``dispatch_uid``) when ``triggers.tasks`` is imported; that receiver enqueues the Celery task
``handle_event``. :func:`install` disconnects it and connects :func:`on_event_fired`, which
sends each firing one way only: to the outbox (Temporal) or to that very same dj-triggers
function (Celery), so a Celery-routed firing behaves exactly as without the add-on.

A site may have connected dj-triggers' receiver more than once (a ``dispatch_uid``, a
sender, a ``functools.wraps`` decorator): :func:`install` disconnects every such
registration, not only dj-triggers' own (see :mod:`trigger_relay.firing.takeover`). Receivers that
merely call into ``triggers.tasks`` are left to the system check (``trigger_relay.E009``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any

from django.dispatch import Signal

from trigger_relay.firing import takeover
from trigger_relay.firing.outbox import record_if_routed_to_temporal

if TYPE_CHECKING:
    from triggers.models import Event

logger = logging.getLogger("trigger_relay")

DISPATCH_UID = "trigger_relay.receivers.on_event_fired"

OriginalReceiver = Callable[..., Any]


@dataclass
class _Installation:
    #: dj-triggers' ``triggers.tasks.on_event_fired``; ``None`` if it could not be imported.
    original: OriginalReceiver | None = None
    #: Why the original could not be imported.
    import_error: str = ""
    #: Whether the original (or a wrapper of it) was connected to ``Event.fired`` when we
    #: took over.
    original_was_connected: bool = False
    installed: bool = False
    #: The registrations :func:`install` disconnected, described (receiver, dispatch_uid,
    #: sender), in the order found.
    disconnected: list[str] = field(default_factory=list)


installation = _Installation()


def on_event_fired(
    sender: type[Event], signal: Signal, event: Event, user_pk: object, **context: Any
) -> None:
    """Route one firing (one event, one user) to Temporal or to Celery, never both."""
    if record_if_routed_to_temporal(event, user_pk, context):
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
    """Take over ``Event.fired`` from dj-triggers. Idempotent (``ready()`` may run again).

    Every registration of dj-triggers' receiver goes, whatever its ``dispatch_uid`` or
    sender, and so does a ``functools.wraps`` wrapper of it: all of them would enqueue
    ``handle_event`` for Temporal-routed firings too.
    """
    from triggers.models import Event

    try:
        from triggers.tasks import on_event_fired as original
    except ImportError as exc:  # pragma: no cover - depends on the installed dj-triggers
        installation.import_error = f"{type(exc).__name__}: {exc}"
    else:
        installation.original = original
    removed = [
        registration
        for registration in takeover.registrations(Event.fired)
        if takeover.is_dj_triggers_receiver(registration.receiver)
    ]
    if removed:
        takeover.disconnect_registrations(
            Event.fired, {registration.lookup_key for registration in removed}
        )
        installation.original_was_connected = True
        names = takeover.sender_names()
        for registration in removed:
            description = registration.describe(names)
            installation.disconnected.append(description)
            _log_disconnected(registration, description)
    Event.fired.connect(on_event_fired, weak=False, dispatch_uid=DISPATCH_UID)
    installation.installed = True


def _log_disconnected(registration: takeover.Registration, description: str) -> None:
    # dj-triggers' own registration is the expected case: not worth a line at every start.
    # Any other one was made by the site, which should hear that it no longer runs.
    expected = (
        registration.receiver is installation.original
        and registration.dispatch_uid is None
        and registration.for_any_sender
    )
    if expected:
        logger.debug("trigger_relay: disconnected %s from Event.fired", description)
    else:
        logger.warning(
            "trigger_relay: disconnected %s from Event.fired: it runs dj-triggers' Celery "
            "receiver, which would also enqueue Temporal-routed firings. Celery-routed "
            "firings now go to triggers.tasks.on_event_fired itself (a wrapper's own code "
            "no longer runs).",
            description,
        )


def is_connected(signal: Signal, receiver: Callable[..., Any]) -> bool:
    """Whether ``receiver`` is connected to ``signal`` for any sender without a dispatch_uid."""
    receiver_id = takeover.receiver_id(receiver)
    return any(entry[0][0] == receiver_id for entry in signal.receivers)
