"""A Temporal-routed firing becomes one outbox row in the current transaction (guarantees §2.2)."""

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
from tests_support.firings import committed_rows

from trigger_relay.firing.context import MAX_CONTEXT_DEPTH
from trigger_relay.firing.context import MAX_INT_DIGITS
from trigger_relay.firing.outbox import record_firing
from trigger_relay.models import OutboxRow

TEMPORAL_ALL = override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal")


@TEMPORAL_ALL
def test_commit_records_one_row(tx_user: Any) -> None:
    """guarantees §2.2, §1.2: one firing, one committed row with the firing's data."""
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
    """guarantees §2.2: if the transaction rolls back there is no row."""
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
    """guarantees §2.2: the row belongs to the innermost transaction (savepoint) of the firing."""
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
    """guarantees §2.2: the row is part of the firing transaction, not written beside it."""
    make_trigger("Note on completion")
    task = make_task(tx_user)
    with transaction.atomic():
        task.complete()
        assert committed_rows() == []
    assert len(committed_rows()) == 1


@TEMPORAL_ALL
def test_commit_sends_an_empty_wakeup_notification(tx_user: Any) -> None:
    """guarantees §1.1, §4.1: a commit that wrote rows wakes the relay up; no row data is sent."""
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
    """guarantees §2.2: one row per (event, user) firing, not per action or per trigger."""
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
    """guarantees §2.2: anything but JSON values raises TypeError at fire(), naming the key."""
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
    """guarantees §1.2: the context is stored as JSON, nested values included."""
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
    """guarantees §1.2: due time = created time + delay (0 if the event has none); user pk as
    text."""
    event = SimpleNamespace(pk=7, trigger_id=8)
    user_pk = uuid.UUID("12345678-1234-5678-1234-567812345678")

    row = record_firing(event, user_pk, {"a": 1})  # type: ignore[arg-type]

    stored = OutboxRow.objects.get(pk=row.pk)
    assert stored.user_pk == "12345678-1234-5678-1234-567812345678"
    assert stored.due_at == stored.created_at == row.created_at == row.due_at
    assert (stored.event_id, stored.trigger_id) == (7, 8)


# -- what the relay carries unchanged: depth and integers (guarantees §2.2) -----------------


def nested_lists(depth: int, innermost: Any = "bottom") -> Any:
    """``depth`` lists inside each other around ``innermost``, built without recursion."""
    value = innermost
    for _ in range(depth):
        value = [value]
    return value


def stored_context(row_id: int, key: str) -> tuple[str, str]:
    """(``context->>key``, ``jsonb_typeof``) as PostgreSQL holds them, no Python decoding."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT context->>%s, jsonb_typeof(context->%s) FROM trigger_relay_outbox "
            "WHERE id = %s",
            [key, key, row_id],
        )
        return cursor.fetchone()  # type: ignore[return-value]


def stored_depth(row_id: int) -> int:
    """Deepest nesting of the row's context as PostgreSQL prints it, counted as the daemon
    counts it (src/outbox.rs ``check_context``): every ``{`` or ``[`` outside strings opens
    a level, the context's own object being the first."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT context::text FROM trigger_relay_outbox WHERE id = %s", [row_id])
        (text,) = cursor.fetchone()
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "}]":
            depth -= 1
    return deepest


@TEMPORAL_ALL
@pytest.mark.django_db
def test_context_nested_to_the_limit_is_stored(user: Any) -> None:
    """guarantees §2.2: a context MAX_CONTEXT_DEPTH levels deep, as the daemon counts the stored
    column (its own object is level 1), is accepted and stored as it is."""
    assert MAX_CONTEXT_DEPTH == 64  # the daemon's limit (src/outbox.rs)
    event = make_trigger("Note on completion")
    # context object + 62 lists + 1 dict = 64 levels; brackets in strings do not count.
    deep = nested_lists(MAX_CONTEXT_DEPTH - 2, {"leaf": "[[{{"})

    event.fire_single(user.pk, deep=deep)

    row = OutboxRow.objects.get()
    assert row.context == {"deep": deep}
    assert stored_depth(row.pk) == MAX_CONTEXT_DEPTH


@TEMPORAL_ALL
@pytest.mark.django_db
@pytest.mark.parametrize("lists", [MAX_CONTEXT_DEPTH, 10_000], ids=["65-levels", "10001-levels"])
def test_context_nested_too_deep_raises_type_error_naming_key_and_limit(
    user: Any, lists: int
) -> None:
    """guarantees §2.2: nesting the daemon would refuse (one level more than the limit: the
    context object + 64 lists) is refused at fire(), with a clear error naming the key and
    the limit, not RecursionError however deep; nothing is recorded."""
    event = make_trigger("Note on completion")

    with pytest.raises(TypeError) as excinfo:
        event.fire_single(user.pk, task_id=1, deep=nested_lists(lists))

    message = str(excinfo.value)
    assert message.startswith("context key 'deep' of TaskCompletedEvent")
    assert (
        "nested deeper than MAX_CONTEXT_DEPTH = 64 levels of dicts and lists "
        "(the context itself is the first)"
    ) in message
    # The path points at the first list beyond the limit, the 64th inside the context.
    assert f"(at context['deep']{'[0]' * (MAX_CONTEXT_DEPTH - 1)}):" in message
    assert OutboxRow.objects.count() == 0


@TEMPORAL_ALL
@pytest.mark.django_db
def test_dicts_count_toward_the_depth_and_a_self_containing_value_is_refused(user: Any) -> None:
    event = make_trigger("Note on completion")
    tree: dict[str, Any] = {}
    inner = tree
    for _ in range(MAX_CONTEXT_DEPTH - 1):
        inner["next"] = {}
        inner = inner["next"]
    with pytest.raises(TypeError, match=r"context key 'tree' .*MAX_CONTEXT_DEPTH = 64"):
        event.fire_single(user.pk, tree=tree)  # context object + 64 dicts

    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match=r"context key 'loop' .*MAX_CONTEXT_DEPTH = 64"):
        event.fire_single(user.pk, loop=loop)
    assert OutboxRow.objects.count() == 0


@TEMPORAL_ALL
@pytest.mark.django_db
def test_integer_beyond_64_bits_is_stored_exactly(user: Any) -> None:
    """guarantees §2.2: integers are carried exactly (the daemon passes the context on as raw
    JSON), so 2**70 is accepted and stored as that very number, not as a float."""
    event = make_trigger("Note on completion")

    event.fire_single(user.pk, n=2**70, negative=-(2**70))

    row = OutboxRow.objects.get()
    assert stored_context(row.pk, "n") == ("1180591620717411303424", "number")
    assert stored_context(row.pk, "negative") == ("-1180591620717411303424", "number")
    assert type(row.context["n"]) is int
    assert row.context == {"n": 1180591620717411303424, "negative": -1180591620717411303424}


@TEMPORAL_ALL
@pytest.mark.django_db
def test_integers_up_to_max_int_digits_are_stored_exactly(user: Any) -> None:
    event = make_trigger("Note on completion")
    largest = 10**MAX_INT_DIGITS - 1  # 4000 nines

    event.fire_single(user.pk, big=[largest, -largest])

    assert OutboxRow.objects.get().context == {"big": [largest, -largest]}


@TEMPORAL_ALL
@pytest.mark.django_db
@pytest.mark.parametrize(
    "value",
    [10**MAX_INT_DIGITS, -(10**MAX_INT_DIGITS), 10**5000],
    ids=["4001-digits", "negative-4001-digits", "5001-digits"],
)
def test_integer_with_too_many_digits_raises_type_error_naming_key(user: Any, value: int) -> None:
    """More than MAX_INT_DIGITS digits: a clear error naming the key, not json.dumps'
    ValueError about int_max_str_digits (beyond 4300 digits)."""
    event = make_trigger("Note on completion")

    with pytest.raises(TypeError) as excinfo:
        event.fire_single(user.pk, ok=1, counts={"huge": value})

    message = str(excinfo.value)
    assert message.startswith("context key 'counts' of TaskCompletedEvent")
    assert "(at context['counts']['huge']): integer with more than 4000 digits" in message
    assert "as a str" in message
    assert OutboxRow.objects.count() == 0
