"""Firings recorded outside the site's transaction (guarantees §2.2).

An outbox row commits with the site's data only if ``Event.fire()`` runs inside the
transaction of that data. dj-triggers' own README recommends
``transaction.on_commit(lambda: event.fire(...))``, which on Celery avoids a task that reads
uncommitted rows; with the add-on it writes the outbox row in autocommit *after* the commit,
and a process that dies in between loses the firing without a trace. Management commands
and cron jobs that call ``fire()`` without ``transaction.atomic()`` do the same.

:func:`check_in_transaction` is called before a Temporal-routed firing's row is written. On
a connection in autocommit outside any ``atomic`` block it warns on the ``trigger_relay``
logger once per call site (the code that called ``Event.fire()``), raises, or does nothing,
as ``TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC`` says.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass
from functools import cache
from types import FrameType
from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.transaction import TransactionManagementError

from trigger_relay import conf

if TYPE_CHECKING:
    from triggers.models import Event

logger = logging.getLogger("trigger_relay")


class FiringOutsideTransaction(TransactionManagementError):
    """A Temporal-routed firing outside ``transaction.atomic()`` while
    ``TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC`` is ``"error"``. Nothing was written."""


@dataclass(frozen=True)
class CallSite:
    """Where ``Event.fire()`` was called from."""

    filename: str
    lineno: int
    function: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno} (in {self.function})"


_seen_lock = threading.Lock()
#: Call sites already warned about, for the life of the process.
_seen: set[tuple[str, int]] = set()


def forget_call_sites() -> None:
    """Warn again for call sites already warned about (for tests)."""
    with _seen_lock:
        _seen.clear()


def _first_time(site: CallSite) -> bool:
    key = (site.filename, site.lineno)
    with _seen_lock:
        if key in _seen:
            return False
        _seen.add(key)
        return True


def in_transaction(using: str) -> bool:
    """Whether a write on ``using`` now belongs to a transaction the caller controls: an
    ``atomic`` block (``ATOMIC_REQUESTS`` makes each request one; Django's ``TestCase``
    wraps each test in one), or a connection the site took out of autocommit itself."""
    connection = connections[using]
    return connection.in_atomic_block or not connection.get_autocommit()


def check_in_transaction(event: Event, using: str) -> None:
    """Warn (once per call site), raise, or pass if a firing of ``event`` would be written
    on ``using`` outside a transaction, as ``TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC`` says.

    Raises ``ImproperlyConfigured`` for a malformed setting (whether or not in a
    transaction, as a malformed route does) and :class:`FiringOutsideTransaction` under
    ``"error"``, both before anything is written.
    """
    try:
        mode = conf.fire_outside_atomic()
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from exc
    if mode == conf.OUTSIDE_ATOMIC_IGNORE or in_transaction(using):
        return
    what = (
        f"a Temporal-routed firing of {type(event).__name__} {event.pk} "
        f"(trigger {event.trigger_id})"
    )
    if mode == conf.OUTSIDE_ATOMIC_ERROR:
        raise FiringOutsideTransaction(
            f"trigger_relay: {what} was fired outside a transaction (database {using!r} is "
            f"in autocommit), called from {find_call_site()}, and "
            f"{conf.FIRE_OUTSIDE_ATOMIC} is 'error'; nothing was recorded. Call Event.fire() "
            "inside transaction.atomic(), with the writes the firing belongs to, not in "
            "transaction.on_commit()."
        )
    site = find_call_site()
    if _first_time(site):
        logger.warning(
            "trigger_relay: %s was recorded outside a transaction (database %r is in "
            "autocommit), called from %s. Its outbox row is not part of the site's "
            "transaction: a crash between the site's commit and this write loses the firing "
            "unnoticed. Call Event.fire() inside transaction.atomic(), with the writes it "
            "belongs to, not in transaction.on_commit(). Logged once per call site; %s = "
            "'error' refuses such firings, 'ignore' silences this.",
            what,
            using,
            site,
            conf.FIRE_OUTSIDE_ATOMIC,
        )


@cache
def _package_dirs() -> tuple[str, ...]:
    import django
    import triggers

    import trigger_relay

    return tuple(
        os.path.dirname(os.path.abspath(module.__file__ or "")) + os.sep
        for module in (django, triggers, trigger_relay)
    )


def _is_event_fire(frame: FrameType) -> bool:
    """A site's own override of ``Event.fire``/``fire_single`` (calling ``super()``)."""
    if frame.f_code.co_name not in ("fire", "fire_single"):
        return False
    from triggers.models import Event

    return isinstance(frame.f_locals.get("self"), Event)


def find_call_site() -> CallSite:
    """The innermost frame of the stack outside Django, dj-triggers and the add-on (and
    outside a site's override of ``Event.fire``): the code that called ``Event.fire()``."""
    skipped = _package_dirs()
    frame: FrameType | None = sys._getframe(1)
    fallback: FrameType | None = None
    while frame is not None:
        filename = frame.f_code.co_filename
        if not os.path.abspath(filename).startswith(skipped):
            if fallback is None:
                fallback = frame
            if not _is_event_fire(frame):
                break
        frame = frame.f_back
    found = frame or fallback
    if found is None:  # pragma: no cover - fire() called from Django's own code only
        return CallSite("<unknown>", 0, "<unknown>")
    return CallSite(found.f_code.co_filename, found.f_lineno, found.f_code.co_name)
