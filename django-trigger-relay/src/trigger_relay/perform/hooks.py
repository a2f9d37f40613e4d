"""dj-triggers' own methods, kept in force when the relay performs a firing (guarantees §3.2).

On Celery, dj-triggers runs ``event.handle(user_pk, **context)``, which calls
``trigger.filter_user_queryset``, ``event.get_user_context`` and ``trigger.on_event``, and
``on_event`` takes ``Activity.lock`` and performs the actions. Sites override any of these on
their polymorphic Trigger, Event and Condition subclasses, and such an override usually
ends in ``super()``. The relay performs a firing through the same calls, so every override
runs as dj-triggers would run it; what the overrides reach at the bottom, dj-triggers' own
implementations, is where the relay's version takes over:

- ``Event.handle``: the user filter, ``get_user_context``, then ``trigger.on_event``, each
  outcome recorded for the firing (``user_filtered_out`` ...);
- ``Trigger.on_event``: conditions, then ``Activity.lock`` with the ledger, the re-check
  under the lock and each action at most once (guarantees §3.3, §3.4);
- ``ActionCountCondition`` and ``ActionFrequencyCondition``'s ``filter_user_queryset``:
  the cap judged on this user's Activity of this trigger alone (upstream's query judges it
  across the user's Activities of every trigger).

:func:`install` replaces those methods on dj-triggers' classes once, in the process that
performs firings. The replacements call the originals unchanged unless the calling thread
is performing a firing (:func:`performing`) and the object is that firing's own: a Celery
worker in the same process, the admin or a shell see dj-triggers as it is.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any
from typing import Protocol

#: Attribute of a replacement that holds the method it replaced.
ORIGINAL = "__trigger_relay_original__"


class Firing(Protocol):
    """What :mod:`trigger_relay.perform.core` provides for the firing being performed."""

    def owns_event(self, event: Any) -> bool: ...
    def owns_trigger_id(self, trigger_id: Any) -> bool: ...
    def handle(self, event: Any, user_pk: Any, context: dict[str, Any]) -> None: ...
    def on_event(self, trigger: Any, user: Any, context: dict[str, Any]) -> None: ...
    def cap_allows(self, condition: Any, cap: type) -> bool: ...


_current: ContextVar[Firing | None] = ContextVar("trigger_relay_firing", default=None)
_install_lock = threading.Lock()


@contextlib.contextmanager
def performing(firing: Firing) -> Iterator[None]:
    """Within the block, this thread's calls of dj-triggers' base methods on ``firing``'s
    event, trigger and conditions run the relay's version."""
    token = _current.set(firing)
    try:
        yield
    finally:
        _current.reset(token)


def is_overridden(instance: Any, name: str, base: type) -> bool:
    """Whether ``type(instance)`` defines ``name`` other than dj-triggers' ``base`` does."""
    implementation = getattr(type(instance), name)
    original = getattr(base, name)
    return implementation is not original and getattr(implementation, ORIGINAL, None) is None


def install() -> None:
    """Replace dj-triggers' base methods (idempotent, thread-safe)."""
    from triggers import models

    with _install_lock:
        _replace(models.Event, "handle", _event_handle)
        _replace(models.Trigger, "on_event", _trigger_on_event)
        for name in ("ActionCountCondition", "ActionFrequencyCondition"):
            cap = getattr(models, name, None)
            if cap is not None:
                relay_version = functools.partial(_cap_filter_user_queryset, cap)
                _replace(cap, "filter_user_queryset", relay_version)


def _replace(cls: type, name: str, relay_version: Callable[..., Any]) -> None:
    original = cls.__dict__[name]
    if getattr(original, ORIGINAL, None) is not None:
        return

    # Positional-only parameters here and below: a firing's context arrives as keyword
    # arguments of ``handle``, and a context key may be any name ("firing", "original").
    @functools.wraps(original)
    def replacement(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        firing = _current.get()
        if firing is None:
            return original(self, *args, **kwargs)
        return relay_version(firing, original, self, *args, **kwargs)

    setattr(replacement, ORIGINAL, original)
    setattr(cls, name, replacement)


def _event_handle(
    firing: Firing, original: Callable[..., Any], event: Any, user_pk: Any, /, **context: Any
) -> None:
    if not firing.owns_event(event):
        return original(event, user_pk, **context)
    firing.handle(event, user_pk, context)
    return None


def _trigger_on_event(
    firing: Firing, original: Callable[..., Any], trigger: Any, user: Any, context: Any
) -> None:
    if not firing.owns_trigger_id(trigger.pk):
        return original(trigger, user, context)
    firing.on_event(trigger, user, context)
    return None


def _cap_filter_user_queryset(
    cap: type[Any],
    firing: Firing,
    original: Callable[..., Any],
    condition: Any,
    user_queryset: Any,
) -> Any:
    if not firing.owns_trigger_id(condition.trigger_id):
        return original(condition, user_queryset)
    # Upstream's own first step: ``super().filter_user_queryset`` (Condition's, unchanged).
    user_queryset = super(cap, condition).filter_user_queryset(user_queryset)
    return user_queryset if firing.cap_allows(condition, cap) else user_queryset.none()
