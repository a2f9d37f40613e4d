"""What ``perform_firing`` does when the firing raises (guarantees §3.5).

dj-triggers on Celery never retries a firing. An exception of the site's code (an action, a
condition, ``get_user_context``) therefore fails the firing at once: a non-retryable
Temporal ``ApplicationError`` whose message, recorded by the daemon as the row's
``last_error``, names the exception and where it was raised. Infrastructure errors (a lost
connection, a deadlock, a serialization failure) are retried;
``TRIGGER_RELAY_RETRY_APPLICATION_ERRORS`` retries the others too.

The activity runs here in the test process under Temporal's ``ActivityEnvironment`` (the
SDK's context for one activity call, no server), on the real test database; the whole path
through the daemon and a Temporal server is in test_e2e_workflow.py. Transactional tests:
the activity commits (``Activity.lock``) and runs Django's connection hygiene, as in the
worker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.errors
import pytest
from django.core import checks
from django.core import mail
from django.db import DataError
from django.db import IntegrityError
from django.db import InterfaceError
from django.db import OperationalError
from django.db import transaction
from django.test import override_settings
from relay_e2e.models import FlagCondition
from tasks.models import SendEmailAction
from tasks.models import SentEmail
from tasks.models import TaskCompletedEvent
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from tests_support.factories import make_trigger
from tests_support.factories import several_actions_per_trigger
from tests_support.firings import workflow_input
from triggers.models import Activity

from trigger_relay.checks import check_retry_setting
from trigger_relay.conf import RETRY_APPLICATION_ERRORS
from trigger_relay.models import LedgerEntry
from trigger_relay.models import OutboxRow
from trigger_relay.perform import metrics
from trigger_relay.perform.activity import MAX_ERROR_CHARS
from trigger_relay.perform.activity import activity_failure
from trigger_relay.perform.activity import failure_message
from trigger_relay.perform.activity import is_infrastructure_error
from trigger_relay.perform.activity import perform_firing


@pytest.fixture
def _route_to_temporal() -> Iterator[None]:
    with override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal"):
        yield


@pytest.fixture(autouse=True)
def _no_retry_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's environment, not the one pytest runs in, decides in these tests."""
    monkeypatch.delenv(RETRY_APPLICATION_ERRORS, raising=False)


#: Rendered into the subject of the example's SendEmailAction, a CharField(max_length=200):
#: the action's write fails with DataError (its mail, deferred with transaction.on_commit,
#: never goes out).
TOO_LONG_TITLE = "x" * 200


def fire(
    user: Any, name: str = "Failing firing", *, task_title: str = "Ship it"
) -> tuple[OutboxRow, TaskCompletedEvent]:
    """A fired row as the relay's claim leaves it (:func:`as_claimed`)."""
    event = make_trigger(name)
    with transaction.atomic():
        event.fire_single(user.pk, task_id=1, task_title=task_title, task_important=False)
    row = OutboxRow.objects.get(event_id=event.pk)
    as_claimed(row)
    return row, event


def as_claimed(row: OutboxRow) -> None:
    """Name the row's workflow as the relay's claim does: here the one
    ``ActivityEnvironment`` runs activities for."""
    OutboxRow.objects.filter(pk=row.pk).update(workflow_id=ActivityEnvironment().info.workflow_id)


def run_activity(row: OutboxRow) -> ApplicationError:
    """Run perform_firing for ``row``; it must fail: returns the error it raised."""
    as_claimed(row)
    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(perform_firing, workflow_input(row))
    return raised.value


def nothing_committed(row: OutboxRow, event: TaskCompletedEvent) -> bool:
    return (
        not SentEmail.objects.exists()
        and not LedgerEntry.objects.filter(outbox_id=row.pk).exists()
        and not Activity.objects.filter(trigger_id=event.trigger_id, action_count__gt=0).exists()
    )


# -- end to end through the activity -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_route_to_temporal")
class TestActivity:
    def test_action_error_fails_at_once_with_type_message_and_action(
        self, tx_user: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The issue's example: an action whose database write fails (a subject over 200
        characters) fails the firing without retry, and its write rolls back."""
        row, event = fire(tx_user, task_title=TOO_LONG_TITLE)
        (action,) = SendEmailAction.objects.filter(trigger_id=event.trigger_id)

        error = run_activity(row)

        assert error.non_retryable
        assert error.message == (
            "django.db.utils.DataError: value too long for type character varying(200) "
            f"(in action {action.pk}, SendEmailAction)"
        )
        assert error.__cause__ is None  # the daemon records the innermost message
        assert nothing_committed(row, event)
        assert mail.outbox == []

    def test_failing_second_action_rolls_back_the_first(
        self, tx_user: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """dj-triggers main: all actions of a firing run in Activity.lock's one transaction,
        so the first action's write and ledger entry roll back with the second's failure
        (the ledger holds only what committed), and its mail, deferred with on_commit, is
        never sent."""
        if not several_actions_per_trigger():
            pytest.skip("dj-triggers 1.0.1 has one action per trigger (DJT_SCHEMA=main only)")
        event = make_trigger("Two actions", actions=2)
        with transaction.atomic():
            event.fire_single(tx_user.pk, task_id=1, task_title="Ship it", task_important=False)
        row = OutboxRow.objects.get(event_id=event.pk)
        _, second = SendEmailAction.objects.filter(trigger_id=event.trigger_id).order_by("pk")
        perform = SendEmailAction.perform

        def perform_then_fail(self: SendEmailAction, user: Any, context: Any) -> None:
            perform(self, user, context)
            if self.pk == second.pk:
                raise RuntimeError("second action failed")

        monkeypatch.setattr(SendEmailAction, "perform", perform_then_fail)

        error = run_activity(row)

        assert error.non_retryable
        assert (
            error.message
            == f"RuntimeError: second action failed (in action {second.pk}, SendEmailAction)"
        )
        assert nothing_committed(row, event)
        assert mail.outbox == []

    def test_condition_error_names_the_condition(
        self, tx_user: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        row, event = fire(tx_user)
        condition = FlagCondition.objects.create(trigger_id=event.trigger_id, flag="f")

        def is_satisfied(self: FlagCondition, user: Any) -> bool:
            raise KeyError("plan")

        monkeypatch.setattr(FlagCondition, "is_satisfied", is_satisfied)

        error = run_activity(row)

        assert error.non_retryable
        assert error.message == f"KeyError: 'plan' (in condition {condition.pk}, FlagCondition)"
        assert nothing_committed(row, event)

    def test_get_user_context_error_names_the_event(
        self, tx_user: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        row, event = fire(tx_user)

        def get_user_context(self: Any, user: Any, context: Any) -> dict[str, Any]:
            raise LookupError("no profile")

        monkeypatch.setattr(TaskCompletedEvent, "get_user_context", get_user_context)

        error = run_activity(row)

        assert error.non_retryable
        assert error.message == (
            f"LookupError: no profile (in get_user_context of event {event.pk}, TaskCompletedEvent)"
        )
        assert nothing_committed(row, event)

    def test_on_commit_callback_error_comes_after_the_commit(
        self, tx_user: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An action's outside effect deferred with transaction.on_commit runs after the
        firing's transaction committed: if it raises, the row fails (an operator must hear of
        it) but the action is in the ledger, so a replay does not perform it again."""
        row, _ = fire(tx_user)
        perform = SendEmailAction.perform

        def perform_then_defer(self: SendEmailAction, user: Any, context: Any) -> None:
            perform(self, user, context)
            transaction.on_commit(lambda: 1 / 0)

        monkeypatch.setattr(SendEmailAction, "perform", perform_then_defer)

        error = run_activity(row)

        assert error.non_retryable
        assert error.message == (
            "ZeroDivisionError: division by zero (in the commit of the firing's transaction "
            "or a transaction.on_commit callback)"
        )
        (email,) = SentEmail.objects.all()
        assert list(LedgerEntry.objects.values_list("outbox_id", "action_id")) == [
            (row.pk, email.action_id)
        ]

    def test_operational_error_is_retried(
        self, tx_user: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        row, event = fire(tx_user)

        def perform(self: SendEmailAction, user: Any, context: Any) -> None:
            raise OperationalError("server closed the connection unexpectedly")

        monkeypatch.setattr(SendEmailAction, "perform", perform)

        error = run_activity(row)

        assert not error.non_retryable
        assert error.message.startswith(
            "django.db.utils.OperationalError: server closed the connection unexpectedly (in "
        )
        assert nothing_committed(row, event)

    @pytest.mark.parametrize(
        ("attempt", "maximum_attempts", "counted_as"),
        [
            (1, 3, "retryable"),
            (2, 3, "retryable"),
            (3, 3, "failed"),  # Temporal retries nothing after it: the firing fails
            (4, 3, "failed"),
            (7, 0, "retryable"),  # 0: no limit
            (1, 1, "failed"),
            (5, None, "retryable"),  # no retry policy in the task: Temporal's default, unlimited
        ],
    )
    def test_a_retryable_error_on_the_last_attempt_is_counted_failed(
        self,
        tx_user: Any,
        monkeypatch: pytest.MonkeyPatch,
        attempt: int,
        maximum_attempts: int | None,
        counted_as: str,
    ) -> None:
        """trigger_relay_worker_firings_total (guarantees §6.5): ``retryable`` only while
        Temporal will retry; the last attempt's retryable error fails the firing."""
        row, _ = fire(tx_user)

        def perform(self: SendEmailAction, user: Any, context: Any) -> None:
            raise OperationalError("server closed the connection unexpectedly")

        monkeypatch.setattr(SendEmailAction, "perform", perform)
        counted: list[tuple[str, str | None]] = []
        monkeypatch.setattr(
            metrics, "firing", lambda outcome, reason: counted.append((outcome, reason))
        )
        environment = ActivityEnvironment()
        environment.info = dataclasses.replace(
            environment.info,
            attempt=attempt,
            retry_policy=None
            if maximum_attempts is None
            else RetryPolicy(maximum_attempts=maximum_attempts),
        )

        with pytest.raises(ApplicationError) as raised:
            environment.run(perform_firing, workflow_input(row))

        assert not raised.value.non_retryable  # what Temporal decides from stays as it was
        assert counted == [(counted_as, "infrastructure_error")]

    @pytest.mark.parametrize(
        ("environ", "setting", "retried"),
        [
            (None, None, False),
            ("true", None, True),
            ("1", None, True),
            (None, True, True),
            (None, False, False),
            ("false", True, False),  # the environment wins
            ("", True, True),  # an empty variable is unset, as for every setting (conf.Layers)
            ("yes", False, True),
        ],
    )
    def test_site_opts_into_retrying_application_errors(
        self,
        tx_user: Any,
        monkeypatch: pytest.MonkeyPatch,
        environ: str | None,
        setting: bool | None,
        retried: bool,
    ) -> None:
        """Read at call time, from the environment or else the Django settings."""
        row, _ = fire(tx_user, task_title=TOO_LONG_TITLE)
        if environ is not None:
            monkeypatch.setenv(RETRY_APPLICATION_ERRORS, environ)
        settings = {} if setting is None else {RETRY_APPLICATION_ERRORS: setting}

        with override_settings(**settings):
            error = run_activity(row)

        assert error.non_retryable is not retried
        assert error.message.startswith("django.db.utils.DataError: value too long")


# -- the parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        OperationalError("server closed the connection unexpectedly"),
        InterfaceError("connection already closed"),
        psycopg.OperationalError("consuming input failed"),
        psycopg.InterfaceError("the connection is closed"),
        psycopg.errors.DeadlockDetected("deadlock detected"),
        psycopg.errors.SerializationFailure("could not serialize access"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_infrastructure_errors(exc: Exception) -> None:
    assert is_infrastructure_error(exc)


def _chained(outer: Exception, inner: Exception, *, cause: bool) -> Exception:
    try:
        try:
            raise inner
        except Exception as caught:
            if cause:
                raise outer from caught
            raise outer  # noqa: B904  (the implicit context is what is tested)
    except Exception as raised:
        return raised
    raise AssertionError("unreachable")


def test_infrastructure_error_inside_a_site_exception_counts() -> None:
    """Django raises its own errors from the driver's; site code wraps them too."""
    deadlock = psycopg.errors.DeadlockDetected("deadlock detected")
    assert is_infrastructure_error(_chained(RuntimeError("mail"), deadlock, cause=True))
    assert is_infrastructure_error(_chained(RuntimeError("mail"), deadlock, cause=False))


class _WithSqlstate(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "retried"),
    [("40001", True), ("40P01", True), ("08006", True), ("23505", False), ("22001", False)],
)
def test_sqlstate_of_any_exception_class(sqlstate: str, retried: bool) -> None:
    """A driver or wrapper that maps a serialization failure or a deadlock to another
    class (psycopg2's ``pgcode``, psycopg's ``sqlstate``) is still retried."""
    assert is_infrastructure_error(_WithSqlstate(sqlstate)) is retried


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("subject too long"),
        DataError("value too long for type character varying(200)"),
        IntegrityError("duplicate key value violates unique constraint"),
        psycopg.errors.UniqueViolation("duplicate key"),
        ConnectionError("mail server unreachable"),  # the site's own outside call
        _chained(KeyError("x"), ValueError("y"), cause=True),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_application_errors(exc: Exception) -> None:
    assert not is_infrastructure_error(exc)
    assert activity_failure(exc).non_retryable


def test_failure_message_without_text_and_too_long() -> None:
    assert failure_message(RuntimeError()) == "RuntimeError"
    long = failure_message(ValueError("x" * (MAX_ERROR_CHARS + 100)))
    assert long == "ValueError: " + "x" * MAX_ERROR_CHARS + "…"


def test_malformed_retry_setting_is_a_system_check_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A malformed setting is reported by ``manage.py check`` (which the worker runs at
    start); a failing firing then falls back to the default, never to repeating actions."""
    assert check_retry_setting() == []
    monkeypatch.setenv(RETRY_APPLICATION_ERRORS, "sometimes")
    (error,) = check_retry_setting()
    assert error.id == "trigger_relay.E007"
    assert error.level == checks.ERROR
    assert "TRIGGER_RELAY_RETRY_APPLICATION_ERRORS='sometimes'" in error.msg
    assert activity_failure(ValueError("x")).non_retryable
    monkeypatch.delenv(RETRY_APPLICATION_ERRORS)
    with override_settings(TRIGGER_RELAY_RETRY_APPLICATION_ERRORS="yes"):
        (error,) = check_retry_setting()
    assert "settings.TRIGGER_RELAY_RETRY_APPLICATION_ERRORS is 'yes'" in error.msg
