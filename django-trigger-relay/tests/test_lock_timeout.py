"""Lock waits of a firing are bounded (guarantees §3.6).

A worker cut off from the database while it holds ``Activity.lock`` keeps the Activity row
locked until PostgreSQL notices the dead connection (TCP keepalive: minutes or more). Every
other firing of that user and trigger would wait on the lock meanwhile, each pinning a
thread of the worker. ``TRIGGER_RELAY_LOCK_TIMEOUT`` bounds the wait for the firing's
transaction alone: the attempt fails with an infrastructure error, Temporal retries it.

The holder here is a second real connection with an open transaction, as a partitioned
worker's would be.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import OperationalError
from django.db import connection
from django.test import override_settings
from tests_support.factories import make_trigger
from tests_support.firings import workflow_input
from triggers.models import Activity

from trigger_relay import conf
from trigger_relay.models import OutboxRow
from trigger_relay.perform.activity import activity_failure
from trigger_relay.perform.activity import is_infrastructure_error
from trigger_relay.perform.core import perform

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def _route_to_temporal() -> Iterator[None]:
    with override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal"):
        yield


@pytest.fixture
def holder() -> Iterator[psycopg.Connection[Any]]:
    """Another session, as a partitioned worker's: its transaction stays open."""
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"],
        user=settings["USER"],
        dbname=settings["NAME"],
    ) as other:
        yield other


@pytest.mark.usefixtures("_route_to_temporal")
def test_a_held_activity_lock_fails_the_attempt_as_retryable(
    tx_user: Any, holder: psycopg.Connection[Any]
) -> None:
    event = make_trigger("Locked elsewhere")
    event.fire_single(tx_user.pk, task_id=1, task_title="t", task_important=False)
    firing = workflow_input(OutboxRow.objects.get(event_id=event.pk))
    activity = Activity.objects.create(trigger_id=event.trigger_id, user=tx_user)
    holder.execute("SELECT 1 FROM triggers_activity WHERE id = %s FOR UPDATE", [activity.pk])

    started = time.monotonic()
    with (
        override_settings(TRIGGER_RELAY_LOCK_TIMEOUT=0.5),
        pytest.raises(OperationalError, match="lock timeout") as raised,
    ):
        perform(firing)
    waited = time.monotonic() - started

    holder.rollback()
    # Not a figure under test, a sanity bound: the wait ended by lock_timeout, not by the
    # holder (still open above) going away.
    assert waited < 30
    assert is_infrastructure_error(raised.value)
    assert not activity_failure(raised.value).non_retryable
    assert not Activity.objects.filter(pk=activity.pk, action_count__gt=0).exists()
    # The bound was the firing's transaction's alone: this session's default is unchanged.
    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone()[0] == "0"

    # Once the holder is gone the retry performs.
    assert perform(firing).outcome == "done"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, conf.DEFAULT_LOCK_TIMEOUT_SECONDS), (0, 0.0), (2.5, 2.5), (10, 10.0)],
)
def test_lock_timeout_setting(value: object, seconds: float) -> None:
    overrides = {} if value is None else {"TRIGGER_RELAY_LOCK_TIMEOUT": value}
    with override_settings(**overrides):
        assert conf.lock_timeout_seconds() == seconds


@pytest.mark.parametrize("value", ["30s", -1, True, float("inf"), float("nan")])
def test_bad_lock_timeout_setting_names_it(value: object) -> None:
    with (
        override_settings(TRIGGER_RELAY_LOCK_TIMEOUT=value),
        pytest.raises(ValueError, match=r"settings\.TRIGGER_RELAY_LOCK_TIMEOUT"),
    ):
        conf.lock_timeout_seconds()


def test_environment_wins_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGER_RELAY_LOCK_TIMEOUT", "1.5")
    with override_settings(TRIGGER_RELAY_LOCK_TIMEOUT=9):
        assert conf.lock_timeout_seconds() == 1.5
    monkeypatch.setenv("TRIGGER_RELAY_LOCK_TIMEOUT", "soon")
    with pytest.raises(ValueError, match=r"TRIGGER_RELAY_LOCK_TIMEOUT=.soon. in the environment"):
        conf.lock_timeout_seconds()
