"""``perform`` issues no more SQL statements than dj-triggers' own ``handle_event``
(docs/performance.md).

The same firing (the same kind of trigger, a fresh user, the same context) is performed
twice in one test: by dj-triggers' Celery task body, ``handle_event(event_pk, user_pk,
**context)`` called synchronously, and by the relay's ``perform`` from its outbox row. Each
side's statements are counted with Django's ``CaptureQueriesContext`` (``BEGIN``, ``COMMIT``
and savepoints included where Django logs them). A ratio against a baseline of the same run,
not a timing: the figures are printed (``pytest -s``).

Both run warm, as in a long-running worker: a firing of each kind before the counted ones
fills the per-process caches (content types).

Transactional tests: ``perform`` and ``Activity.lock`` open their own transactions, as in the
worker, not savepoints inside a test's transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from relay_e2e.models import ActionWrite
from relay_e2e.models import Flag
from relay_e2e.models import FlagCondition
from relay_e2e.models import RecordAction
from tasks.models import HasUncompletedTaskCondition
from tasks.models import SentEmail
from tasks.models import Task
from tasks.models import TaskCompletedEvent
from tests_support.factories import make_trigger
from tests_support.firings import workflow_input
from triggers.models import ActionCountCondition
from triggers.models import Trigger
from triggers.tasks import handle_event

from trigger_relay.models import OutboxRow
from trigger_relay.perform.core import perform

pytestmark = pytest.mark.django_db(transaction=True)

CONTEXT = {"task_id": 1, "task_title": "Ship it", "task_important": False}


def send_once(name: str) -> TaskCompletedEvent:
    """The example's first trigger: a mail on completion, at most once per user."""
    event = make_trigger(name)
    ActionCountCondition.objects.create(trigger_id=event.trigger_id, limit=1)
    return event


def while_tasks_open(name: str) -> TaskCompletedEvent:
    """A condition that reads the site's data (the example's HasUncompletedTaskCondition)."""
    event = make_trigger(name)
    HasUncompletedTaskCondition.objects.create(trigger_id=event.trigger_id)
    return event


def flagged_record(name: str) -> TaskCompletedEvent:
    """The end-to-end tests' models: a condition on a flag, an action that writes a row."""
    trigger = Trigger.objects.create(name=name, is_enabled=True)
    event = TaskCompletedEvent.objects.create(trigger=trigger)
    Flag.set(f"flag {name}", True)
    FlagCondition.objects.create(trigger=trigger, flag=f"flag {name}")
    RecordAction.objects.create(trigger=trigger, label=name)
    return event


SHAPES: dict[str, Callable[[str], TaskCompletedEvent]] = {
    "send once (ActionCountCondition)": send_once,
    "while tasks open (HasUncompletedTaskCondition)": while_tasks_open,
    "relay_e2e (FlagCondition, RecordAction)": flagged_record,
}


def performed(event: TaskCompletedEvent, user: Any) -> bool:
    return (
        SentEmail.objects.filter(user=user, trigger_name=event.trigger.name).exists()
        or ActionWrite.objects.filter(user=user, label=event.trigger.name).exists()
    )


def new_user(name: str) -> Any:
    user = get_user_model().objects.create(username=name, email=f"{name}@example.com")
    Task.objects.create(user=user, title="still open")
    return user


def celery_statements(make: Callable[[str], TaskCompletedEvent], name: str) -> list[str]:
    """dj-triggers' own task body for a firing of a trigger made by ``make``."""
    event, user = make(name), new_user(name)
    with CaptureQueriesContext(connection) as captured:
        handle_event(event.pk, user.pk, **CONTEXT)
    assert performed(event, user)
    return [query["sql"] for query in captured.captured_queries]


def relay_statements(make: Callable[[str], TaskCompletedEvent], name: str) -> list[str]:
    """The relay's ``perform`` for the outbox row of the same firing."""
    event, user = make(name), new_user(name)
    with override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal"):
        event.fire_single(user.pk, **CONTEXT)
    row = OutboxRow.objects.get(event_id=event.pk)
    firing = workflow_input(row)
    with CaptureQueriesContext(connection) as captured:
        result = perform(firing)
    assert (result.outcome, result.reason) == ("done", None)
    assert performed(event, user)
    return [query["sql"] for query in captured.captured_queries]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_perform_issues_no_more_statements_than_handle_event(shape: str) -> None:
    make = SHAPES[shape]
    celery_statements(make, "warm-celery")
    relay_statements(make, "warm-relay")

    celery = celery_statements(make, "celery")
    relay = relay_statements(make, "relay")

    print(
        f"\n{shape}: perform {len(relay)} statements, handle_event {len(celery)}"
        f" (ratio {len(relay) / len(celery):.2f})"
    )
    listing = "\n".join(
        [f"handle_event ({len(celery)}):", *celery, f"perform ({len(relay)}):", *relay]
    )
    assert len(relay) <= len(celery), listing


# -- what the fewer statements still do ---------------------------------------------------
#
# The relay takes Activity.lock's lock itself, in the firing's one transaction (no savepoints):
# the Activity row created if missing, then locked. Two first firings of the same user and
# trigger at once must still end with one row, both counted, the second having waited for
# the first (upstream's get_or_create waits the same way, on the unique key).


def test_concurrent_first_firings_share_one_activity() -> None:
    import threading
    import time

    from django.db.models.signals import post_save
    from tasks.models import SendEmailAction
    from triggers.models import Activity

    event, user = make_trigger("twice at once"), new_user("twice")
    with override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal"):
        event.fire_single(user.pk, **CONTEXT)
        event.fire_single(user.pk, **CONTEXT)
    firings = [
        {
            "outbox_id": row.pk,
            "generation": row.generation,
            "firing_uuid": str(row.firing_uuid),
            "event_id": row.event_id,
            "trigger_id": row.trigger_id,
            "user_pk": row.user_pk,
        }
        for row in OutboxRow.objects.filter(event_id=event.pk).order_by("pk")
    ]
    real_perform = SendEmailAction.perform
    in_action = threading.Event()
    release = threading.Event()
    created: list[bool] = []

    def held_open(self: SendEmailAction, user: Any, context: Any) -> None:
        real_perform(self, user, context)
        if not in_action.is_set():
            in_action.set()
            assert release.wait(60), "the second firing never waited"

    def saved(sender: Any, instance: Any, **kwargs: Any) -> None:
        created.append(kwargs["created"])

    outcomes: dict[int, Any] = {}

    def attempt(number: int) -> None:
        try:
            outcomes[number] = perform(firings[number])
        finally:
            connection.close()

    post_save.connect(saved, sender=Activity)
    SendEmailAction.perform = held_open  # type: ignore[method-assign]
    try:
        first = threading.Thread(target=attempt, args=(0,))
        first.start()
        assert in_action.wait(60)
        second = threading.Thread(target=attempt, args=(1,))
        second.start()
        # The second firing finds no committed row and waits on the first one's insert.
        deadline = time.monotonic() + 60
        with connection.cursor() as cursor:
            while True:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                if cursor.fetchone()[0]:
                    break
                assert time.monotonic() < deadline, "the second firing never waited"
                time.sleep(0.05)
        release.set()
        first.join(60)
        second.join(60)
    finally:
        SendEmailAction.perform = real_perform  # type: ignore[method-assign]
        post_save.disconnect(saved, sender=Activity)

    assert [outcomes[n].outcome for n in (0, 1)] == ["done", "done"]
    (activity,) = Activity.objects.filter(trigger_id=event.trigger_id, user=user)
    assert activity.action_count == 2
    assert SentEmail.objects.filter(user=user).count() == 2
    # get_or_create's signals: created once, then saved with each count.
    assert created.count(True) == 1


def without_conditions(name: str) -> TaskCompletedEvent:
    """A trigger with an action and no condition."""
    trigger = Trigger.objects.create(name=name, is_enabled=True)
    event = TaskCompletedEvent.objects.create(trigger=trigger)
    RecordAction.objects.create(trigger=trigger, label=name)
    return event


def later_firing_statements(make: Callable[[str], TaskCompletedEvent], name: str) -> list[int]:
    """Statements of a user's second firing of the same trigger (its Activity exists):
    ``[handle_event, perform]``."""
    event, user = make(f"{name} celery"), new_user(f"{name} celery")
    handle_event(event.pk, user.pk, **CONTEXT)
    with CaptureQueriesContext(connection) as captured:
        handle_event(event.pk, user.pk, **CONTEXT)
    celery = len(captured.captured_queries)
    event, user = make(f"{name} relay"), new_user(f"{name} relay")
    for _ in range(2):
        with override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal"):
            event.fire_single(user.pk, **CONTEXT)
        row = OutboxRow.objects.filter(event_id=event.pk).order_by("-id")[0]
        firing = workflow_input(row)
        with CaptureQueriesContext(connection) as captured:
            assert perform(firing).outcome == "done"
    return [celery, len(captured.captured_queries)]


@pytest.mark.parametrize(
    ("make", "extra"),
    [
        # The ledger's write (at most once, guarantees §3.4), which dj-triggers does not have; the
        # row's own read (guarantees §3.7) and the lock timeout (§3.6) are paid for by reading the
        # event and the Activity once each, where handle_event reads them twice.
        (without_conditions, 1),
        # And the conditions judged again under the lock, where the count they judge cannot
        # change meanwhile (the race dj-triggers has: 1 of 20 concurrent capped firings
        # performed, not 11-20), less the condition rows read once.
        (flagged_record, 2),
        (while_tasks_open, 2),
    ],
)
def test_a_later_firing_costs_at_most_the_ledger_and_the_recheck_more(
    make: Callable[[str], TaskCompletedEvent], extra: int
) -> None:
    """No more statements than ``handle_event`` (docs/performance.md), for a user's later firing:
    measured 15 vs 14 statements without conditions (16 before ``perform`` stopped re-filtering the
    user under the lock when nothing can filter them out), 19 vs 17 with one condition."""
    later_firing_statements(make, "warm")
    celery, relay = later_firing_statements(make, "counted")
    print(f"\n{make.__name__}: later firing: perform {relay} statements, handle_event {celery}")
    assert relay <= celery + extra, (relay, celery)
