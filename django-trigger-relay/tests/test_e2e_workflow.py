"""End to end, from a firing to its performed actions (guarantees §3, §4.6, §5.1).

Real processes, no mocks: a Temporal dev server, the daemon ``trigger-relay run`` (relay +
the Rust worker of ``trigger_workflow``) and the Python worker ``manage.py
trigger_relay_worker``, all on the pytest-django test database (tests_support/harness.py).
Crashes are real signals: SIGKILL through ``Popen.kill()``, SIGTERM to stop.

The test-only app ``relay_e2e`` (tests/relay_e2e/) provides a condition driven by a flag, a
condition that shows concurrency, and an action that writes a row, can sleep inside its
transaction and can fail while a flag is on. They journal what they do to a file, so a test
can see an action inside its still-open transaction and count attempts.

Two harnesses, one per test class, never alive at the same time (two relays on one outbox
would start each other's rows on the wrong server): ``TestFiring`` on an in-memory Temporal
server, ``TestDurableTimer`` on a SQLite-file server that is restarted.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import NamedTuple

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db import transaction
from django.utils import timezone
from relay_e2e.models import ActionWrite
from relay_e2e.models import Flag
from relay_e2e.models import FlagCondition
from relay_e2e.models import OutsideEffectAction
from relay_e2e.models import OutsideEffectWrite
from relay_e2e.models import ProbeCondition
from relay_e2e.models import RecordAction
from tasks.models import HasUncompletedTaskCondition
from tasks.models import HourlyClockEvent
from tasks.models import SendEmailAction
from tasks.models import SentEmail
from tasks.models import Task
from tasks.models import TaskCompletedEvent
from temporalio.api.enums.v1 import EventType
from temporalio.api.enums.v1 import TimeoutType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowExecutionStatus
from tests_support.factories import several_actions_per_trigger
from tests_support.harness import FINAL_STATES
from tests_support.harness import Harness
from tests_support.harness import describe_history
from tests_support.harness import events_of
from tests_support.harness import scheduled_activity_types
from tests_support.harness import serve
from tests_support.harness import timer_durations
from triggers.models import ActionCountCondition
from triggers.models import ActionFrequencyCondition
from triggers.models import Activity
from triggers.models import Trigger

from trigger_relay.firing.context import MAX_CONTEXT_DEPTH
from trigger_relay.models import LedgerEntry
from trigger_relay.models import OutboxRow
from trigger_relay.perform.activity import PERFORM_FIRING

# Transactional: the workers see what a test commits. reset_sequences: the flush after each
# test then recreates the content types under the same ids (see ``Harness.ensure_worker_current``).
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, reset_sequences=True),
    pytest.mark.usefixtures("route_everything_to_temporal"),
]

User = get_user_model()

#: Daemon settings of the in-memory harness: an attempt of perform_firing lost with a killed
#: worker is retried after the 5 s heartbeat timeout (guarantees §3.6), long before its 120 s
#: start-to-close timeout; a failing action fails the row after 2 attempts.
PERFORM_TIMEOUT = "120s"
PERFORM_HEARTBEAT_TIMEOUT = "5s"
PERFORM_MAX_ATTEMPTS = 2
DAEMON_ENV = {
    "TRIGGER_RELAY_PERFORM_TIMEOUT": PERFORM_TIMEOUT,
    "TRIGGER_RELAY_PERFORM_HEARTBEAT_TIMEOUT": PERFORM_HEARTBEAT_TIMEOUT,
    "TRIGGER_RELAY_PERFORM_MAX_ATTEMPTS": str(PERFORM_MAX_ATTEMPTS),
    "TRIGGER_RELAY_STICKY_TIMEOUT": "2s",
}


# -- fixtures ------------------------------------------------------------------------------


#: Kept by ``empty_tables``: what migrations made.
KEPT_TABLES = frozenset(
    {"django_migrations", "django_content_type", "auth_permission", "trigger_relay_schema_version"}
)


def empty_tables() -> None:
    """Empty every table the tests write to, outside a test (Django's ``flush`` would renumber
    the content types, see ``Harness.ensure_worker_current``)."""
    tables = [
        table
        for table in connection.introspection.django_table_names(only_existing=True)
        if table not in KEPT_TABLES
    ]
    tables.append("trigger_relay_outbox")  # unmanaged, owned by sql/ (ledger: CASCADE)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(map(connection.ops.quote_name, tables))} CASCADE")


def _harness(
    tmp_path_factory: pytest.TempPathFactory,
    django_db_blocker: Any,
    name: str,
    *,
    persistent: bool,
) -> Iterator[Harness]:
    workdir = tmp_path_factory.mktemp(name)
    harness = Harness(
        workdir, run_id=str(settings.RUN_ID), persistent=persistent, daemon_env=DAEMON_ENV
    )
    yield from serve(harness, django_db_blocker)


@pytest.fixture(scope="class")
def memory_harness(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None, django_db_blocker: Any
) -> Iterator[Harness]:
    """Temporal dev server in memory + daemon + Python worker, for one test class."""
    yield from _harness(tmp_path_factory, django_db_blocker, "e2e-memory", persistent=False)


@pytest.fixture(scope="class")
def restartable_harness(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None, django_db_blocker: Any
) -> Iterator[Harness]:
    """As ``memory_harness``, with the dev server on a SQLite file (WAL) that survives
    restarts."""
    yield from _harness(tmp_path_factory, django_db_blocker, "e2e-persistent", persistent=True)


@pytest.fixture
def harness(memory_harness: Harness, transactional_db: None) -> Harness:
    memory_harness.begin_test()
    return memory_harness


@pytest.fixture
def persistent_harness(restartable_harness: Harness, transactional_db: None) -> Harness:
    restartable_harness.begin_test()
    return restartable_harness


# -- helpers -------------------------------------------------------------------------------


def make_user(name: str) -> Any:
    return User.objects.create(username=name, email=f"{name}@example.com")


def make_trigger(name: str, *, enabled: bool = True) -> Trigger:
    return Trigger.objects.create(name=name[:64], is_enabled=enabled)


def task_event(trigger: Trigger, delay: dt.timedelta, **fields: Any) -> TaskCompletedEvent:
    return TaskCompletedEvent.objects.create(trigger=trigger, delay=delay, **fields)


def record_action(trigger: Trigger, label: str, **fields: Any) -> RecordAction:
    return RecordAction.objects.create(trigger=trigger, label=label, **fields)


def fire(event: Any, user: Any, **context: Any) -> list[OutboxRow]:
    """``event.fire_single`` (dj-triggers' API: Event.fired → the add-on → the outbox) in a
    transaction of its own; returns the rows it recorded."""
    before = set(OutboxRow.objects.values_list("pk", flat=True))
    with transaction.atomic():
        event.fire_single(user.pk, **context)
    return list(OutboxRow.objects.exclude(pk__in=before).order_by("pk"))


def fire_task_completed(task: Task, event: TaskCompletedEvent) -> list[OutboxRow]:
    """What ``Task.complete()`` does, for this one event: the task is saved and the event
    fired in one transaction. (``Task.complete()`` fires every enabled TaskCompletedEvent of
    the site; the scenarios below keep their triggers apart.)"""
    before = set(OutboxRow.objects.values_list("pk", flat=True))
    with transaction.atomic():
        task.completed_at = timezone.now()
        task.save(update_fields=["completed_at"])
        event.fire_single(
            task.user_id, task_id=task.pk, task_title=task.title, task_important=task.important
        )
    return list(OutboxRow.objects.exclude(pk__in=before).order_by("pk"))


def db_now() -> dt.datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        (now,) = cursor.fetchone()
    return now  # type: ignore[no-any-return]


def key_of(row: OutboxRow, action: Any) -> str:
    return f"trigger-relay:{row.pk}:{action.pk}"


def ledger_of(row: OutboxRow) -> list[tuple[int, int, str]]:
    """(action id, generation, idempotency key) of the row's ledger entries, by action id."""
    return list(
        LedgerEntry.objects.filter(outbox_id=row.pk)
        .order_by("action_id")
        .values_list("action_id", "generation", "idempotency_key")
    )


def action_count(trigger: Trigger, user: Any) -> int:
    """Activity.action_count of (user, trigger); 0 without an Activity."""
    counts = Activity.objects.filter(trigger_id=trigger.pk, user_id=user.pk)
    return sum(counts.values_list("action_count", flat=True))


def writes_of(key: str) -> list[ActionWrite]:
    return list(ActionWrite.objects.filter(idempotency_key=key))


def wait_dispatched(harness: Harness, rows: Iterable[OutboxRow]) -> list[OutboxRow]:
    ids = [row.pk for row in rows]

    def probe() -> list[OutboxRow] | None:
        found = list(OutboxRow.objects.filter(pk__in=ids, run_id__isnull=False).order_by("pk"))
        return found if len(found) == len(ids) else None

    return harness.wait(probe, what=f"outbox rows {ids} dispatched", timeout=30)


def wait_final(
    harness: Harness,
    rows: Iterable[OutboxRow],
    *,
    timeout: float = 60,
    generation: int = 0,
    allow_dead: Iterable[Any] = (),
) -> list[OutboxRow]:
    """Wait until every row has its outcome recorded (for ``generation``); rows by id."""
    ids = [row.pk for row in rows]

    def probe() -> list[OutboxRow] | None:
        found = list(
            OutboxRow.objects.filter(
                pk__in=ids, state__in=FINAL_STATES, generation=generation
            ).order_by("pk")
        )
        return found if len(found) == len(ids) else None

    def states() -> str:
        return ", ".join(
            f"{pk}={state}/g{generation}"
            for pk, state, generation in OutboxRow.objects.filter(pk__in=ids).values_list(
                "pk", "state", "generation"
            )
        )

    try:
        return harness.wait(
            probe,
            what=f"outcomes of outbox rows {ids}",
            timeout=timeout,
            interval=0.25,
            allow_dead=allow_dead,
        )
    except AssertionError as error:
        raise AssertionError(f"{error}\nrow states: {states()}") from None


E = EventType
#: Workflow task events, whose number depends on how the worker and server met.
TASK_EVENTS = {
    E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    E.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    E.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
    E.EVENT_TYPE_WORKFLOW_TASK_FAILED,
}
TIMER = [E.EVENT_TYPE_TIMER_STARTED, E.EVENT_TYPE_TIMER_FIRED]
PERFORM = [
    E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    E.EVENT_TYPE_ACTIVITY_TASK_STARTED,
    E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
]
COMPLETED = [E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED]


def outcome_counts(harness: Harness) -> dict[str, float]:
    """``trigger_relay_workflow_outcomes_total`` of the harness' daemon, by state."""
    with urllib.request.urlopen(f"http://{harness.metrics_addr}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith('trigger_relay_workflow_outcomes_total{state="'):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split('"')[1]] = float(value)
    return counts


def perform_events(harness: Harness, row: OutboxRow) -> tuple[HistoryEvent, HistoryEvent]:
    """The row's perform_firing ActivityTaskScheduled event and its (last) started event."""
    assert row.workflow_id
    history = harness.history(row.workflow_id)
    (scheduled,) = [
        event
        for event in events_of(history, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
        if event.activity_task_scheduled_event_attributes.activity_type.name == PERFORM_FIRING
    ]
    (started,) = [
        event
        for event in events_of(history, EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED)
        if event.activity_task_started_event_attributes.scheduled_event_id == scheduled.event_id
    ]
    return scheduled, started


def perform_attempts(harness: Harness, row: OutboxRow) -> list[int]:
    """Attempt numbers of perform_firing recorded in the row's workflow history."""
    assert row.workflow_id
    history = harness.history(row.workflow_id)
    scheduled = {
        event.event_id
        for event in events_of(history, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
        if event.activity_task_scheduled_event_attributes.activity_type.name == PERFORM_FIRING
    }
    return [
        event.activity_task_started_event_attributes.attempt
        for event in events_of(history, EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED)
        if event.activity_task_started_event_attributes.scheduled_event_id in scheduled
    ]


class OutsideEffect(NamedTuple):
    """A firing of a trigger whose one action has an effect outside the database (a line
    appended to the file ``outside``, as an email handed to an SMTP server), with its outcome
    recorded."""

    user: Any
    trigger: Trigger
    action: OutsideEffectAction
    outside: Path
    key: str
    row: OutboxRow


def fire_outside_effect(
    harness: Harness, tmp_path: Path, user_name: str, trigger_name: str, **action: Any
) -> OutsideEffect:
    """Fire a new trigger whose one action is an ``OutsideEffectAction`` with the fields
    ``action``, for a new user; wait for the row's outcome."""
    user = make_user(user_name)
    trigger = make_trigger(trigger_name)
    event = task_event(trigger, dt.timedelta())
    outside = tmp_path / "sent.txt"
    effect = OutsideEffectAction.objects.create(trigger=trigger, path=str(outside), **action)
    (row,) = fire(event, user, task_id=1, task_title="t", task_important=False)
    key = key_of(row, effect)
    (row,) = wait_final(harness, [row], timeout=60)
    return OutsideEffect(user, trigger, effect, outside, key, row)


# -- dj-triggers' two example scenarios (guarantees §3.2) -----------------------------------

SCENARIO_DELAY = dt.timedelta(seconds=3)
MIN_FREQUENCY = dt.timedelta(days=1)
OPEN_TASKS = ("Water the plants", "Book the dentist")


@dataclass(frozen=True)
class Combination:
    """One cell of dj-triggers' test matrix, as it is at due time.

    ``important``: the notification of a completed important task (TaskCompletedEvent
    important_only + ActionCountCondition(limit=1)); ``condition`` = the task is important.
    ``reminder``: the reminder of open tasks (HourlyClockEvent + HasUncompletedTaskCondition +
    ActionFrequencyCondition(1 day)); ``condition`` = the user has an open task.
    """

    scenario: str
    enabled: bool
    notified: bool
    condition: bool

    @property
    def id(self) -> str:
        return "-".join(
            [
                self.scenario,
                "enabled" if self.enabled else "disabled",
                "notified" if self.notified else "not_notified",
                "condition_true" if self.condition else "condition_false",
            ]
        )

    def expected(self) -> tuple[str, str | None] | None:
        """(state, skip reason) of the firing's row; None: no firing at all."""
        if self.scenario == "important" and not self.condition:
            return None  # TaskCompletedEvent.should_be_fired: important tasks only
        if not self.enabled:
            return ("skipped", "trigger_disabled")
        if self.notified:
            # ActionCountCondition / ActionFrequencyCondition filter the user out.
            return ("skipped", "user_filtered_out")
        if not self.condition:
            # HasUncompletedTaskCondition filters the user out as well.
            return ("skipped", "user_filtered_out")
        return ("done", None)


COMBINATIONS = [
    Combination(scenario, enabled, notified, condition)
    for scenario in ("important", "reminder")
    for enabled in (True, False)
    for notified in (True, False)
    for condition in (True, False)
]


@dataclass
class ScenarioOutcome:
    """What the database holds for one combination once all firings have finished."""

    rows: list[dict[str, Any]]
    emails: list[dict[str, Any]]
    ledger: list[tuple[int, int, str]]
    action_count: int
    action_id: int


def _set_up_combination(combination: Combination) -> tuple[Any, Trigger, Any, Any]:
    """The trigger as the admin would build it (enabled), its user, and a callable firing it
    the way the site does."""
    user = make_user(combination.id)
    trigger = make_trigger(f"e2e {combination.id}")
    if combination.scenario == "important":
        event = task_event(trigger, SCENARIO_DELAY, important_only=True)
        ActionCountCondition.objects.create(trigger=trigger, limit=1)
        action = SendEmailAction.objects.create(
            trigger=trigger,
            subject="Well done, {{ user.username }}!",
            body="You completed the important task “{{ task_title }}”.",
        )
        task = Task.objects.create(
            user=user, title="Write the quarterly report", important=combination.condition
        )
        return user, trigger, action, lambda: fire_task_completed(task, event)
    event = HourlyClockEvent.objects.create(trigger=trigger, delay=SCENARIO_DELAY)
    HasUncompletedTaskCondition.objects.create(trigger=trigger)
    ActionFrequencyCondition.objects.create(trigger=trigger, limit=MIN_FREQUENCY)
    action = SendEmailAction.objects.create(
        trigger=trigger,
        subject="{{ user.username }}, you have open tasks",
        body=(
            "{% for task in user.tasks.all %}{% if not task.completed_at %}"
            "- {{ task.title }}\n{% endif %}{% endfor %}(clock: {{ fired_at }})"
        ),
    )
    Task.objects.create(user=user, title="Done long ago", completed_at=timezone.now())
    for title in OPEN_TASKS:
        Task.objects.create(user=user, title=title)
    fired_at = timezone.now().isoformat(timespec="seconds")
    return (
        user,
        trigger,
        action,
        lambda: fire(event, user, fired_at=fired_at),
    )


def _change_before_due_time(combination: Combination, user: Any, trigger: Trigger) -> None:
    """Turn the state the firing was recorded in into the combination's, during the delay."""
    now = timezone.now()
    if not combination.enabled:
        Trigger.objects.filter(pk=trigger.pk).update(is_enabled=False)
    if combination.notified:
        last = now - dt.timedelta(hours=1)
        if combination.scenario == "reminder":
            last = now - MIN_FREQUENCY + dt.timedelta(seconds=30)
        Activity.objects.create(
            trigger=trigger, user=user, action_count=1, last_action_datetime=last
        )
    if combination.scenario == "reminder" and not combination.condition:
        Task.objects.filter(user=user, completed_at__isnull=True).update(completed_at=now)


@pytest.fixture(scope="class")
def scenario_outcomes(
    memory_harness: Harness, django_db_blocker: Any
) -> dict[str, ScenarioOutcome]:
    """Fire all 16 combinations at once against the running harness, wait for every row's
    outcome, and keep what the database then holds; the tables are emptied before the tests
    read it.

    dj-triggers' ``Event.fire()`` filters users by the trigger's state *at fire time* (a
    disabled trigger, a capped user: no firing at all). What guarantees §3.2 is about is the state
    *at due time*, so every firing is recorded in the favourable state (trigger enabled, no
    notification sent, open tasks) and the combination's state is set during the delay.
    """
    harness = memory_harness
    with django_db_blocker.unblock():
        harness.begin_test()
        try:
            set_up = {c.id: _set_up_combination(c) for c in COMBINATIONS}
            rows = {cid: fired() for cid, (_, _, _, fired) in set_up.items()}
            for combination in COMBINATIONS:
                user, trigger, _, _ = set_up[combination.id]
                _change_before_due_time(combination, user, trigger)
            all_rows = [row for fired in rows.values() for row in fired]
            earliest_due = min(row.due_at for row in all_rows)
            assert db_now() < earliest_due, "set-up took longer than the delay; raise it"
            wait_final(harness, all_rows, timeout=90)
            outcomes = {}
            for combination in COMBINATIONS:
                user, trigger, action, _ = set_up[combination.id]
                ids = [row.pk for row in rows[combination.id]]
                outcomes[combination.id] = ScenarioOutcome(
                    rows=list(
                        OutboxRow.objects.filter(pk__in=ids).values(
                            "pk", "state", "skip_reason", "last_error", "generation", "due_at"
                        )
                    ),
                    emails=list(
                        SentEmail.objects.filter(user=user).values(
                            "subject", "body", "context", "action_id", "sent_at"
                        )
                    ),
                    ledger=[
                        entry
                        for pk in ids
                        for entry in LedgerEntry.objects.filter(outbox_id=pk).values_list(
                            "action_id", "generation", "idempotency_key"
                        )
                    ],
                    action_count=action_count(trigger, user),
                    action_id=action.pk,
                )
        finally:
            empty_tables()
    return outcomes


# -- tests on the in-memory server ---------------------------------------------------------


class TestFiring:
    @pytest.mark.parametrize("combination", COMBINATIONS, ids=lambda c: c.id)
    def test_dj_triggers_scenarios_at_due_time(
        self, combination: Combination, scenario_outcomes: dict[str, ScenarioOutcome]
    ) -> None:
        """guarantees §3.2: with fresh data at due time, a disabled trigger → skipped
        trigger_disabled; a user the conditions filter out (already notified: action count
        or frequency cap; no open task) → skipped user_filtered_out; otherwise the action is
        performed once and the Activity's count moves once. An unimportant task does not
        fire the important-only event at all."""
        outcome = scenario_outcomes[combination.id]
        initial_count = 1 if combination.notified else 0
        expected = combination.expected()

        if expected is None:
            assert outcome.rows == []
            assert outcome.emails == []
            assert outcome.action_count == initial_count
            return
        (row,) = outcome.rows
        assert (row["state"], row["skip_reason"]) == expected, row
        assert row["last_error"] is None
        assert row["generation"] == 0
        if expected[0] == "skipped":
            assert outcome.emails == []
            assert outcome.ledger == []
            assert outcome.action_count == initial_count
            return

        key = f"trigger-relay:{row['pk']}:{outcome.action_id}"
        assert outcome.ledger == [(outcome.action_id, 0, key)]
        assert outcome.action_count == initial_count + 1
        (email,) = outcome.emails
        assert email["action_id"] == outcome.action_id
        assert email["context"]["trigger_relay_idempotency_key"] == key  # guarantees §3.4
        assert email["sent_at"] >= row["due_at"]  # guarantees §3.1
        if combination.scenario == "important":
            assert email["subject"] == f"Well done, {combination.id}!"
            assert "Write the quarterly report" in email["body"]
        else:
            assert email["subject"] == f"{combination.id}, you have open tasks"
            assert all(title in email["body"] for title in OPEN_TASKS)
            assert "Done long ago" not in email["body"]

    def test_nothing_before_due_time_and_conditions_checked_fresh(self, harness: Harness) -> None:
        """guarantees §3.1: nothing is performed before due time (the row waits `dispatched`);
        after it, the action is performed once. guarantees §3.2: a condition that turned false
        during the delay → skipped condition_false, nothing performed."""
        delay = dt.timedelta(seconds=4)
        user = make_user("delayed")
        events, actions = {}, {}
        for name in ("stays-true", "turns-false"):
            Flag.set(f"delay-{name}", True)
            trigger = make_trigger(f"e2e delay {name}")
            FlagCondition.objects.create(trigger=trigger, flag=f"delay-{name}")
            events[name] = task_event(trigger, delay)
            actions[name] = SendEmailAction.objects.create(
                trigger=trigger, subject=f"{name}: {{{{ task_title }}}}", body="later"
            )
        task = Task.objects.create(user=user, title="Delayed")
        with transaction.atomic():  # one firing of each trigger, as Task.complete() does
            rows = [fire_task_completed(task, events[name])[0] for name in events]
        on_time, turns_false = wait_dispatched(harness, rows)
        Flag.set("delay-turns-false", False)

        due = min(on_time.due_at, turns_false.due_at)  # statement times of one transaction
        assert db_now() < due - dt.timedelta(seconds=1), "dispatch took most of the delay"
        while db_now() < due - dt.timedelta(milliseconds=300):
            assert not SentEmail.objects.exists()
            assert set(
                OutboxRow.objects.filter(pk__in=[on_time.pk, turns_false.pk]).values_list(
                    "state", flat=True
                )
            ) == {"dispatched"}
            time.sleep(0.2)

        on_time, turns_false = wait_final(harness, [on_time, turns_false])
        assert (on_time.state, on_time.skip_reason) == ("done", None), on_time.last_error
        (email,) = SentEmail.objects.all()
        assert email.subject == "stays-true: Delayed"
        assert email.sent_at >= on_time.due_at
        assert on_time.finished_at >= on_time.due_at
        assert ledger_of(on_time) == [
            (actions["stays-true"].pk, 0, key_of(on_time, actions["stays-true"]))
        ]
        assert action_count(events["stays-true"].trigger, user) == 1

        assert (turns_false.state, turns_false.skip_reason) == ("skipped", "condition_false")
        assert ledger_of(turns_false) == []
        assert action_count(events["turns-false"].trigger, user) == 0

        (timer,) = timer_durations(harness.history(on_time.workflow_id))
        assert dt.timedelta(seconds=2) < timer <= delay

    def test_python_worker_killed_inside_the_action_transaction(self, harness: Harness) -> None:
        """guarantees §3.4, §3.6: the Python worker is SIGKILLed while the action has written its
        row but not committed: the write rolls back with the connection; the lost attempt
        stops heartbeating and is retried after the 5 s heartbeat timeout, not the 120 s
        start-to-close timeout, and the write is there exactly once, the row `done`.

        The action sleeps for longer than the heartbeat timeout, so the attempt that is not
        killed shows that the worker's heartbeats keep a long action alive. Before the
        heartbeat, the retry came after the start-to-close timeout: the 60 s wait failed."""
        user = make_user("worker-crash")
        trigger = make_trigger("e2e worker crash")
        event = task_event(trigger, dt.timedelta())
        action = record_action(trigger, "slow", sleep_seconds=8)
        (row,) = fire(event, user, task_id=1, task_title="t", task_important=False)
        key = key_of(row, action)

        (first,) = harness.wait(
            lambda: harness.journal_entries("action_wrote", key=key),
            what="the action inside its transaction",
            timeout=30,
        )
        assert writes_of(key) == []  # written, not committed: invisible to others
        killed = harness.worker.pid
        assert first["pid"] == killed
        harness.worker.kill()
        harness.start_worker()

        (row,) = wait_final(harness, [row], timeout=60)
        assert (row.state, row.skip_reason, row.last_error) == ("done", None, None)
        (write,) = writes_of(key)
        assert write.action_id == action.pk
        assert ledger_of(row) == [(action.pk, 0, key)]
        assert action_count(trigger, user) == 1
        wrote = harness.journal_entries("action_wrote", key=key)
        assert [entry["pid"] for entry in wrote] == [killed, harness.worker.pid]
        assert [e["pid"] for e in harness.journal_entries("action_returned", key=key)] == [
            harness.worker.pid
        ]
        assert perform_attempts(harness, row) == [2]
        (scheduled, started) = perform_events(harness, row)
        assert scheduled.activity_task_scheduled_event_attributes.heartbeat_timeout.seconds == 5
        timed_out = started.activity_task_started_event_attributes.last_failure
        assert timed_out.timeout_failure_info.timeout_type == TimeoutType.TIMEOUT_TYPE_HEARTBEAT

    def test_python_worker_sigterm_lets_the_running_action_finish(self, harness: Harness) -> None:
        """guarantees §5.4, §3.4: SIGTERM stops the Python worker gracefully: the action in flight
        commits and its result is reported (one attempt, no retry), and the worker exits 0
        within its shutdown bound (TRIGGER_RELAY_WORKER_SHUTDOWN_SECONDS=5)."""
        user = make_user("worker-sigterm")
        trigger = make_trigger("e2e worker sigterm")
        event = task_event(trigger, dt.timedelta())
        action = record_action(trigger, "slow", sleep_seconds=2)
        (row,) = fire(event, user, task_id=1, task_title="t", task_important=False)
        key = key_of(row, action)
        harness.wait(
            lambda: harness.journal_entries("action_wrote", key=key),
            what="the action inside its transaction",
            timeout=30,
        )
        assert writes_of(key) == []

        started = time.monotonic()
        harness.worker.terminate(timeout=30)
        stopped_after = time.monotonic() - started
        assert harness.worker.process is not None
        assert harness.worker.process.returncode == 0, harness.worker.tail()
        assert stopped_after < 5 + 3
        assert len(writes_of(key)) == 1  # committed before the worker exited

        (row,) = wait_final(harness, [row], allow_dead=[harness.worker])
        assert (row.state, row.skip_reason, row.last_error) == ("done", None, None)
        assert ledger_of(row) == [(action.pk, 0, key)]
        assert action_count(trigger, user) == 1
        assert perform_attempts(harness, row) == [1]
        harness.start_worker()

    @pytest.mark.parametrize("moment", ["while_performing", "after_commit"])
    def test_daemon_killed_around_the_perform(self, harness: Harness, moment: str) -> None:
        """guarantees §3.4, §5.1: the daemon (relay + workflow worker) is SIGKILLed while the
        Python activity runs, or right after its transaction committed; restarted, it
        resumes the workflow: the action is performed exactly once and the row ends done."""
        user = make_user(f"daemon-crash-{moment}")
        trigger = make_trigger(f"e2e daemon crash {moment}")
        event = task_event(trigger, dt.timedelta())
        action = record_action(trigger, "slow", sleep_seconds=2)
        (row,) = fire(event, user, task_id=1, task_title="t", task_important=False)
        key = key_of(row, action)

        harness.wait(
            lambda: harness.journal_entries("action_wrote", key=key),
            what="the action inside its transaction",
            timeout=30,
        )
        if moment == "after_commit":
            harness.wait(lambda: writes_of(key), what="the action's commit", interval=0.02)
        harness.daemon.kill()
        if moment == "while_performing":
            # The Python worker finishes the activity without the daemon, and the row says
            # done with the action's commit (the activity records it)...
            harness.wait(
                lambda: writes_of(key),
                what="the action's commit",
                allow_dead=[harness.daemon],
            )
            assert OutboxRow.objects.get(pk=row.pk).state == "done"
        # ...and the workflow, resumed by the restarted daemon, completes without a second
        # perform.
        harness.start_daemon()

        (row,) = wait_final(harness, [row], timeout=60)
        assert (row.state, row.skip_reason, row.last_error) == ("done", None, None)
        assert len(writes_of(key)) == 1
        assert ledger_of(row) == [(action.pk, 0, key)]
        assert action_count(trigger, user) == 1
        assert len(harness.journal_entries("action_wrote", key=key)) == 1
        assert perform_attempts(harness, row) == [1]

    def test_concurrent_firings_respect_the_action_count_cap(self, harness: Harness) -> None:
        """guarantees §3.3: 20 firings for one user of a trigger with ActionCountCondition(limit=1),
        due at the same moment and checked by the worker's threads at the same time: the
        action is performed once (dj-triggers on Celery: 19-20)."""
        firings = 20
        user = make_user("concurrent")
        trigger = make_trigger("e2e concurrent cap")
        event = task_event(trigger, dt.timedelta(seconds=2))
        ActionCountCondition.objects.create(trigger=trigger, limit=1)
        probe = ProbeCondition.objects.create(trigger=trigger, sleep_seconds=0.3)
        action = record_action(trigger, "capped")
        rows = [
            row
            for number in range(firings)
            for row in fire(event, user, task_id=number, task_title="t", task_important=False)
        ]
        assert len(rows) == firings

        rows = wait_final(harness, rows, timeout=90)
        states = sorted((row.state, row.skip_reason or "") for row in rows)
        assert states == [("done", "")] + [("skipped", "user_filtered_out")] * (firings - 1)
        (done,) = (row for row in rows if row.state == "done")
        (write,) = ActionWrite.objects.filter(action=action)
        assert write.idempotency_key == key_of(done, action)
        assert len(harness.journal_entries("action_wrote", action=action.pk)) == 1
        assert list(
            LedgerEntry.objects.filter(outbox_id__in=[r.pk for r in rows]).values_list(
                "outbox_id", "action_id"
            )
        ) == [(done.pk, action.pk)]
        assert action_count(trigger, user) == 1
        # The firings really were checked concurrently (TRIGGER_RELAY_WORKER_CONCURRENCY,
        # default 8), so the cap was tested under contention.
        overlap = max_overlap(harness.journal_entries(condition=probe.pk))
        assert overlap >= 3, f"at most {overlap} firing(s) checked at once"

    def test_replay_of_a_done_row_performs_nothing_again(self, harness: Harness) -> None:
        """guarantees §4.6, §3.4: `trigger-relay replay --id N` of a done row runs a new workflow
        (generation 1) that finds the action in the ledger: the row ends done, no second
        mail, the ledger and the Activity's count unchanged."""
        user = make_user("replay-done")
        trigger = make_trigger("e2e replay done")
        event = task_event(trigger, dt.timedelta())
        action = SendEmailAction.objects.create(
            trigger=trigger, subject="Once: {{ task_title }}", body="once"
        )
        (row,) = fire(event, user, task_id=1, task_title="replayed", task_important=False)
        (row,) = wait_final(harness, [row])
        assert row.state == "done", row.last_error
        first_workflow = row.workflow_id
        emails = list(SentEmail.objects.values_list("pk", "subject"))
        assert [subject for _, subject in emails] == ["Once: replayed"]
        ledger = list(LedgerEntry.objects.filter(outbox_id=row.pk).values())
        assert [(e["action_id"], e["generation"]) for e in ledger] == [(action.pk, 0)]

        replayed = replay(harness, row)
        assert replayed == {"id": row.pk, "state": "done", "generation": 0, "new_generation": 1}

        (row,) = wait_final(harness, [row], generation=1)
        assert (row.state, row.skip_reason, row.last_error) == ("done", None, None)
        assert row.workflow_id == f"{harness.workflow_id_prefix}-{row.pk}-g1-{row.firing_uuid}"
        assert row.workflow_id != first_workflow
        assert list(SentEmail.objects.values_list("pk", "subject")) == emails
        assert list(LedgerEntry.objects.filter(outbox_id=row.pk).values()) == ledger
        assert action_count(trigger, user) == 1
        result = harness.result(row.workflow_id)
        assert (result["state"], result["generation"], result["performed"]) == ("done", 1, [])

    def test_the_activity_records_the_outcome_in_the_firings_transaction(
        self, harness: Harness
    ) -> None:
        """docs/performance.md: the workflow asks perform_firing to record the outcome
        (``record_outcome`` in its input). The activity writes ``done`` in the transaction that
        performed the action (the row's finished_at is the ledger entry's performed_at: the same
        transaction's now()) and ``skipped`` on its own, and the workflow schedules no
        record_outcome activity; and no patch marker is written (the heartbeat patch is retired): a
        firing without delay is 5 events besides its workflow tasks (11 in all with two clean
        workflow tasks; 13 with the marker, 19 when the daemon recorded). The daemon still counts
        both outcomes."""
        before = outcome_counts(harness)
        user = make_user("recorded-by-perform")
        done_trigger = make_trigger("e2e recorded done")
        done_event = task_event(done_trigger, dt.timedelta())
        action = SendEmailAction.objects.create(
            trigger=done_trigger, subject="Recorded: {{ task_title }}", body="b"
        )
        skip_trigger = make_trigger("e2e recorded skipped")
        skip_event = task_event(skip_trigger, dt.timedelta(seconds=3))
        SendEmailAction.objects.create(trigger=skip_trigger, subject="never", body="b")
        (done,) = fire(done_event, user, task_id=1, task_title="t", task_important=False)
        (skipped,) = fire(skip_event, user, task_id=2, task_title="t", task_important=False)
        Trigger.objects.filter(pk=skip_trigger.pk).update(is_enabled=False)

        done, skipped = wait_final(harness, [done, skipped])
        assert (done.state, done.last_error) == ("done", None)
        assert (skipped.state, skipped.skip_reason) == ("skipped", "trigger_disabled")
        (entry,) = LedgerEntry.objects.filter(outbox_id=done.pk, action_id=action.pk)
        assert done.finished_at == entry.performed_at
        started = E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
        shapes = {
            done.pk: [started, *PERFORM, *COMPLETED],
            skipped.pk: [started, *TIMER, *PERFORM, *COMPLETED],
        }
        for row in (done, skipped):
            assert row.workflow_id
            # The activity makes the row final before the workflow's last task has run (CI
            # once read the history in between): wait for the workflow to close first.
            harness.result(row.workflow_id)
            history = harness.history(row.workflow_id)
            assert scheduled_activity_types(history) == [PERFORM_FIRING], describe_history(history)
            besides_tasks = [e.event_type for e in history if e.event_type not in TASK_EVENTS]
            assert besides_tasks == shapes[row.pk], describe_history(history)

        def counted() -> bool:
            # The workflow counts an outcome when its last task runs, after the row's commit.
            after = outcome_counts(harness)
            return all(after.get(s, 0) - before.get(s, 0) == 1 for s in ("done", "skipped"))

        harness.wait(counted, what="the daemon to count both outcomes", timeout=30)

    def test_replay_of_a_failed_row_performs_it_once(self, harness: Harness) -> None:
        """guarantees §3.4, §3.5, §4.6: a failing action fails the row at once with the error and
        its write rolled back; once the cause is fixed, a replay by hand performs it exactly
        once."""
        user = make_user("replay-failed")
        trigger = make_trigger("e2e replay failed")
        event = task_event(trigger, dt.timedelta())
        Flag.set("mail-server-down", True)
        action = record_action(trigger, "flaky", fail_while="mail-server-down")
        (row,) = fire(event, user, task_id=1, task_title="t", task_important=False)
        key = key_of(row, action)

        (row,) = wait_final(harness, [row], timeout=60)
        assert row.state == "failed"
        assert row.skip_reason is None
        assert row.last_error == (
            "RuntimeError: action 'flaky': flag 'mail-server-down' is on "
            f"(in action {action.pk}, RecordAction)"
        )
        failed = harness.journal_entries("action_failed", key=key)
        assert len(failed) == 1  # guarantees §3.5: an application error is not retried
        assert writes_of(key) == []  # each attempt's write rolled back
        assert ledger_of(row) == []
        assert action_count(trigger, user) == 0

        Flag.set("mail-server-down", False)
        assert replay(harness, row)["new_generation"] == 1
        (row,) = wait_final(harness, [row], generation=1, timeout=60)
        assert (row.state, row.skip_reason, row.last_error) == ("done", None, None)
        (write,) = writes_of(key)  # same idempotency key as generation 0's attempts
        assert write.action_id == action.pk
        assert ledger_of(row) == [(action.pk, 1, key)]
        assert action_count(trigger, user) == 1
        assert len(harness.journal_entries("action_returned", key=key)) == 1

    def test_failing_action_fails_the_firing_at_once(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        """guarantees §3.5: an action that has an effect outside the database (a line appended to a
        file, as an email handed to an SMTP server) and then raises fails the firing at once,
        as dj-triggers on Celery does: the effect happened once (not once per attempt), the
        row is failed with the exception's type, message and the action, and nothing of the
        attempt committed."""
        user, trigger, action, outside, key, row = fire_outside_effect(
            harness,
            tmp_path,
            "outside-effect-fails",
            "e2e outside effect then raise",
            then=OutsideEffectAction.RAISE,
        )

        assert outside.read_text().splitlines() == [f"{key} pid={harness.worker.pid}"]
        assert (row.state, row.skip_reason) == ("failed", None)
        assert row.last_error == (
            "ValueError: mail server refused recipient outside-effect-fails@example.com "
            f"(in action {action.pk}, OutsideEffectAction)"
        )
        assert perform_attempts(harness, row) == [1]
        assert len(harness.journal_entries("action_failed", key=key)) == 1
        assert ledger_of(row) == []
        assert action_count(trigger, user) == 0

    def test_dropped_connection_is_retried_and_performed_once(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        """guarantees §3.5, §3.4: an action whose database connection is terminated under it
        (pg_terminate_backend from another connection, as a failover would) fails with an
        infrastructure error: the attempt is retried on a new connection and the action is
        performed once: one committed write, one ledger entry, the count moved once, and its
        outside effect, deferred with transaction.on_commit, happened once."""
        user, trigger, action, outside, key, row = fire_outside_effect(
            harness,
            tmp_path,
            "dropped-connection",
            "e2e dropped connection",
            then=OutsideEffectAction.DROP_CONNECTION_ONCE,
            on_commit=True,
        )

        assert (row.state, row.skip_reason, row.last_error) == ("done", None, None)
        assert perform_attempts(harness, row) == [2]  # the history keeps the last attempt
        assert len(harness.journal_entries("connection_dropped", key=key)) == 1
        assert len(harness.journal_entries("action_returned", key=key)) == 1
        assert list(OutsideEffectWrite.objects.values_list("idempotency_key", flat=True)) == [key]
        assert outside.read_text().splitlines() == [f"{key} pid={harness.worker.pid}"]
        assert ledger_of(row) == [(action.pk, 0, key)]
        assert action_count(trigger, user) == 1

    def test_application_errors_are_retried_when_the_site_opts_in(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        """guarantees §3.5: with TRIGGER_RELAY_RETRY_APPLICATION_ERRORS on, the failing action of
        ``test_failing_action_fails_the_firing_at_once`` is retried up to the daemon's
        TRIGGER_RELAY_PERFORM_MAX_ATTEMPTS: its outside effect happens once per attempt (the
        reason it is off by default), and the row is failed with the same error."""
        harness.worker.terminate()
        harness.start_worker(TRIGGER_RELAY_RETRY_APPLICATION_ERRORS="true")
        try:
            user, trigger, action, outside, key, row = fire_outside_effect(
                harness,
                tmp_path,
                "outside-effect-retried",
                "e2e outside effect retried",
                then=OutsideEffectAction.RAISE,
            )

            line = f"{key} pid={harness.worker.pid}"
            assert outside.read_text().splitlines() == [line] * PERFORM_MAX_ATTEMPTS
            assert perform_attempts(harness, row) == [PERFORM_MAX_ATTEMPTS]
            assert (row.state, row.skip_reason) == ("failed", None)
            assert row.last_error == (
                "ValueError: mail server refused recipient outside-effect-retried@example.com "
                f"(in action {action.pk}, OutsideEffectAction)"
            )
            assert ledger_of(row) == []
            assert action_count(trigger, user) == 0
        finally:
            # The other tests run with the default.
            harness.worker.terminate()
            harness.start_worker()

    def test_replay_of_a_waiting_row_performs_it_once(self, harness: Harness) -> None:
        """guarantees §4.6, §3.4: `replay --include-dispatched` of a row whose workflow still waits
        on its timer starts generation 1 beside it; at due time the old workflow finds itself
        superseded and only the new one performs the action, once."""
        user = make_user("replay-waiting")
        trigger = make_trigger("e2e replay waiting")
        event = task_event(trigger, dt.timedelta(seconds=3))
        action = record_action(trigger, "once")
        (row,) = fire(event, user, task_id=1, task_title="t", task_important=False)
        (row,) = wait_dispatched(harness, [row])
        first_workflow = row.workflow_id
        key = key_of(row, action)

        result = harness.cli("replay", "--id", str(row.pk))
        assert result.returncode == 0, result.stderr
        assert "replayed 0 row(s)" in result.stdout  # dispatched rows only on request
        replayed = replay(harness, row, "--include-dispatched")
        assert replayed == {
            "id": row.pk,
            "state": "dispatched",
            "generation": 0,
            "new_generation": 1,
        }

        (row,) = wait_final(harness, [row], generation=1)
        assert (row.state, row.skip_reason, row.last_error) == ("done", None, None)
        old = harness.result(first_workflow)
        assert (old["state"], old["reason"], old["generation"]) == ("skipped", "superseded", 0)
        assert len(writes_of(key)) == 1
        assert len(harness.journal_entries("action_wrote", key=key)) == 1
        assert ledger_of(row) == [(action.pk, 1, key)]
        assert action_count(trigger, user) == 1

    def test_several_actions_performed_in_id_order_once_each(self, harness: Harness) -> None:
        """guarantees §2.1, §3.2, §3.4 on dj-triggers main: a trigger with several actions performs
        all of them, in id order (not creation order), each once, and counts one action."""
        if not several_actions_per_trigger():
            pytest.skip("dj-triggers 1.0.1 has one action per trigger (DJT_SCHEMA=main only)")
        user = make_user("several")
        trigger = make_trigger("e2e several actions")
        event = task_event(trigger, dt.timedelta())
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence('triggers_action', 'id')) "
                "FROM generate_series(1, 3)"
            )
            low, middle, high = sorted(pk for (pk,) in cursor.fetchall())
        # Created in another order than their ids.
        third = record_action(trigger, "third", pk=high)
        first = record_action(trigger, "first", pk=low)
        second = SendEmailAction.objects.create(
            pk=middle, trigger=trigger, subject="second: {{ task_title }}", body="b"
        )
        (row,) = fire(event, user, task_id=1, task_title="many", task_important=False)
        (row,) = wait_final(harness, [row])

        assert (row.state, row.skip_reason) == ("done", None), row.last_error
        actions = [first, second, third]
        assert ledger_of(row) == [(a.pk, 0, key_of(row, a)) for a in actions]
        writes = list(ActionWrite.objects.values_list("label", "idempotency_key"))
        assert writes == [("first", key_of(row, first)), ("third", key_of(row, third))]
        (email,) = SentEmail.objects.all()
        assert email.context["trigger_relay_idempotency_key"] == key_of(row, second)
        # Order across the two kinds of action: the record actions journal when they write,
        # the mail keeps its time of writing (one clock, the worker's).
        (wrote_first,) = harness.journal_entries("action_wrote", action=first.pk)
        (wrote_third,) = harness.journal_entries("action_wrote", action=third.pk)
        assert wrote_first["t"] < email.sent_at.timestamp() < wrote_third["t"]
        assert action_count(trigger, user) == 1
        result = harness.result(row.workflow_id)
        assert result["performed"] == [first.pk, second.pk, third.pk]

    def test_integer_beyond_64_bits_reaches_the_action_exactly(self, harness: Harness) -> None:
        """guarantees §2.2: an integer context value beyond 64 bits (2**70) goes through the outbox,
        the daemon (which passes the context on as raw JSON), Temporal and the Python worker,
        and the action receives exactly that int (not a float, not a rounded value)."""
        exact = 2**70
        assert exact == 1180591620717411303424
        user = make_user("big-int")
        trigger = make_trigger("e2e big integer")
        event = task_event(trigger, dt.timedelta())
        SendEmailAction.objects.create(
            trigger=trigger, subject="n={{ n }}", body="{{ n }} {{ negative }} {{ nested.0 }}"
        )
        (row,) = fire(event, user, n=exact, negative=-exact, nested=[exact])

        (row,) = wait_final(harness, [row])

        assert (row.state, row.skip_reason, row.last_error) == ("done", None, None)
        # Hop by hop, in the order of the trip, so that a failure says which one rounded it:
        # the relay's start of the workflow, then the workflow's call of perform_firing.
        history = harness.history(row.workflow_id)
        (started,) = events_of(history, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)
        hops = [("workflow input", started.workflow_execution_started_event_attributes.input)]
        hops += [
            ("perform_firing input", scheduled.activity_task_scheduled_event_attributes.input)
            for scheduled in events_of(history, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
            if scheduled.activity_task_scheduled_event_attributes.activity_type.name
            == PERFORM_FIRING
        ]
        assert [name for name, _ in hops] == ["workflow input", "perform_firing input"]
        for name, payloads in hops:
            data = payloads.payloads[0].data
            # An int, not a float: 2**70 is a power of two, so the float compares equal.
            n = json.loads(json.loads(data)["context_json"])["n"]
            assert (type(n), n) == (int, exact), f"{name}: {data!r}"
        # What the action got: an int, exactly (Django renders a float 1.18e21 as
        # 1180591620717411300000).
        (email,) = SentEmail.objects.filter(user=user)
        assert email.subject == "n=1180591620717411303424"
        assert email.body == "1180591620717411303424 -1180591620717411303424 1180591620717411303424"
        received = email.context
        assert (type(received["n"]), received["n"]) == (int, exact)
        assert (received["negative"], received["nested"]) == (-exact, [exact])

    def test_context_depth_limit_is_the_daemons(self, harness: Harness) -> None:
        """guarantees §2.2, §4.5: the deepest context fire() accepts (MAX_CONTEXT_DEPTH levels, the
        context object being the first) is relayed and reaches the action unchanged; one
        level more, written to the outbox without fire(), is failed by the daemon with a
        reason naming the context column. So fire() refuses exactly what the relay would."""
        user = make_user("deep-context")
        trigger = make_trigger("e2e deep context")
        event = task_event(trigger, dt.timedelta())
        SendEmailAction.objects.create(trigger=trigger, subject="deep", body="deep")
        deepest = nested_value(MAX_CONTEXT_DEPTH - 1)  # + the context object = the limit
        (accepted,) = fire(event, user, deep=deepest)
        with pytest.raises(TypeError, match="MAX_CONTEXT_DEPTH"):
            fire(event, user, deep=[deepest])
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, context, due_at)"
                " VALUES (%s, %s, %s, %s::jsonb, now()) RETURNING id",
                [event.pk, trigger.pk, str(user.pk), json.dumps({"deep": [deepest]})],
            )
            (too_deep_id,) = cursor.fetchone()

        accepted, too_deep = wait_final(harness, [accepted, OutboxRow(pk=too_deep_id)])

        assert (accepted.state, accepted.last_error) == ("done", None)
        (email,) = SentEmail.objects.filter(user=user)
        assert email.context["deep"] == deepest
        assert too_deep.state == "failed"
        assert "context" in (too_deep.last_error or ""), too_deep.last_error

    def test_workflow_of_a_reused_row_id_performs_nothing(self, harness: Harness) -> None:
        """guarantees §4.3, §3.1, §3.4: a database restored to before a firing (its row gone, the id
        sequence set back) while the firing's workflow waits on its timer; a new firing then
        gets the same row id. The old workflow, due first, finds another firing in the row
        (firing_uuid) and performs nothing (skipped firing_mismatch) without recording
        anything on the new row; the new firing is performed once, at its own due time."""
        user = make_user("reused-id")
        trigger = make_trigger("e2e reused row id")
        action = record_action(trigger, "new firing only")
        old_event = task_event(trigger, dt.timedelta(seconds=3))
        (old,) = fire(old_event, user, task_id=1, task_title="old", task_important=False)
        (old,) = wait_dispatched(harness, [old])
        old_workflow = old.workflow_id
        assert old.firing_uuid is not None
        assert old_workflow == f"{harness.workflow_id_prefix}-{old.pk}-g0-{old.firing_uuid}"

        # The restore: the row is gone and the sequence hands its id out again.
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE trigger_relay_outbox CASCADE")
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('trigger_relay_outbox', 'id'), %s, false)",
                [old.pk],
            )
        new_event = task_event(trigger, dt.timedelta(seconds=10))
        (new,) = fire(new_event, user, task_id=2, task_title="new", task_important=False)
        assert new.pk == old.pk
        assert new.firing_uuid not in (None, old.firing_uuid)
        (new,) = wait_dispatched(harness, [new])
        assert new.workflow_id not in (None, old_workflow)

        old_result = harness.wait(
            lambda: _closed_result(harness, old_workflow), what="the old workflow's result"
        )
        assert (old_result["state"], old_result["reason"]) == ("skipped", "firing_mismatch")
        assert db_now() < new.due_at, "the old workflow took as long as the new delay; raise it"
        key = key_of(new, action)
        assert writes_of(key) == []
        assert harness.journal_entries("action_wrote", action=action.pk) == []
        current = OutboxRow.objects.get(pk=new.pk)
        assert (current.state, current.skip_reason, current.workflow_id) == (
            "dispatched",
            None,
            new.workflow_id,
        )

        (new,) = wait_final(harness, [new])
        assert (new.state, new.skip_reason, new.last_error) == ("done", None, None)
        (write,) = writes_of(key)
        assert write.written_at >= new.due_at
        assert ledger_of(new) == [(action.pk, 0, key)]
        assert action_count(trigger, user) == 1


# -- tests on the persistent server, restarted ----------------------------------------------


class TestDurableTimer:
    def test_week_long_timer_survives_restarts_then_cancel(
        self, persistent_harness: Harness
    ) -> None:
        """guarantees §5.1: a 7-day delay is a durable timer in Temporal's history; the daemon
        (SIGKILL) and the dev server (SIGKILL, SQLite file) restart and the workflow still
        waits on it; `trigger-relay cancel` then stops it: row cancelled, nothing performed."""
        harness = persistent_harness
        delay = dt.timedelta(days=7)
        user = make_user("week")
        trigger = make_trigger("e2e week-long delay")
        event = task_event(trigger, delay)
        action = record_action(trigger, "a week later")
        (row,) = fire(event, user, task_id=1, task_title="t", task_important=False)
        (row,) = wait_dispatched(harness, [row])
        key = key_of(row, action)

        history = harness.wait(
            lambda: timer_durations(h := harness.history(row.workflow_id)) and h,
            what="the workflow's timer",
            timeout=30,
        )
        (timer,) = timer_durations(history)
        assert delay - dt.timedelta(minutes=1) < timer <= delay

        harness.daemon.kill()
        harness.temporal.kill()
        harness.start_temporal()
        harness.start_daemon()

        description = harness.describe(row.workflow_id)
        assert description.status == WorkflowExecutionStatus.RUNNING
        assert description.run_id == row.run_id
        history = harness.history(row.workflow_id)
        assert timer_durations(history) == [timer]
        for ended in (EventType.EVENT_TYPE_TIMER_FIRED, EventType.EVENT_TYPE_TIMER_CANCELED):
            assert events_of(history, ended) == [], describe_history(history)
        assert OutboxRow.objects.get(pk=row.pk).state == "dispatched"

        result = harness.cli(
            "cancel",
            "--id",
            str(row.pk),
            "--temporal-address",
            f"http://{harness.temporal.address}",
            "--json",
        )
        assert result.returncode == 0, result.stderr
        (cancelled,) = json.loads(result.stdout)["rows"]
        assert cancelled["previous_state"] == "dispatched"
        assert cancelled["action"] == "workflow cancellation requested"

        (row,) = wait_final(harness, [row], timeout=30)
        assert row.state == "cancelled"
        assert row.finished_at is not None
        history = harness.history(row.workflow_id)
        assert events_of(history, EventType.EVENT_TYPE_TIMER_CANCELED), describe_history(history)
        assert PERFORM_FIRING not in scheduled_activity_types(history)
        assert harness.describe(row.workflow_id).status in (
            WorkflowExecutionStatus.COMPLETED,
            WorkflowExecutionStatus.CANCELED,
        )
        assert writes_of(key) == []
        assert harness.journal_entries(key=key) == []
        assert ledger_of(row) == []
        assert action_count(trigger, user) == 0

    def test_timer_due_while_everything_is_down_performs_once(
        self, persistent_harness: Harness
    ) -> None:
        """guarantees §5.1, §3.4: the daemon is SIGKILLed and the dev server stopped during a 5 s
        delay, which ends while both are down; restarted, the timer fires and the action is
        performed exactly once."""
        harness = persistent_harness
        delay = dt.timedelta(seconds=5)
        user = make_user("restart")
        trigger = make_trigger("e2e restart during delay")
        event = task_event(trigger, delay)
        action = record_action(trigger, "after restart")
        (row,) = fire(event, user, task_id=1, task_title="t", task_important=False)
        (row,) = wait_dispatched(harness, [row])
        key = key_of(row, action)
        harness.wait(
            lambda: timer_durations(harness.history(row.workflow_id)),
            what="the workflow's timer",
            timeout=30,
        )

        harness.daemon.kill()
        harness.temporal.terminate()
        while db_now() < row.due_at + dt.timedelta(seconds=1):
            time.sleep(0.2)
        assert writes_of(key) == []
        assert harness.journal_entries(key=key) == []
        harness.start_temporal()
        harness.start_daemon()

        (row,) = wait_final(harness, [row], timeout=60)
        assert (row.state, row.skip_reason, row.last_error) == ("done", None, None)
        assert len(writes_of(key)) == 1
        assert len(harness.journal_entries("action_wrote", key=key)) == 1
        assert ledger_of(row) == [(action.pk, 0, key)]
        assert action_count(trigger, user) == 1
        history = harness.history(row.workflow_id)
        assert len(events_of(history, EventType.EVENT_TYPE_TIMER_FIRED)) == 1
        assert scheduled_activity_types(history).count(PERFORM_FIRING) == 1


# -- more helpers --------------------------------------------------------------------------


def replay(harness: Harness, row: OutboxRow, *options: str) -> dict[str, Any]:
    """`trigger-relay replay --id N --json`; returns the replayed row's summary."""
    result = harness.cli("replay", "--id", str(row.pk), "--json", *options)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["dry_run"] is False
    (replayed,) = document["rows"]
    return {key: replayed[key] for key in ("id", "state", "generation", "new_generation")}


def nested_value(levels: int) -> Any:
    """``levels`` lists inside each other around a str holding brackets (which the daemon's
    count must skip), built without recursion."""
    value: Any = "[{"
    for _ in range(levels):
        value = [value]
    return value


def _closed_result(harness: Harness, workflow_id: str) -> dict[str, Any] | None:
    """The workflow's result once it has completed, else None."""
    if harness.describe(workflow_id).status != WorkflowExecutionStatus.COMPLETED:
        return None
    return harness.result(workflow_id)  # type: ignore[no-any-return]


def max_overlap(entries: list[dict[str, Any]]) -> int:
    """Most ``condition_enter``…``condition_exit`` intervals open at one time."""
    steps = sorted(
        (entry["t"], 1 if entry["what"] == "condition_enter" else -1) for entry in entries
    )
    running = best = 0
    for _, step in steps:
        running += step
        best = max(best, running)
    return best
