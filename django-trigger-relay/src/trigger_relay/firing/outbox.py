"""Writing firings to the outbox (guarantees §2.2).

:func:`record_if_routed_to_temporal` is the request path: the route and, on the Temporal
route, the row, in one statement (``sql/queries/record_firing.sql``). :func:`record_firing`
writes a row whose route is already known, in its own statement.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db import router

from trigger_relay import conf
from trigger_relay import queries
from trigger_relay.firing.atomicity import check_in_transaction
from trigger_relay.firing.atomicity import in_transaction
from trigger_relay.firing.context import check_context
from trigger_relay.firing.context import check_context_size
from trigger_relay.firing.routes import resolve_from_settings
from trigger_relay.firing.routes import route_for
from trigger_relay.firing.routes import settings_have_names
from trigger_relay.models import OutboxRow

if TYPE_CHECKING:
    from triggers.models import Event


def record_if_routed_to_temporal(event: Event, user_pk: object, context: Mapping[str, Any]) -> bool:
    """Write ``event``'s firing for ``user_pk`` to the outbox if its trigger routes to
    Temporal now (guarantees §2.3): True if it did, False if the firing goes to Celery.

    Inside the site's transaction, with a context of JSON values (the common case), that is one
    statement: the route lookup and the INSERT together (the request pays one round trip, not two:
    docs/performance.md). Otherwise the route is looked up first, because what follows depends on it
    and must happen before anything is written: the outside-a-transaction warning or refusal, the
    ``TypeError`` for a context that is not JSON and the ``ContextTooLarge`` for one over
    ``TRIGGER_RELAY_MAX_CONTEXT_BYTES``, concern Temporal-routed firings only. Either way the result
    and the errors are those of :func:`trigger_relay.firing.routes.route_for` followed by
    :func:`record_firing`.
    """
    using = router.db_for_write(OutboxRow)
    if not _one_statement_serves(context, using):
        return _record_by_route(event, user_pk, context)

    try:
        name = event.trigger.name if settings_have_names() else None
        from_settings: str | None = resolve_from_settings(event.trigger_id, name).route
    except ImproperlyConfigured:
        from_settings = None  # raised below, if no stored route makes the settings moot
    delay: dt.timedelta = getattr(event, "delay", None) or dt.timedelta()
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(
            queries.statement("record_firing"),
            queries.parameters(
                [
                    event.pk,
                    event.trigger_id,
                    str(user_pk),
                    OutboxRow._meta.get_field("context").get_db_prep_save(
                        dict(context), connection
                    ),
                    delay,
                    from_settings,
                ]
            ),
        )
        route, row_id = cursor.fetchone()
    if row_id is not None:
        return True
    if route == conf.CELERY:
        return False
    # Nothing written and no valid route: a malformed stored route or setting. route_for()
    # raises the error that names it.
    return _record_by_route(event, user_pk, context)


def _one_statement_serves(context: Mapping[str, Any], using: str) -> bool:
    """Whether none of the checks that a Temporal-routed firing must pass before it is
    written can fail: then the route need not be known first."""
    try:
        check_context(context)
        check_context_size(context, limit=conf.max_context_bytes())
        conf.fire_outside_atomic()
    except (TypeError, ValueError):
        return False
    return in_transaction(using)


def _record_by_route(event: Event, user_pk: object, context: Mapping[str, Any]) -> bool:
    if route_for(event) != conf.TEMPORAL:
        return False
    record_firing(event, user_pk, context)
    return True


def record_firing(event: Event, user_pk: object, context: Mapping[str, Any]) -> OutboxRow:
    """Insert one pending outbox row for ``event`` fired for ``user_pk``.

    The row is written on the connection that the router picks for ``OutboxRow`` (the
    default database unless a router says otherwise), inside whatever transaction is open
    there: it commits or rolls back with the caller's own writes. ``created_at`` is the
    database's statement time and ``due_at`` is ``created_at`` plus the event's delay, both
    from the database clock, which the relay compares them with.

    Raises ``TypeError`` naming the offending key, before touching the database, if the
    context holds anything but JSON values, and
    :class:`~trigger_relay.firing.context.ContextTooLarge` naming its size and the setting if it
    takes more than ``TRIGGER_RELAY_MAX_CONTEXT_BYTES`` as JSON (README, "Context limits"):
    the daemon holds a batch's contexts in memory, and fails a row over its own limit.

    Outside a transaction on that connection (``fire()`` in ``transaction.on_commit``, or in
    autocommit) the row would not commit with the caller's writes: that is logged as a
    warning once per call site, refused with ``FiringOutsideTransaction`` before anything
    is written, or let pass, as ``TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC`` says (see
    :mod:`trigger_relay.firing.atomicity`).
    """
    where = f" of {type(event).__name__} {event.pk} (trigger {event.trigger_id})"
    check_context(context, where=where)
    check_context_size(context, limit=conf.max_context_bytes(), where=where)
    using = router.db_for_write(OutboxRow)
    check_in_transaction(event, using)
    delay: dt.timedelta = getattr(event, "delay", None) or dt.timedelta()
    connection = connections[using]
    context = dict(context)
    # One INSERT ... RETURNING, not a model save(): this runs in the site's request, once per
    # firing, where the save's signals and field preparation (and on Django 4.2 a second
    # statement, to read back the columns the database fills in) cost more than the
    # statement itself. The context is prepared by its own field: stored as the ORM stores it.
    with connection.cursor() as cursor:
        cursor.execute(
            _insert_sql(using),
            [
                event.pk,
                event.trigger_id,
                str(user_pk),
                OutboxRow._meta.get_field("context").get_db_prep_save(context, connection),
                # django-stubs' parameter types leave out timedelta, which the PostgreSQL
                # drivers send as an interval (as Django's DurationField does).
                delay,  # type: ignore[list-item]
            ],
        )
        returned = cursor.fetchone()
    # The other columns as stored (created_at and due_at from the statement's timestamp), the
    # context as given: what save() leaves on the instance too.
    values = list(returned)
    values.insert(_context_index(), context)
    return OutboxRow.from_db(using, _field_names(), values)


@cache
def _field_names() -> list[str]:
    return [field.attname for field in OutboxRow._meta.concrete_fields]


@cache
def _context_index() -> int:
    return _field_names().index("context")


@cache
def _insert_sql(using: str) -> str:
    """``created_at`` and ``due_at`` from the database clock, which the relay compares them
    with: the statement's timestamp, as Django's ``Now()``, and the same plus the delay. Every
    other column gets its default from ``sql/schema/`` (the firing uuid above all). Returns
    every column but the context (which the caller has), in the model's order. Built once
    per database: the model and the quoting do not change."""
    quote = connections[using].ops.quote_name
    meta = OutboxRow._meta
    returned = [
        field.column
        for field in meta.concrete_fields
        # A concrete field has its column; only the others have None.
        if field.column is not None and field.attname != "context"
    ]
    return (
        f"INSERT INTO {quote(meta.db_table)}"
        " (event_id, trigger_id, user_pk, context, created_at, due_at)"
        " VALUES (%s, %s, %s, %s, STATEMENT_TIMESTAMP(), STATEMENT_TIMESTAMP() + %s::interval)"
        f" RETURNING {', '.join(map(quote, returned))}"
    )
