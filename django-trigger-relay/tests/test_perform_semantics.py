"""dj-triggers semantics of ``perform()`` that retries must not change (guarantees §3.2, §3.4,
§3.5).

- Only a missing action means "no action": a database error reading the trigger's action
  propagates (and is retried), it is not a permanent ``skipped: no_actions``.
- The ledger is read before anything that an earlier, committed attempt may have changed
  (the trigger's ``is_enabled``, the conditions, which see that attempt's count): a firing
  whose actions are all in the ledger is ``done`` with ``already_performed``.
- ``Activity.Cancel`` (guarantees §3.2), raised by an action, a condition or ``get_user_context``,
  stops the firing: ``skipped: cancelled``, nothing after it performed, the count unchanged.

``perform()`` runs here in the test process on the real test database (PostgreSQL).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ObjectDoesNotExist
from django.db import OperationalError
from django.db import connection
from django.test import override_settings
from relay_e2e.models import FlagCondition
from tasks.models import SendEmailAction
from tasks.models import SentEmail
from tasks.models import TaskCompletedEvent
from tests_support.factories import make_trigger
from tests_support.factories import several_actions_per_trigger
from tests_support.firings import workflow_input
from triggers.models import ActionCountCondition
from triggers.models import Activity
from triggers.models import Trigger

from trigger_relay.models import LedgerEntry
from trigger_relay.models import OutboxRow
from trigger_relay.perform.activity import activity_failure
from trigger_relay.perform.core import actions_of
from trigger_relay.perform.core import perform

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("_route_to_temporal"),
]


@pytest.fixture
def _route_to_temporal() -> Iterator[None]:
    with override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal"):
        yield


def fire(user: Any, name: str = "Firing", *, actions: int = 1) -> tuple[dict[str, Any], Any]:
    event = make_trigger(name, actions=actions)
    event.fire_single(user.pk, task_id=1, task_title="Ship it", task_important=False)
    return workflow_input(OutboxRow.objects.get(event_id=event.pk)), event


def action_ids(event: Any) -> list[int]:
    return list(
        SendEmailAction.objects.filter(trigger_id=event.trigger_id)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def ledger(firing: dict[str, Any]) -> list[int]:
    return sorted(
        LedgerEntry.objects.filter(outbox_id=firing["outbox_id"]).values_list(
            "action_id", flat=True
        )
    )


def action_count(event: Any, user: Any) -> int:
    activity = Activity.objects.filter(trigger_id=event.trigger_id, user_id=user.pk).first()
    return 0 if activity is None else activity.action_count


# -- only a missing action means "no action" ----------------------------------------------


class _Trigger101:
    """A dj-triggers 1.0.1 trigger (one-to-one ``action``) whose action raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    @property
    def action(self) -> Any:
        raise self.error


def test_missing_one_to_one_action_is_no_action() -> None:
    assert actions_of(_Trigger101(SendEmailAction.DoesNotExist())) == []
    assert actions_of(_Trigger101(ObjectDoesNotExist())) == []


def test_database_error_reading_the_action_is_not_no_action() -> None:
    """Before: ``except Exception`` returned [] (a permanent ``skipped: no_actions``)."""
    with pytest.raises(OperationalError):
        actions_of(_Trigger101(OperationalError("server closed the connection")))


def test_trigger_without_actions_is_skipped(user: Any) -> None:
    firing, event = fire(user)
    SendEmailAction.objects.filter(trigger_id=event.trigger_id).delete()

    result = perform(firing)

    assert (result.outcome, result.reason) == ("skipped", "no_actions")


def test_database_error_reading_the_action_propagates_and_is_retried(
    user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A passing OperationalError while the actions are read fails the attempt with a
    retryable error; the row is not skipped for good. Before (dj-triggers 1.0.1):
    ``skipped: no_actions``."""
    firing, _ = fire(user)
    error = OperationalError("server closed the connection unexpectedly")

    def broken(self: Any) -> Any:
        raise error

    if several_actions_per_trigger():
        monkeypatch.setattr(Trigger, "actions", property(broken))
    else:
        monkeypatch.setattr(Trigger, "action", property(broken))

    with pytest.raises(OperationalError) as raised:
        perform(firing)

    assert raised.value is error
    assert not activity_failure(raised.value).non_retryable
    assert not SentEmail.objects.exists()


# -- the ledger before the checks ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_retry_overlapping_a_running_first_attempt_reports_already_performed(
    tx_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry started while the first attempt still runs (start-to-close expired) passes
    the checks before the lock, then waits on ``Activity.lock`` until the first attempt
    commits its ledger entry and its count (which now fails ``ActionCountCondition``
    (limit=1)). The retry reports ``done``/``already_performed``. Before: ``skipped:
    user_filtered_out`` although the action was performed.

    Two threads, two connections, as two workers: the first attempt holds the lock inside
    its action until the retry is seen waiting for that lock in pg_stat_activity."""
    user = tx_user
    firing, event = fire(user)
    ActionCountCondition.objects.create(trigger_id=event.trigger_id, limit=1)
    real_perform = SendEmailAction.perform
    in_action = threading.Event()
    release = threading.Event()

    def held_open(self: SendEmailAction, user: Any, context: Any) -> None:
        real_perform(self, user, context)
        in_action.set()
        assert release.wait(60), "the retry never waited for the lock"

    monkeypatch.setattr(SendEmailAction, "perform", held_open)
    outcomes: dict[str, Any] = {}

    def attempt(name: str) -> None:
        try:
            outcomes[name] = perform(firing)
        finally:
            connection.close()

    first = threading.Thread(target=attempt, args=("first",))
    first.start()
    assert in_action.wait(60)
    retry = threading.Thread(target=attempt, args=("retry",))
    retry.start()
    _wait_for_a_lock_wait()
    release.set()
    first.join(60)
    retry.join(60)

    (action,) = action_ids(event)
    assert (outcomes["first"].outcome, outcomes["first"].performed) == ("done", [action])
    assert (outcomes["retry"].outcome, outcomes["retry"].reason) == ("done", None)
    assert (outcomes["retry"].performed, outcomes["retry"].already_performed) == ([], [action])
    assert SentEmail.objects.filter(user=user).count() == 1
    assert ledger(firing) == [action]
    assert action_count(event, user) == 1


def _wait_for_a_lock_wait() -> None:
    """Until a backend of this database waits for a lock (the retry, on Activity.lock)."""
    deadline = time.monotonic() + 60
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.05)
    raise AssertionError("no backend waited for a lock within 60 s")


def test_retry_after_commit_then_trigger_disabled_reports_already_performed(
    user: Any,
) -> None:
    """The worker crashed after the commit; the trigger was disabled before the retry.
    Before: ``skipped: trigger_disabled`` for a firing that was performed."""
    firing, event = fire(user)
    assert perform(firing).outcome == "done"
    Trigger.objects.filter(pk=event.trigger_id).update(is_enabled=False)

    retry = perform(firing)

    assert (retry.outcome, retry.reason) == ("done", None)
    assert (retry.performed, retry.already_performed) == ([], action_ids(event))
    assert SentEmail.objects.filter(user=user).count() == 1
    assert action_count(event, user) == 1


def test_skipped_replay_keeps_what_was_performed(
    user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dj-triggers main: the second action cancelled the firing after the first was
    performed; a replay after the trigger was disabled is skipped, and says that the first
    action was performed. Before: ``already_performed`` empty."""
    if not several_actions_per_trigger():
        pytest.skip("dj-triggers 1.0.1 has one action per trigger (DJT_SCHEMA=main only)")
    firing, event = fire(user, actions=2)
    first, second = action_ids(event)
    real_perform = SendEmailAction.perform

    def cancel_second(self: SendEmailAction, user: Any, context: Any) -> None:
        if self.pk == second:
            raise Activity.Cancel()
        real_perform(self, user, context)

    monkeypatch.setattr(SendEmailAction, "perform", cancel_second)
    cancelled = perform(firing)
    assert (cancelled.outcome, cancelled.reason) == ("skipped", "cancelled")
    assert (cancelled.performed, cancelled.already_performed) == ([first], [])

    monkeypatch.setattr(SendEmailAction, "perform", real_perform)
    Trigger.objects.filter(pk=event.trigger_id).update(is_enabled=False)
    replay = perform(firing)

    assert (replay.outcome, replay.reason) == ("skipped", "trigger_disabled")
    assert (replay.performed, replay.already_performed) == ([], [first])
    assert ledger(firing) == [first]


# -- Activity.Cancel (guarantees §3.2) ----------------------------------------------------


def test_action_raising_cancel_stops_the_rest_and_leaves_the_count(
    user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dj-triggers main: actions 1 and 3 of 3 perform normally, action 2 raises Cancel:
    action 1 is performed (committed with its ledger entry), action 3 is not, the count does
    not move. dj-triggers 1.0.1: the one action raises Cancel, nothing is performed."""
    several = several_actions_per_trigger()
    firing, event = fire(user, actions=3 if several else 1)
    ids = action_ids(event)
    cancelling = ids[1] if several else ids[0]
    real_perform = SendEmailAction.perform
    called: list[int] = []

    def perform_or_cancel(self: SendEmailAction, user: Any, context: Any) -> None:
        called.append(self.pk)
        if self.pk == cancelling:
            raise Activity.Cancel()
        real_perform(self, user, context)

    monkeypatch.setattr(SendEmailAction, "perform", perform_or_cancel)

    result = perform(firing)

    before = ids[: ids.index(cancelling)]
    assert (result.outcome, result.reason) == ("skipped", "cancelled")
    assert (result.performed, result.already_performed) == (before, [])
    assert called == [*before, cancelling]
    assert sorted(SentEmail.objects.values_list("action_id", flat=True)) == before
    assert ledger(firing) == before
    assert action_count(event, user) == 0


@pytest.mark.parametrize("when", ["before the lock", "under the lock"])
def test_condition_raising_cancel_cancels_the_firing(
    user: Any, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """Before: raised before the lock, Cancel failed the firing as a site error; raised
    under the lock (the re-check), ``Activity.lock`` swallowed it and the firing was
    ``done`` with nothing performed."""
    firing, event = fire(user)
    FlagCondition.objects.create(trigger_id=event.trigger_id, flag="f")
    calls: list[None] = []

    def is_satisfied(self: FlagCondition, user: Any) -> bool:
        calls.append(None)
        if when == "before the lock" or len(calls) > 1:
            raise Activity.Cancel()
        return True

    monkeypatch.setattr(FlagCondition, "is_satisfied", is_satisfied)

    result = perform(firing)

    assert (result.outcome, result.reason) == ("skipped", "cancelled")
    assert (result.performed, result.already_performed) == ([], [])
    assert not SentEmail.objects.exists()
    assert ledger(firing) == []
    assert action_count(event, user) == 0


def test_get_user_context_raising_cancel_cancels_the_firing(
    user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: ``Activity.lock`` swallowed it and the firing was ``done``, nothing
    performed."""
    firing, event = fire(user)

    def get_user_context(self: Any, user: Any, context: Any) -> dict[str, Any]:
        raise Activity.Cancel()

    monkeypatch.setattr(TaskCompletedEvent, "get_user_context", get_user_context)

    result = perform(firing)

    assert (result.outcome, result.reason) == ("skipped", "cancelled")
    assert (result.performed, result.already_performed) == ([], [])
    assert not SentEmail.objects.exists()
    assert action_count(event, user) == 0
