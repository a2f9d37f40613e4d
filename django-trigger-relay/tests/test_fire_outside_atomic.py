"""Firings outside the site's transaction are visible (guarantees §2.2; README "Fire inside
the transaction").

dj-triggers' README recommends ``transaction.on_commit(lambda: event.fire(...))``. With the
add-on that writes the outbox row in autocommit after the site's commit, and a crash in
between loses the firing unnoticed. Such firings are logged (once per call site), refused, or
let pass, as ``TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC`` says. Transactional tests on the real
database: Django's ``TestCase`` would wrap everything in an atomic block.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.test import override_settings
from tasks.models import Task
from tasks.models import TaskCompletedEvent
from tests_support.broker import CeleryQueue
from tests_support.factories import make_task
from tests_support.factories import make_trigger
from tests_support.firings import committed_rows

from trigger_relay import conf
from trigger_relay.checks import check_fire_outside_atomic_setting
from trigger_relay.firing import atomicity
from trigger_relay.models import OutboxRow

TEMPORAL_ALL = override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal")
SETTING = "TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC"
THIS_FILE = __file__


def next_line() -> int:
    """The line number after the caller's current line."""
    return sys._getframe(1).f_lineno + 1


def users(user: Any) -> Any:
    return get_user_model().objects.filter(pk=user.pk)


@pytest.fixture(autouse=True)
def _fresh_call_sites(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no call site warned about, and the setting only as it says."""
    monkeypatch.delenv(SETTING, raising=False)
    atomicity.forget_call_sites()
    yield
    atomicity.forget_call_sites()


@pytest.fixture
def warnings_(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="trigger_relay")
    return caplog


def outside_atomic_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "trigger_relay"
        and record.levelno == logging.WARNING
        and "outside a transaction" in record.getMessage()
    ]


# -- (a) the pattern of dj-triggers' README: fire() in transaction.on_commit -----------------


@TEMPORAL_ALL
def test_fire_in_on_commit_writes_the_row_and_warns_naming_the_call_site(
    tx_user: Any, warnings_: pytest.LogCaptureFixture
) -> None:
    event = make_trigger("Note on completion")
    with transaction.atomic():
        task = make_task(tx_user, "Ship it")
        line = next_line()
        transaction.on_commit(lambda: event.fire(users(tx_user), task_id=task.pk))
        assert committed_rows() == []  # not written with the task: only after its commit

    (row,) = committed_rows()
    assert (row["event_id"], row["user_pk"], row["context"]) == (
        event.pk,
        str(tx_user.pk),
        {"task_id": task.pk},
    )
    (message,) = outside_atomic_warnings(warnings_)
    assert f"{THIS_FILE}:{line} (in <lambda>)" in message
    assert f"TaskCompletedEvent {event.pk} (trigger {event.trigger_id})" in message
    assert "database 'default' is in autocommit" in message
    assert "a crash between the site's commit and this write loses the firing" in message
    assert "inside transaction.atomic()" in message
    assert "not in transaction.on_commit()" in message
    assert SETTING in message


@TEMPORAL_ALL
def test_one_warning_per_call_site_not_per_row(
    tx_user: Any, warnings_: pytest.LogCaptureFixture
) -> None:
    event = make_trigger("Note on completion")
    other = get_user_model().objects.create(username="bob", email="bob@example.com")
    everyone = get_user_model().objects.filter(pk__in=[tx_user.pk, other.pk])

    for number in range(2):  # the same line twice, two users each: four rows
        with transaction.atomic():
            first = next_line()
            transaction.on_commit(lambda n=number: event.fire(everyone, n=n))

    assert len(committed_rows()) == 4
    (message,) = outside_atomic_warnings(warnings_)
    assert f":{first} (in <lambda>)" in message

    second = next_line()
    event.fire_single(tx_user.pk, n=2)  # another call site: in autocommit, as a cron job

    assert len(committed_rows()) == 5
    assert len(outside_atomic_warnings(warnings_)) == 2
    later = outside_atomic_warnings(warnings_)[1]
    assert f"{THIS_FILE}:{second} (in test_one_warning_per_call_site_not_per_row)" in later


@TEMPORAL_ALL
def test_call_site_is_the_caller_of_a_sites_fire_override(
    tx_user: Any, warnings_: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Event subclass overriding fire() (and calling super) is not the call site."""
    event = make_trigger("Note on completion")
    original = TaskCompletedEvent.fire

    def fire(self: TaskCompletedEvent, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)

    monkeypatch.setattr(TaskCompletedEvent, "fire", fire)
    line = next_line()
    event.fire_single(tx_user.pk, task_id=1)

    (message,) = outside_atomic_warnings(warnings_)
    assert f"{THIS_FILE}:{line} (in test_call_site_is_the_caller_of_a_sites_fire_override)" in (
        message
    )


# -- (b) fire() inside transaction.atomic(): the row commits with the data, no warning -------


@TEMPORAL_ALL
def test_fire_inside_atomic_does_not_warn(
    tx_user: Any, warnings_: pytest.LogCaptureFixture
) -> None:
    event = make_trigger("Note on completion")
    with transaction.atomic():
        task = make_task(tx_user)
        event.fire(users(tx_user), task_id=task.pk)
        with transaction.atomic():  # a savepoint is inside the transaction too
            event.fire(users(tx_user), task_id=task.pk)
    task.complete()  # the example site's own pattern: fires inside transaction.atomic()

    assert len(committed_rows()) == 3
    assert outside_atomic_warnings(warnings_) == []


@TEMPORAL_ALL
def test_fire_with_autocommit_turned_off_by_the_site_does_not_warn(
    tx_user: Any, warnings_: pytest.LogCaptureFixture
) -> None:
    """A connection the site took out of autocommit is its transaction: the row commits
    with its writes."""
    event = make_trigger("Note on completion")
    transaction.set_autocommit(False)
    try:
        event.fire_single(tx_user.pk, task_id=1)
        assert committed_rows() == []
        transaction.commit()
    finally:
        transaction.set_autocommit(True)

    assert len(committed_rows()) == 1
    assert outside_atomic_warnings(warnings_) == []


# -- (c) TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC ----------------------------------------------------


@TEMPORAL_ALL
@override_settings(TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC="error")
def test_error_refuses_a_firing_outside_atomic_and_writes_nothing(
    tx_user: Any, warnings_: pytest.LogCaptureFixture
) -> None:
    event = make_trigger("Note on completion")
    line = next_line() + 1  # the fire() inside the with
    with pytest.raises(atomicity.FiringOutsideTransaction) as excinfo:
        event.fire_single(tx_user.pk, task_id=1)

    message = str(excinfo.value)
    assert f"{SETTING} is 'error'; nothing was recorded" in message
    assert f"{THIS_FILE}:{line}" in message
    assert "inside transaction.atomic()" in message
    assert isinstance(excinfo.value, transaction.TransactionManagementError)
    assert committed_rows() == []

    # on_commit: the site's data committed, the firing raises from the hook, no row.
    def create_task_and_fire_on_commit() -> None:
        with transaction.atomic():
            task = make_task(tx_user, "committed")
            transaction.on_commit(lambda: event.fire_single(tx_user.pk, task_id=task.pk))

    with pytest.raises(atomicity.FiringOutsideTransaction):
        create_task_and_fire_on_commit()
    assert Task.objects.filter(title="committed").exists()
    assert committed_rows() == []
    assert outside_atomic_warnings(warnings_) == []

    with transaction.atomic():  # inside a transaction, "error" lets it through
        event.fire_single(tx_user.pk, task_id=2)
    assert [row["context"] for row in committed_rows()] == [{"task_id": 2}]


@TEMPORAL_ALL
@override_settings(TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC="ignore")
def test_ignore_writes_the_row_silently(tx_user: Any, warnings_: pytest.LogCaptureFixture) -> None:
    event = make_trigger("Note on completion")
    event.fire_single(tx_user.pk, task_id=1)
    assert len(committed_rows()) == 1
    assert outside_atomic_warnings(warnings_) == []


@TEMPORAL_ALL
@override_settings(TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC="ignore")
def test_environment_wins_over_the_setting(tx_user: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    event = make_trigger("Note on completion")
    monkeypatch.setenv(SETTING, " Error ")
    with pytest.raises(atomicity.FiringOutsideTransaction):
        event.fire_single(tx_user.pk, task_id=1)
    monkeypatch.setenv(SETTING, "")  # empty: unset, the setting applies
    event.fire_single(tx_user.pk, task_id=2)
    assert [row["context"] for row in committed_rows()] == [{"task_id": 2}]


@TEMPORAL_ALL
@override_settings(TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC="raise")
def test_malformed_setting_refuses_every_temporal_firing(tx_user: Any) -> None:
    """As a malformed route: ImproperlyConfigured at fire(), inside atomic too, no row."""
    event = make_trigger("Note on completion")
    with (
        pytest.raises(ImproperlyConfigured, match=rf"settings\.{SETTING} is 'raise'"),
        transaction.atomic(),
    ):
        event.fire_single(tx_user.pk, task_id=1)
    assert committed_rows() == []


# -- (d) Celery-routed firings are not affected ------------------------------------------------


@override_settings(TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC="error")
def test_celery_routed_firing_outside_atomic_is_not_affected(
    tx_user: Any, celery_queue: CeleryQueue, warnings_: pytest.LogCaptureFixture
) -> None:
    event = make_trigger("Legacy newsletter")
    with transaction.atomic():
        transaction.on_commit(lambda: event.fire_single(tx_user.pk, task_id=5))
    event.fire_single(tx_user.pk, task_id=6)

    assert [(task.name, task.kwargs) for task in celery_queue.tasks()] == [
        ("triggers.tasks.handle_event", {"task_id": 5}),
        ("triggers.tasks.handle_event", {"task_id": 6}),
    ]
    assert OutboxRow.objects.count() == 0
    assert outside_atomic_warnings(warnings_) == []


# -- (e) the system check ------------------------------------------------------------------------


def test_check_default_is_fine() -> None:
    assert check_fire_outside_atomic_setting() == []


@pytest.mark.parametrize("value", ["warn", "error", "ignore"])
def test_check_accepts_the_three_values(value: str) -> None:
    with override_settings(TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC=value):
        assert check_fire_outside_atomic_setting() == []


@pytest.mark.parametrize("value", [None, "", "  "])
def test_an_empty_setting_is_unset_as_every_setting(value: object) -> None:
    """conf.Layers: ``None`` or a blank string counts as unset, the default applies."""
    with override_settings(TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC=value):
        assert check_fire_outside_atomic_setting() == []
        assert conf.fire_outside_atomic() == conf.OUTSIDE_ATOMIC_WARN


@pytest.mark.parametrize("value", ["Error", "raise", True, 1])
def test_check_reports_a_malformed_setting(value: object) -> None:
    with override_settings(TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC=value):
        (error,) = check_fire_outside_atomic_setting()
    assert error.id == "trigger_relay.E008"
    assert f"settings.{SETTING} is {value!r}" in error.msg


def test_check_reports_a_malformed_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SETTING, "loud")
    (error,) = check_fire_outside_atomic_setting()
    assert error.id == "trigger_relay.E008"
    assert f"{SETTING}='loud' in the environment" in error.msg
