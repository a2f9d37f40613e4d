"""Writing firings to the outbox (SPEC §2.2)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any

from django.db import router
from django.db.models import Value
from django.db.models.functions import Now

from trigger_relay.atomicity import check_in_transaction
from trigger_relay.compat import HAS_DB_DEFAULT
from trigger_relay.context import check_context
from trigger_relay.models import OutboxRow

if TYPE_CHECKING:
    from triggers.models import Event


def record_firing(event: Event, user_pk: object, context: Mapping[str, Any]) -> OutboxRow:
    """Insert one pending outbox row for ``event`` fired for ``user_pk``.

    The row is written on the connection that the router picks for ``OutboxRow`` (the
    default database unless a router says otherwise), inside whatever transaction is open
    there: it commits or rolls back with the caller's own writes. ``created_at`` is the
    database's statement time and ``due_at`` is ``created_at`` plus the event's delay, both
    from the database clock, which the relay compares them with.

    Raises ``TypeError`` naming the offending key, before touching the database, if the
    context holds anything but JSON values.

    Outside a transaction on that connection (``fire()`` in ``transaction.on_commit``, or in
    autocommit) the row would not commit with the caller's writes: that is logged as a
    warning once per call site, refused with ``FiringOutsideTransaction`` before anything
    is written, or let pass, as ``TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC`` says (see
    :mod:`trigger_relay.atomicity`).
    """
    check_context(
        context, where=f" of {type(event).__name__} {event.pk} (trigger {event.trigger_id})"
    )
    using = router.db_for_write(OutboxRow)
    check_in_transaction(event, using)
    delay: dt.timedelta = getattr(event, "delay", None) or dt.timedelta()
    now = Now()
    row = OutboxRow(
        event_id=event.pk,
        trigger_id=event.trigger_id,
        user_pk=str(user_pk),
        context=dict(context),
        created_at=now,
        due_at=now + Value(delay),
    )
    row.save(force_insert=True, using=using)
    if not HAS_DB_DEFAULT:
        # Django 4.2 left the columns with SQL defaults to the database too, but reads
        # nothing back but the id: the other attributes still hold SQL expressions.
        row.refresh_from_db(using=using)
        return row
    # created_at comes back from INSERT ... RETURNING (it has a database default); due_at
    # was computed from the same statement timestamp, so it is exactly this:
    row.due_at = row.created_at + delay
    return row
