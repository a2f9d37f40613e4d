"""Taking ``Event.fired`` over from dj-triggers so that no firing doubles (guarantees §2.3).

dj-triggers' receiver may be connected in more ways than its own ``@receiver``: with a
``dispatch_uid``, for a sender, through a ``functools.wraps`` decorator. ``install()``
disconnects all of them; a Temporal-routed firing is then seen in the outbox and *not* in the
run's real Celery queue (Redis). Receivers that only call into ``triggers.tasks`` are named by
the system check ``trigger_relay.E009``, and registrations made after the takeover by
``trigger_relay.E005``: the check reads the signal's live receivers.
"""

from __future__ import annotations

import copy
import functools
import logging
import types
import weakref
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import pytest
from celery import current_app
from django.core import checks
from django.test import override_settings
from tasks.models import TaskCompletedEvent
from tests_support.broker import CeleryQueue
from tests_support.factories import make_trigger
from triggers import tasks
from triggers.models import Event
from triggers.tasks import handle_event

from trigger_relay.firing import receivers
from trigger_relay.models import OutboxRow

HANDLE_EVENT = "triggers.tasks.handle_event"


def relay_messages() -> list[checks.CheckMessage]:
    """What ``manage.py check`` reports for trigger_relay (every registered check runs)."""
    return [m for m in checks.run_checks() if (m.id or "").startswith("trigger_relay.")]


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [message.id or "" for message in messages]


def live_receivers() -> list[object]:
    """The receivers connected to ``Event.fired`` now (weak references resolved)."""
    return [
        ref() if isinstance(ref, weakref.ref) else ref for _key, ref, *_ in Event.fired.receivers
    ]


@pytest.fixture
def signal_state() -> Iterator[None]:
    """Put ``Event.fired``'s receivers and the installation record back as they were, so
    that nothing connected by a test leaks into the next one."""
    with Event.fired.lock:
        saved = list(Event.fired.receivers)
    # Functions are copied by reference: only the record's lists are new.
    installation = copy.deepcopy(vars(receivers.installation))
    try:
        yield
    finally:
        with Event.fired.lock:
            Event.fired.receivers = saved
            Event.fired.sender_receivers_cache.clear()
        for name, value in installation.items():
            setattr(receivers.installation, name, value)


def connected(receiver: Callable[..., Any], **kwargs: Any) -> None:
    # Strong references: a receiver defined inside a test would be collected otherwise.
    Event.fired.connect(receiver, weak=False, **kwargs)


# --- Receivers a site may have connected -------------------------------------------------


@functools.wraps(tasks.on_event_fired)
def logged_on_event_fired(*args: Any, **kwargs: Any) -> None:
    """A site's decorator around dj-triggers' receiver (functools.wraps says it is it)."""
    logging.getLogger("site").info("firing")
    tasks.on_event_fired(*args, **kwargs)


def forward_to_celery(sender: type[Event], **kwargs: Any) -> None:
    """A site's own receiver that calls dj-triggers' (no functools.wraps)."""
    logging.getLogger("site").info("firing")
    tasks.on_event_fired(sender=sender, **kwargs)


def enqueue_directly(sender: type[Event], event: Event, user_pk: Any, **context: Any) -> None:
    """A site's own receiver that enqueues dj-triggers' task itself."""
    handle_event.apply_async(args=(event.pk, user_pk), kwargs=context, queue="priority")


def _enqueue(event: Event, user_pk: Any) -> None:
    handle_event.delay(event.pk, user_pk)


def through_a_helper(sender: type[Event], event: Event, user_pk: Any, **context: Any) -> None:
    if event.trigger.name.startswith("Legacy"):
        _enqueue(event, user_pk)


def by_task_name(sender: type[Event], event: Event, user_pk: Any, **context: Any) -> None:
    current_app.send_task(HANDLE_EVENT, args=(event.pk, user_pk), kwargs=context)


def importing_inside(sender: type[Event], **kwargs: Any) -> None:
    from triggers import tasks as djt_tasks

    djt_tasks.on_event_fired(sender=sender, **kwargs)


def closure_over_the_task() -> Callable[..., None]:
    task = handle_event

    def receiver(sender: type[Event], event: Event, user_pk: Any, **context: Any) -> None:
        task.delay(event.pk, user_pk)

    return receiver


class CallableForwarder:
    def __init__(self) -> None:
        self.target = tasks.on_event_fired

    def __call__(self, sender: type[Event], **kwargs: Any) -> None:
        self.target(sender=sender, **kwargs)


class MethodForwarder:
    def receive(self, sender: type[Event], **kwargs: Any) -> None:
        tasks.on_event_fired(sender=sender, **kwargs)


def audit_firing(sender: type[Event], event: Event, user_pk: Any, **context: Any) -> None:
    """A site's receiver that has nothing to do with Celery."""
    logging.getLogger("site").info("fired %s for %s", event.pk, user_pk)


# --- install(): every registration of dj-triggers' receiver goes --------------------------


REGISTRATIONS: list[tuple[str, Callable[[], None]]] = [
    ("dispatch_uid", lambda: connected(tasks.on_event_fired, dispatch_uid="site.celery")),
    ("sender subclass", lambda: connected(tasks.on_event_fired, sender=TaskCompletedEvent)),
    ("sender base", lambda: connected(tasks.on_event_fired, sender=Event)),
    ("functools.wraps", lambda: Event.fired.connect(logged_on_event_fired)),
    ("partial", lambda: connected(functools.partial(tasks.on_event_fired))),
]


@pytest.mark.django_db
@pytest.mark.usefixtures("signal_state")
@pytest.mark.parametrize(
    "register", [register for _, register in REGISTRATIONS], ids=[name for name, _ in REGISTRATIONS]
)
def test_install_disconnects_every_registration_of_dj_triggers_receiver(
    register: Callable[[], None], user: Any, celery_queue: CeleryQueue
) -> None:
    """guarantees §2.3: a Temporal-routed firing never also goes to Celery, however dj-triggers'
    receiver was connected."""
    register()
    receivers.install()

    event = make_trigger("Moved")
    with override_settings(TRIGGER_RELAY_ROUTES={"Moved": "temporal"}):
        event.fire_single(user.pk, n=1)

    assert list(OutboxRow.objects.values_list("event_id", "context")) == [(event.pk, {"n": 1})]
    assert celery_queue.tasks() == []
    assert relay_messages() == []


@pytest.mark.django_db
@pytest.mark.usefixtures("signal_state")
def test_celery_routed_firing_is_enqueued_once_after_the_takeover(
    user: Any, celery_queue: CeleryQueue
) -> None:
    """guarantees §2.3: with every extra registration gone, Celery gets a firing exactly once."""
    for _, register in REGISTRATIONS:
        register()
    receivers.install()

    event = make_trigger("Stays on Celery")
    event.fire_single(user.pk, n=2)

    assert OutboxRow.objects.count() == 0
    assert [(task.name, task.args, task.kwargs) for task in celery_queue.tasks()] == [
        (HANDLE_EVENT, [event.pk, user.pk], {"n": 2})
    ]


@pytest.mark.usefixtures("signal_state")
def test_install_says_what_it_disconnected(caplog: pytest.LogCaptureFixture) -> None:
    connected(tasks.on_event_fired, dispatch_uid="site.celery", sender=TaskCompletedEvent)
    with caplog.at_level(logging.WARNING, logger="trigger_relay"):
        receivers.install()

    expected = (
        "triggers.tasks.on_event_fired "
        "(dispatch_uid='site.celery', sender tasks.TaskCompletedEvent)"
    )
    assert expected in receivers.installation.disconnected
    assert any(expected in record.getMessage() for record in caplog.records)
    assert receivers.installation.original_was_connected


@pytest.mark.usefixtures("signal_state")
def test_install_names_a_wrapper_where_it_is_defined(caplog: pytest.LogCaptureFixture) -> None:
    """functools.wraps copies the wrapped function's name: the log says whose code it is."""
    Event.fired.connect(logged_on_event_fired)
    with caplog.at_level(logging.WARNING, logger="trigger_relay"):
        receivers.install()

    expected = (
        f"{__name__}.logged_on_event_fired "
        "(functools.wraps of triggers.tasks.on_event_fired) (any sender)"
    )
    assert receivers.installation.disconnected[-1] == expected
    (record,) = caplog.records
    assert expected in record.getMessage()
    assert "a wrapper's own code no longer runs" in record.getMessage()


@pytest.mark.usefixtures("signal_state")
def test_install_leaves_receivers_that_are_not_dj_triggers_alone() -> None:
    """A site's wrapper may do other work: install() does not guess, the check names it."""
    connected(forward_to_celery)
    connected(audit_firing)
    receivers.install()
    assert forward_to_celery in live_receivers()
    assert audit_firing in live_receivers()


# --- The check: receivers that reach the Celery path --------------------------------------


SITE_RECEIVERS: list[tuple[str, Callable[[], Callable[..., Any]], str, str]] = [
    # (case, receiver factory, name in the message, what it refers to)
    (
        "calls on_event_fired",
        lambda: forward_to_celery,
        f"{__name__}.forward_to_celery",
        "triggers.tasks",
    ),
    (
        "enqueues handle_event",
        lambda: enqueue_directly,
        f"{__name__}.enqueue_directly",
        HANDLE_EVENT,
    ),
    ("through a helper", lambda: through_a_helper, f"{__name__}.through_a_helper", HANDLE_EVENT),
    ("send_task by name", lambda: by_task_name, f"{__name__}.by_task_name", HANDLE_EVENT),
    ("imports inside", lambda: importing_inside, f"{__name__}.importing_inside", "triggers.tasks"),
    (
        "closure",
        closure_over_the_task,
        f"{__name__}.closure_over_the_task.<locals>.receiver",
        HANDLE_EVENT,
    ),
    (
        "callable object",
        CallableForwarder,
        f"{__name__}.CallableForwarder",
        "triggers.tasks.on_event_fired",
    ),
    (
        "bound method",
        lambda: MethodForwarder().receive,
        f"{__name__}.MethodForwarder.receive",
        "triggers.tasks",
    ),
    (
        "partial with arguments",
        lambda: functools.partial(tasks.on_event_fired, source="site"),
        "functools.partial(triggers.tasks.on_event_fired)",
        "triggers.tasks.on_event_fired",
    ),
]


@pytest.mark.usefixtures("signal_state")
@pytest.mark.parametrize(
    ("make_receiver", "name", "reference"),
    [case[1:] for case in SITE_RECEIVERS],
    ids=[case[0] for case in SITE_RECEIVERS],
)
def test_check_names_a_site_receiver_that_reaches_celery(
    make_receiver: Callable[[], Callable[..., Any]], name: str, reference: str
) -> None:
    """guarantees §2.3: an Error (not a Warning) naming the receiver and what it refers to."""
    connected(make_receiver())

    (error,) = relay_messages()

    assert error.id == "trigger_relay.E009"
    assert error.level == checks.ERROR
    assert f"The receiver {name} (any sender) of Event.fired" in error.msg
    assert reference in error.msg
    assert "handle_event" in (error.hint or "")


@pytest.mark.usefixtures("signal_state")
def test_check_passes_a_site_receiver_that_does_not_reach_celery() -> None:
    connected(audit_firing)
    assert relay_messages() == []


@pytest.mark.usefixtures("signal_state")
def test_check_sees_dj_triggers_receiver_connected_after_the_takeover() -> None:
    """A module imported later may connect dj-triggers' receiver again, with a uid or a
    sender that install() never saw; importlib.reload(triggers.tasks) makes a new function
    object of the same name."""
    original = tasks.on_event_fired
    reloaded = types.FunctionType(
        original.__code__, original.__globals__, original.__name__, original.__defaults__
    )
    reloaded.__qualname__ = original.__qualname__
    reloaded.__module__ = original.__module__

    connected(original, dispatch_uid="late.import", sender=TaskCompletedEvent)
    connected(reloaded)
    messages = relay_messages()

    assert ids(messages) == ["trigger_relay.E005", "trigger_relay.E005"]
    assert all(message.level == checks.ERROR for message in messages)
    assert (
        "triggers.tasks.on_event_fired (dispatch_uid='late.import', "
        "sender tasks.TaskCompletedEvent)" in messages[0].msg
    )
    assert "triggers.tasks.on_event_fired (any sender)" in messages[1].msg


def test_trigger_relays_own_receiver_is_not_flagged() -> None:
    """Ours calls dj-triggers' receiver for Celery-routed firings only."""
    assert receivers.on_event_fired in live_receivers()
    assert relay_messages() == []
