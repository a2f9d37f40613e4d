"""The worker keeps its database connection between activities (docs/performance.md).

A site with ``CONN_MAX_AGE = 0`` (the example, and these tests' settings) had the worker open a
PostgreSQL connection per activity (8.5 ms each in the benchmark of docs/performance.md, most of
PostgreSQL's CPU per firing). ``TRIGGER_RELAY_WORKER_CONN_MAX_AGE`` (default 60 s) keeps it, with
Django's health checks, whatever the site sets for its web requests.

Real processes: a Temporal dev server, the daemon and ``manage.py trigger_relay_worker`` with
one activity thread (tests_support/harness.py). The worker's connections are told apart in
``pg_stat_activity`` by their ``application_name`` (libpq's ``PGAPPNAME`` in the worker's
environment), so the test sees which PostgreSQL backend served each firing without
instrumenting the firing.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db import transaction
from django.test import override_settings
from tests_support.factories import make_trigger
from tests_support.harness import FINAL_STATES
from tests_support.harness import Harness
from tests_support.harness import serve

from trigger_relay import conf
from trigger_relay.conf import WORKER_CONN_MAX_AGE
from trigger_relay.models import OutboxRow

pytestmark = pytest.mark.usefixtures("route_everything_to_temporal")

#: The tests with a worker process. Transactional: the worker sees what a test commits.
#: reset_sequences: see Harness.ensure_worker_current.
with_worker = pytest.mark.django_db(transaction=True, reset_sequences=True)

TESTS_DIR = Path(__file__).resolve().parent
EXAMPLE_DIR = TESTS_DIR.parents[1] / "example"

#: libpq's application_name of every connection the worker opens.
APPLICATION_NAME = f"trigger-relay-worker-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def module_harness(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None, django_db_blocker: Any
) -> Iterator[Harness]:
    harness = Harness(tmp_path_factory.mktemp("worker-connections"), run_id=str(settings.RUN_ID))
    # One activity thread: every firing is served by the same thread, so by the same
    # connection whenever one is kept.
    harness.worker.env.update(
        {"TRIGGER_RELAY_WORKER_CONCURRENCY": "1", "PGAPPNAME": APPLICATION_NAME}
    )
    yield from serve(harness, django_db_blocker)


def worker_with(harness: Harness, **env: str) -> Harness:
    """The harness with its Python worker (re)started with ``env``."""
    harness.begin_test()
    harness.worker.terminate()
    harness.start_worker(**env)
    return harness


def worker_backends() -> set[int]:
    """The PostgreSQL backends of the worker's connections now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [APPLICATION_NAME]
        )
        return {pid for (pid,) in cursor.fetchall()}


def fire_and_wait(harness: Harness, name: str) -> OutboxRow:
    """One firing through the whole chain; its row once the outcome is recorded."""
    user = get_user_model().objects.create(username=name, email=f"{name}@example.com")
    event = make_trigger(name)
    with transaction.atomic():
        event.fire_single(user.pk, task_id=1, task_title=name, task_important=False)
    row = OutboxRow.objects.get(event_id=event.pk)
    return harness.wait(
        lambda: OutboxRow.objects.filter(pk=row.pk, state__in=FINAL_STATES).first(),
        what=f"the outcome of outbox row {row.pk}",
    )


def attempts_logged(harness: Harness, row: OutboxRow) -> list[str]:
    """The worker's log lines of the attempts at ``row``'s firing."""
    marker = f"perform firing of outbox row {row.pk} ("
    return [line for line in harness.worker.log.read_text().splitlines() if marker in line]


def served_by_one_backend(harness: Harness) -> int:
    """The one backend the worker keeps after a firing (waits for the worker to settle)."""
    backends = harness.wait(
        lambda: (found := worker_backends()) and len(found) == 1 and found,
        what="one kept connection of the worker",
    )
    (pid,) = backends
    return pid


@pytest.mark.e2e
@with_worker
def test_connection_is_kept_between_firings(module_harness: Harness) -> None:
    """The default: the backend that served the first firing serves the second one.
    Before: the site's CONN_MAX_AGE (0) closed it after every activity."""
    harness = worker_with(module_harness)

    first = fire_and_wait(harness, "kept-1")
    backend = served_by_one_backend(harness)
    second = fire_and_wait(harness, "kept-2")

    assert (first.state, second.state) == ("done", "done")
    assert worker_backends() == {backend}


@pytest.mark.e2e
@with_worker
def test_zero_opens_a_connection_per_firing(module_harness: Harness) -> None:
    """``TRIGGER_RELAY_WORKER_CONN_MAX_AGE=0``: the connection is closed after each activity,
    so each firing is served by a backend of its own."""
    harness = worker_with(module_harness, **{WORKER_CONN_MAX_AGE: "0"})

    for name in ("per-firing-1", "per-firing-2"):
        assert fire_and_wait(harness, name).state == "done"
        harness.wait(lambda: not worker_backends() or None, what="the worker's connection closed")


@pytest.mark.e2e
@with_worker
def test_connection_killed_between_firings_costs_no_retry(module_harness: Harness) -> None:
    """A kept connection terminated between two firings (a failover, an idle timeout,
    ``pg_terminate_backend``) fails Django's health check and is replaced before the second
    firing's first statement: that firing is done at its first attempt. Without the health
    check its first statement fails, and the attempt is retried."""
    harness = worker_with(module_harness)
    first = fire_and_wait(harness, "killed-1")
    backend = served_by_one_backend(harness)

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
        assert cursor.fetchone()[0]
    harness.wait(lambda: backend not in worker_backends() or None, what="the backend gone")
    second = fire_and_wait(harness, "killed-2")

    assert (first.state, second.state) == ("done", "done")
    assert second.last_error is None
    lines = attempts_logged(harness, second)
    assert len(lines) == 1, "\n".join(lines)
    assert "(attempt 1)" in lines[0]
    assert worker_backends() - {backend}


# -- the setting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, conf.DEFAULT_WORKER_CONN_MAX_AGE_SECONDS), (0, 0.0), (2.5, 2.5), (600, 600.0)],
)
def test_setting(value: object, seconds: float, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKER_CONN_MAX_AGE, raising=False)
    with override_settings(**{WORKER_CONN_MAX_AGE: value}):
        assert conf.worker_conn_max_age() == seconds


@pytest.mark.parametrize("value", ["60s", -1, True, float("inf"), float("nan")])
def test_bad_setting_names_it(value: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKER_CONN_MAX_AGE, raising=False)
    with (
        override_settings(**{WORKER_CONN_MAX_AGE: value}),
        pytest.raises(ValueError, match=rf"settings\.{WORKER_CONN_MAX_AGE}"),
    ):
        conf.worker_conn_max_age()


def test_environment_wins_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKER_CONN_MAX_AGE, "0")
    with override_settings(**{WORKER_CONN_MAX_AGE: 30}):
        assert conf.worker_conn_max_age() == 0.0
    monkeypatch.setenv(WORKER_CONN_MAX_AGE, " ")
    with override_settings(**{WORKER_CONN_MAX_AGE: 30}):
        assert conf.worker_conn_max_age() == 30.0
    monkeypatch.setenv(WORKER_CONN_MAX_AGE, "forever")
    with pytest.raises(ValueError, match=rf"{WORKER_CONN_MAX_AGE}=.forever. in the environment"):
        conf.worker_conn_max_age()


def test_worker_refuses_a_bad_value_at_start() -> None:
    """Read again for each activity, but refused at start: a typo is not found at the first
    firing (which would then run with the default)."""
    result = subprocess.run(
        [sys.executable, "-m", "django", "trigger_relay_worker"],
        env={
            "DJANGO_SETTINGS_MODULE": "test_settings",
            "PYTHONPATH": f"{TESTS_DIR}:{EXAMPLE_DIR}",
            "PATH": "/usr/bin:/bin",
            WORKER_CONN_MAX_AGE: "a minute",
            # Nothing listens here: the value must be refused before any attempt.
            "TRIGGER_RELAY_TEMPORAL_ADDRESS": "127.0.0.1:9",
        },
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert f"{WORKER_CONN_MAX_AGE}='a minute' in the environment" in result.stderr
