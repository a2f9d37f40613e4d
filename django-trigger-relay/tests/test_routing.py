"""Routing per trigger and by default, decided at each firing (guarantees §2.3).

A Celery-routed firing is observed in the real broker: the run's own Redis queue holds
dj-triggers' ``handle_event`` message. No worker runs here (see test_celery_worker.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.db import transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from tests_support.broker import CeleryQueue
from tests_support.factories import make_trigger
from triggers import tasks
from triggers.models import Event

from trigger_relay.firing import receivers
from trigger_relay.firing.routes import route_for
from trigger_relay.models import OutboxRow
from trigger_relay.models import TriggerRoute

pytestmark = pytest.mark.django_db

HANDLE_EVENT = "triggers.tasks.handle_event"


def outbox_count() -> int:
    return OutboxRow.objects.count()


def celery_tasks(queue: CeleryQueue) -> list[tuple[str, list[Any], dict[str, Any]]]:
    return [(task.name, task.args, task.kwargs) for task in queue.tasks()]


def test_default_route_is_celery_so_installing_changes_nothing(
    user: Any, celery_queue: CeleryQueue
) -> None:
    """guarantees §2.3: with no route set, dj-triggers' Celery task runs exactly as before."""
    event = make_trigger("Unrouted", delay=dt.timedelta(seconds=90))
    assert route_for(event) == "celery"

    event.fire_single(user.pk, task_id=5)

    assert outbox_count() == 0
    (queued,) = celery_queue.tasks()
    assert (queued.name, queued.args, queued.kwargs) == (
        HANDLE_EVENT,
        [event.pk, user.pk],
        {"task_id": 5},
    )
    assert queued.eta is not None  # dj-triggers' countdown=event.delay


@override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal")
def test_default_route_temporal(user: Any, celery_queue: CeleryQueue) -> None:
    """guarantees §2.3: the default route applies to triggers not listed in the routes."""
    event = make_trigger("Unrouted")
    event.fire_single(user.pk, task_id=5)
    assert outbox_count() == 1
    assert celery_tasks(celery_queue) == []


def test_route_by_trigger_name(user: Any, celery_queue: CeleryQueue) -> None:
    """guarantees §2.3: a route per trigger, by name."""
    to_temporal = make_trigger("To Temporal")
    to_celery = make_trigger("To Celery")
    with override_settings(TRIGGER_RELAY_ROUTES={"To Temporal": "temporal", "To Celery": "celery"}):
        to_temporal.fire_single(user.pk, n=1)
        to_celery.fire_single(user.pk, n=2)

    assert list(OutboxRow.objects.values_list("trigger_id", "context")) == [
        (to_temporal.trigger_id, {"n": 1})
    ]
    assert celery_tasks(celery_queue) == [(HANDLE_EVENT, [to_celery.pk, user.pk], {"n": 2})]


def test_route_by_trigger_pk_wins_over_name(user: Any, celery_queue: CeleryQueue) -> None:
    """guarantees §2.3: a route per trigger, by pk; the pk key is the more specific one."""
    event = make_trigger("Both keys")
    routes = {"Both keys": "celery", event.trigger_id: "temporal"}
    with override_settings(TRIGGER_RELAY_ROUTES=routes, TRIGGER_RELAY_DEFAULT_ROUTE="celery"):
        event.fire_single(user.pk)
    assert outbox_count() == 1
    assert celery_tasks(celery_queue) == []


def test_route_changes_at_call_time_without_losing_or_doubling(
    user: Any, celery_queue: CeleryQueue
) -> None:
    """guarantees §2.3: routes change at any time; each firing goes exactly one way."""
    event = make_trigger("Switching")
    plan = ["celery", "temporal", "temporal", "celery", "temporal"]
    for number, route in enumerate(plan):
        with override_settings(TRIGGER_RELAY_ROUTES={"Switching": route}):
            event.fire_single(user.pk, n=number)

    to_temporal = [n for n, route in enumerate(plan) if route == "temporal"]
    to_celery = [n for n, route in enumerate(plan) if route == "celery"]
    assert [row.context["n"] for row in OutboxRow.objects.order_by("id")] == to_temporal
    assert [kwargs["n"] for _, _, kwargs in celery_tasks(celery_queue)] == to_celery


def test_invalid_route_refuses_to_guess(user: Any, celery_queue: CeleryQueue) -> None:
    """guarantees §2.3: a firing goes to exactly one of the two, never to neither silently."""
    event = make_trigger("Misrouted")
    with (
        override_settings(TRIGGER_RELAY_ROUTES={"Misrouted": "kafka"}),
        pytest.raises(ImproperlyConfigured, match="kafka"),
    ):
        event.fire_single(user.pk)
    with (
        override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="sqs"),
        pytest.raises(ImproperlyConfigured, match="sqs"),
    ):
        event.fire_single(user.pk)
    assert outbox_count() == 0
    assert celery_tasks(celery_queue) == []


def statements_of_the_receiver(event: Event, user: Any, **context: Any) -> list[str]:
    """The statements one firing of ``event`` issues after dj-triggers' own (which end with
    its reads of the trigger's conditions), in the site's transaction."""
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        event.fire_single(user.pk, **context)
    return [
        query["sql"]
        for query in captured.captured_queries
        if "trigger_relay_" in query["sql"] or query["sql"].startswith("INSERT")
    ]


@pytest.mark.parametrize("route", ["temporal", "celery"])
def test_route_and_row_are_one_statement_in_the_sites_transaction(
    user: Any, celery_queue: CeleryQueue, route: str
) -> None:
    """docs/performance.md: inside the site's transaction the route lookup and the outbox INSERT
    are one round trip (sql/queries/record_firing.sql), on either route: a Temporal-routed
    firing writes its row, a Celery-routed one writes nothing and is published."""
    event = make_trigger(f"One statement to {route}")
    TriggerRoute.objects.create(trigger_id=event.trigger_id, route=route)

    (statement,) = statements_of_the_receiver(event, user, task_id=5)

    assert "trigger_relay_route" in statement
    assert "INSERT INTO trigger_relay_outbox" in statement
    went = (outbox_count(), len(celery_tasks(celery_queue)))
    assert went == ((1, 0) if route == "temporal" else (0, 1))


def test_a_stored_route_makes_malformed_settings_moot(user: Any, celery_queue: CeleryQueue) -> None:
    """guarantees §2.3: the stored route wins without the settings being consulted, as it was
    before the route lookup and the INSERT became one statement (sent, then, without a route
    from the settings)."""
    event = make_trigger("Stored wins")
    TriggerRoute.objects.create(trigger_id=event.trigger_id, route="temporal")
    with override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="sqs"):
        event.fire_single(user.pk)
    assert outbox_count() == 1
    assert celery_tasks(celery_queue) == []


def test_a_malformed_stored_route_refuses_to_guess(user: Any, celery_queue: CeleryQueue) -> None:
    """guarantees §2.3: a stored route that is neither (written by hand in SQL) is refused with
    its value, before anything is written or published."""
    event = make_trigger("Stored kafka")
    TriggerRoute.objects.create(trigger_id=event.trigger_id, route="kafka")
    with pytest.raises(ImproperlyConfigured, match="'kafka'"):
        event.fire_single(user.pk)
    assert outbox_count() == 0
    assert celery_tasks(celery_queue) == []


def test_a_celery_routed_context_need_not_be_json(user: Any, celery_queue: CeleryQueue) -> None:
    """The outbox's JSON-only rule is the Temporal route's: a Celery-routed firing with a
    datetime in its context is published, as dj-triggers does, not refused."""
    event = make_trigger("Celery datetime")
    TriggerRoute.objects.create(trigger_id=event.trigger_id, route="celery")
    when = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.timezone.utc)
    with transaction.atomic():
        event.fire_single(user.pk, when=when)
    (queued,) = celery_queue.tasks()
    assert queued.name == HANDLE_EVENT
    assert outbox_count() == 0
    TriggerRoute.objects.filter(trigger_id=event.trigger_id).update(route="temporal")
    with pytest.raises(TypeError, match="when"):
        event.fire_single(user.pk, when=when)
    assert outbox_count() == 0


def test_dj_triggers_receiver_is_replaced_by_ours() -> None:
    """guarantees §2.3: dj-triggers' own receiver is disconnected, ours is connected once."""
    assert not receivers.is_connected(Event.fired, tasks.on_event_fired)
    assert receivers.installation.original is tasks.on_event_fired
    assert receivers.installation.original_was_connected

    receivers.install()  # AppConfig.ready() may run again: still one receiver of ours
    ours = [entry for entry in Event.fired.receivers if entry[0][0] == receivers.DISPATCH_UID]
    assert len(ours) == 1
    assert not receivers.is_connected(Event.fired, tasks.on_event_fired)
