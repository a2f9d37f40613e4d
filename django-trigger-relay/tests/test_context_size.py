"""The size cap on a Temporal-routed firing's context (README, "Context limits").

The daemon holds each batch's contexts in memory and fails a row whose workflow input is
over its TRIGGER_RELAY_MAX_INPUT_BYTES, so fire() refuses a context over
TRIGGER_RELAY_MAX_CONTEXT_BYTES in the site's transaction, before anything is written, with
an error naming the event, the trigger, the size and the setting.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.db import transaction
from django.test import override_settings
from tasks.models import Task
from tests_support.broker import CeleryQueue
from tests_support.factories import make_task
from tests_support.factories import make_trigger

from trigger_relay import conf
from trigger_relay.checks import check_max_context_bytes_setting
from trigger_relay.firing.context import ContextTooLarge
from trigger_relay.firing.context import context_bytes
from trigger_relay.models import OutboxRow

TEMPORAL_ALL = override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal")

#: Quotes, backslashes, control characters, non-ASCII text and floats PostgreSQL prints in
#: full: each measured as the stored jsonb's text, not as Python writes it.
AWKWARD = {
    "text": 'naïve ✓ 😀 "quoted" \\ back\x01slash\n',
    "floats": [1e300, 1e-05, -1.5e-10, 1.2345e16, 5e-324, 1.7976931348623157e308, 2.5, 0.1],
    "looks like a float": "1e+300 e-",
    "big": 10**40,
    "nested": [{"a": [], "b": {}}, True, None],
}


def stored_text_bytes(row_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT octet_length(context::text) FROM trigger_relay_outbox WHERE id = %s",
            [row_id],
        )
        (size,) = cursor.fetchone()
    return int(size)


@TEMPORAL_ALL
def test_an_oversize_context_is_refused_in_the_sites_transaction(tx_user: Any) -> None:
    """Refused before anything is sent to the database: the site's transaction goes on
    and commits its own writes, and no outbox row."""
    event = make_trigger("Note on completion")
    with override_settings(TRIGGER_RELAY_MAX_CONTEXT_BYTES=1000), transaction.atomic():
        with pytest.raises(ContextTooLarge) as excinfo:
            event.fire_single(tx_user.pk, blob="x" * 2000)
        make_task(tx_user, "written after the refusal")

    assert str(excinfo.value) == (
        f"context of TaskCompletedEvent {event.pk} (trigger {event.trigger_id}) is 2012 bytes "
        "as JSON, over TRIGGER_RELAY_MAX_CONTEXT_BYTES = 1000; pass pks and let the action read "
        "the data; the daemon fails a row whose workflow input is over its "
        "TRIGGER_RELAY_MAX_INPUT_BYTES."
    )
    assert isinstance(excinfo.value, ValueError)
    assert OutboxRow.objects.count() == 0
    assert Task.objects.filter(title="written after the refusal").exists()


@TEMPORAL_ALL
@pytest.mark.django_db
def test_the_measure_is_postgresqls_own_and_the_limit_is_inclusive(user: Any) -> None:
    """The measured size is the text PostgreSQL prints for the stored jsonb, which the
    daemon reads; a context of exactly the limit is written, one byte more is not."""
    event = make_trigger("Note on completion")
    size = context_bytes(AWKWARD)
    with (
        override_settings(TRIGGER_RELAY_MAX_CONTEXT_BYTES=size - 1),
        pytest.raises(ContextTooLarge, match=f"is {size} bytes as JSON"),
    ):
        event.fire_single(user.pk, **AWKWARD)
    assert OutboxRow.objects.count() == 0
    with override_settings(TRIGGER_RELAY_MAX_CONTEXT_BYTES=size):
        event.fire_single(user.pk, **AWKWARD)
    row = OutboxRow.objects.get()
    assert stored_text_bytes(row.pk) == size
    # 1e300 alone is 301 bytes as PostgreSQL prints it; Python writes 6.
    assert size > len(repr(AWKWARD)) + 300


@TEMPORAL_ALL
@pytest.mark.django_db
def test_the_review_s_contexts_are_refused_by_default(user: Any) -> None:
    """The default, 1,000,000 bytes, refuses a 1.5 MB context; a context of quotes of the
    default size fits the daemon's default input limit once escaped again."""
    assert conf.max_context_bytes() == conf.DEFAULT_MAX_CONTEXT_BYTES == 1_000_000
    event = make_trigger("Note on completion")
    with pytest.raises(ContextTooLarge, match=r"is 1500012 bytes as JSON, over .* = 1000000"):
        event.fire_single(user.pk, blob="x" * 1_500_000)
    assert OutboxRow.objects.count() == 0
    # '{"q": "' and '"}' around 499,995 escaped quotes (2 bytes each) and an x: 1,000,000
    # bytes; the workflow input carries each quote escaped once more, in 4 bytes.
    quotes = {"q": '"' * 499_995 + "x"}
    assert context_bytes(quotes) == 1_000_000
    event.fire_single(user.pk, **quotes)
    with connection.cursor() as cursor:
        cursor.execute("SELECT context::text FROM trigger_relay_outbox")
        (text,) = cursor.fetchone()
    # The context as the workflow input's `context_json` carries it (src/outbox.rs).
    carried = len(json.dumps(text, ensure_ascii=False).encode())
    assert 1_990_000 < carried <= 2 * 1_000_000
    assert carried + 64 * 1024 < conf.DEFAULT_DAEMON_MAX_INPUT_BYTES


@pytest.mark.django_db
def test_a_celery_routed_firing_is_not_capped(user: Any, celery_queue: CeleryQueue) -> None:
    """The cap protects the relay; Celery-routed firings go on as dj-triggers sends them."""
    event = make_trigger("Unrouted")
    with override_settings(TRIGGER_RELAY_MAX_CONTEXT_BYTES=10):
        event.fire_single(user.pk, blob="x" * 100)
    assert OutboxRow.objects.count() == 0
    (queued,) = celery_queue.tasks()
    assert queued.kwargs == {"blob": "x" * 100}


@TEMPORAL_ALL
@pytest.mark.django_db
def test_outside_a_transaction_the_cap_holds_too(user: Any) -> None:
    """In autocommit (the path that looks the route up first) the same error."""
    event = make_trigger("Note on completion")
    with (
        override_settings(
            TRIGGER_RELAY_MAX_CONTEXT_BYTES=100, TRIGGER_RELAY_FIRE_OUTSIDE_ATOMIC="ignore"
        ),
        pytest.raises(ContextTooLarge, match="TRIGGER_RELAY_MAX_CONTEXT_BYTES = 100"),
    ):
        event.fire_single(user.pk, blob="x" * 200)
    assert OutboxRow.objects.count() == 0


def test_the_environment_wins_and_bad_values_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with override_settings(TRIGGER_RELAY_MAX_CONTEXT_BYTES=5000):
        assert conf.max_context_bytes() == 5000
        monkeypatch.setenv("TRIGGER_RELAY_MAX_CONTEXT_BYTES", " 7000 ")
        assert conf.max_context_bytes() == 7000
        monkeypatch.setenv("TRIGGER_RELAY_MAX_CONTEXT_BYTES", "")
        assert conf.max_context_bytes() == 5000
        for bad in ("1MB", "0", "-5", "1.5"):
            monkeypatch.setenv("TRIGGER_RELAY_MAX_CONTEXT_BYTES", bad)
            with pytest.raises(ValueError, match=r"TRIGGER_RELAY_MAX_CONTEXT_BYTES=.* environment"):
                conf.max_context_bytes()
    monkeypatch.delenv("TRIGGER_RELAY_MAX_CONTEXT_BYTES")
    for bad_setting in (0, -1, True, 1.5, "1000"):
        with (
            override_settings(TRIGGER_RELAY_MAX_CONTEXT_BYTES=bad_setting),
            pytest.raises(ValueError, match=r"settings\.TRIGGER_RELAY_MAX_CONTEXT_BYTES is"),
        ):
            conf.max_context_bytes()


@pytest.mark.parametrize(
    ("setting", "env", "expected"),
    [
        pytest.param(None, {}, [], id="default"),
        pytest.param(2 * 1024 * 1024, {}, [], id="at-the-daemon-default"),
        pytest.param("1MB", {}, ["trigger_relay.E016"], id="malformed"),
        pytest.param(3_000_000, {}, ["trigger_relay.E017"], id="over-the-daemon-default"),
        pytest.param(
            3_000_000,
            {"TRIGGER_RELAY_MAX_INPUT_BYTES": "4000000"},
            [],
            id="within-a-raised-daemon-limit",
        ),
        pytest.param(
            None, {"TRIGGER_RELAY_MAX_INPUT_BYTES": "500000"}, ["trigger_relay.E017"], id="lowered"
        ),
        pytest.param(None, {"TRIGGER_RELAY_MAX_INPUT_BYTES": "2 MiB"}, ["trigger_relay.E017"]),
    ],
)
def test_system_check(
    monkeypatch: pytest.MonkeyPatch, setting: object, env: dict[str, str], expected: list[str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with override_settings(TRIGGER_RELAY_MAX_CONTEXT_BYTES=setting):
        assert [error.id for error in check_max_context_bytes_setting()] == expected


def test_a_setting_over_the_daemon_limit_fails_manage_py_check() -> None:
    with (
        override_settings(TRIGGER_RELAY_MAX_CONTEXT_BYTES=3_000_000),
        pytest.raises(SystemCheckError, match=r"(?s)trigger_relay\.E017.*3000000 bytes, over"),
    ):
        call_command("check")
