"""A Temporal-routed firing becomes one outbox row in the current transaction (SPEC §2.2)."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.db import transaction
from django.test import override_settings
from tests_support.factories import make_task
from tests_support.factories import make_trigger
from tests_support.factories import several_actions_per_trigger

from trigger_relay.models import OutboxRow
from trigger_relay.outbox import record_firing

TEMPORAL_ALL = override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal")


def committed_rows() -> list[dict[str, Any]]:
    """Outbox rows as another session sees them: only what was committed."""
    params = connection.get_connection_params()
    with (
        psycopg.connect(
            dbname=params["dbname"], user=params["user"], host=params["host"], port=params["port"]
        ) as other,
        other.cursor(row_factory=psycopg.rows.dict_row) as cursor,
    ):
        cursor.execute("SELECT * FROM trigger_relay_outbox ORDER BY id")
        return cursor.fetchall()


@TEMPORAL_ALL
def test_commit_records_one_row(tx_user: Any) -> None:
    """SPEC §2.2, §1.2: one firing, one committed row with the firing's data."""
    event = make_trigger("Note on completion", delay=dt.timedelta(seconds=30))
    task = make_task(tx_user, "Ship it", important=True)

    with transaction.atomic():
        task.complete()

    (row,) = committed_rows()
    assert row["event_id"] == event.pk
    assert row["trigger_id"] == event.trigger_id
    assert row["user_pk"] == str(tx_user.pk)
    assert row["context"] == {"task_id": task.pk, "task_title": "Ship it", "task_important": True}
    assert row["state"] == "pending"
    assert row["attempts"] == 0
    assert row["generation"] == 0
    assert row["skip_reason"] is None
    assert row["workflow_id"] is None
    assert row["due_at"] - row["created_at"] == dt.timedelta(seconds=30)
    assert abs(row["created_at"] - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(seconds=30)


@TEMPORAL_ALL
def test_rollback_records_nothing(tx_user: Any) -> None:
    """SPEC §2.2: if the transaction rolls back there is no row."""
    make_trigger("Note on completion")
    task = make_task(tx_user)

    def complete_then_fail() -> None:
        with transaction.atomic():
            task.complete()
            assert OutboxRow.objects.count() == 1  # written, inside the transaction
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        complete_then_fail()

    assert committed_rows() == []
    assert OutboxRow.objects.count() == 0
    task.refresh_from_db()
    assert task.completed_at is None


@TEMPORAL_ALL
def test_rolled_back_savepoint_drops_only_its_firings(tx_user: Any) -> None:
    """SPEC §2.2: the row belongs to the innermost transaction (savepoint) of the firing."""
    make_trigger("Note on completion")
    kept, dropped = make_task(tx_user, "kept"), make_task(tx_user, "dropped")

    def complete_then_fail() -> None:
        with transaction.atomic():
            dropped.complete()
            raise RuntimeError("undo this one")

    with transaction.atomic():
        kept.complete()
        with pytest.raises(RuntimeError, match="undo"):
            complete_then_fail()

    rows = committed_rows()
    assert [row["context"]["task_title"] for row in rows] == ["kept"]


@TEMPORAL_ALL
def test_row_is_written_before_commit_and_visible_only_after(tx_user: Any) -> None:
    """SPEC §2.2: the row is part of the firing transaction, not written beside it."""
    make_trigger("Note on completion")
    task = make_task(tx_user)
    with transaction.atomic():
        task.complete()
        assert committed_rows() == []
    assert len(committed_rows()) == 1


@TEMPORAL_ALL
def test_commit_sends_an_empty_wakeup_notification(tx_user: Any) -> None:
    """SPEC §1.1, §4.1: a commit that wrote rows wakes the relay up; no row data is sent."""
    make_trigger("Note on completion")
    params = connection.get_connection_params()
    with psycopg.connect(
        dbname=params["dbname"],
        user=params["user"],
        host=params["host"],
        port=params["port"],
        autocommit=True,
    ) as listener:
        listener.execute("LISTEN trigger_relay_outbox")
        with transaction.atomic():
            for number in range(3):
                make_task(tx_user, f"task {number}").complete()
        notifications = list(listener.notifies(timeout=5, stop_after=1))
    assert [(n.channel, n.payload) for n in notifications] == [("trigger_relay_outbox", "")]


@TEMPORAL_ALL
@pytest.mark.django_db
def test_one_row_per_firing_and_user(user: Any) -> None:
    """SPEC §2.2: one row per (event, user) firing, not per action or per trigger."""
    from django.contrib.auth import get_user_model

    actions = 3 if several_actions_per_trigger() else 1
    event = make_trigger("Several actions", actions=actions)
    other = get_user_model().objects.create(username="bob", email="bob@example.com")
    event.fire(get_user_model().objects.filter(pk__in=[user.pk, other.pk]), task_id=1)

    rows = OutboxRow.objects.order_by("user_pk")
    assert sorted(row.user_pk for row in rows) == sorted([str(user.pk), str(other.pk)])
    assert all(row.event_id == event.pk and row.context == {"task_id": 1} for row in rows)


@TEMPORAL_ALL
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("context", "key", "message"),
    [
        pytest.param("TASK", "task", "value of type Task is not JSON-serializable", id="model"),
        pytest.param(
            {"ok": 1, "when": dt.date(2024, 1, 1)},
            "when",
            "value of type date is not JSON-serializable",
            id="date",
        ),
        pytest.param(
            {"payload": {"items": [1, 2, {3}]}},
            "payload",
            "(at context['payload']['items'][2]): value of type set is not JSON-serializable",
            id="nested",
        ),
        pytest.param(
            {"mapping": {1: "one"}},
            "mapping",
            "dict key 1 of type int is not a str",
            id="int-key",
        ),
        pytest.param({"ratio": math.nan}, "ratio", "is not a finite number", id="nan"),
        pytest.param({"blob": b"\x00"}, "blob", "value of type bytes", id="bytes"),
    ],
)
def test_non_json_context_raises_type_error_and_records_nothing(
    user: Any, context: Any, key: str, message: str
) -> None:
    """SPEC §2.2: anything but JSON values raises TypeError at fire(), naming the key."""
    event = make_trigger("Note on completion")
    task = make_task(user)
    kwargs = {"task": task} if context == "TASK" else context

    with pytest.raises(TypeError) as excinfo:
        event.fire_single(user.pk, **kwargs)

    assert f"context key {key!r}" in str(excinfo.value)
    assert message in str(excinfo.value)
    assert OutboxRow.objects.count() == 0


@TEMPORAL_ALL
@pytest.mark.django_db
def test_json_values_are_stored_as_given(user: Any) -> None:
    """SPEC §1.2: the context is stored as JSON, nested values included."""
    event = make_trigger("Note on completion")
    context = {
        "text": "naïve ✓",
        "number": 3,
        "ratio": 0.5,
        "flag": False,
        "nothing": None,
        "items": [1, "two", [3.0], {"four": 4}],
        "pair": (1, 2),
    }
    event.fire_single(user.pk, **context)
    row = OutboxRow.objects.get()
    assert row.context == {**context, "pair": [1, 2]}


@pytest.mark.django_db
def test_record_firing_without_delay_attribute_and_with_uuid_user_pk() -> None:
    """SPEC §1.2: due time = created time + delay (0 if the event has none); user pk as text."""
    event = SimpleNamespace(pk=7, trigger_id=8)
    user_pk = uuid.UUID("12345678-1234-5678-1234-567812345678")

    row = record_firing(event, user_pk, {"a": 1})  # type: ignore[arg-type]

    stored = OutboxRow.objects.get(pk=row.pk)
    assert stored.user_pk == "12345678-1234-5678-1234-567812345678"
    assert stored.due_at == stored.created_at == row.created_at == row.due_at
    assert (stored.event_id, stored.trigger_id) == (7, 8)
