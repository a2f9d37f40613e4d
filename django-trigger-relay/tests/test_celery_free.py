"""A site with every trigger on Temporal runs with no broker at all (guarantees §2.5).

The Celery broker URL of the test process, of the Python worker and of the management
commands points at a canary: a TCP listener that counts and drops every connection. Every
trigger is routed to Temporal in the database (``manage.py trigger_relay_route --all``,
while the default route stays ``celery``); 100 firings go through the real daemon, Temporal
dev server and Python worker; ``check`` and ``migrate`` run as commands; the admin answers.
Nothing ever connects to the broker. Then one trigger goes back to Celery and the
Celery-free check (``TRIGGER_RELAY_CELERY_FREE``) warns.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.db import transaction
from django.test import Client
from example_site.celery import app as celery_app
from tests_support.factories import make_trigger
from tests_support.harness import EXAMPLE_DIR
from tests_support.harness import FINAL_STATES
from tests_support.harness import TESTS_DIR
from tests_support.harness import Harness
from tests_support.harness import wait_until

from trigger_relay.models import OutboxRow

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FIRINGS = 100


class BrokerCanary:
    """A listener where a broker would be: counts connections and drops them at once, so a
    client that tries fails fast and the test sees that it tried."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _serve(self) -> None:
        self.server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            client.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.server.close()


@pytest.fixture
def canary() -> Iterator[BrokerCanary]:
    """The test process's Celery app (and with it dj-triggers' task) points at the canary."""
    canary = BrokerCanary()
    saved_url, saved_pool = celery_app.conf.broker_url, celery_app._pool
    celery_app.conf.broker_url = canary.url
    celery_app._pool = None  # the producer pool of the old broker
    try:
        yield canary
    finally:
        celery_app.conf.broker_url = saved_url
        celery_app._pool = saved_pool
        canary.close()


@pytest.fixture
def no_broker_harness(
    tmp_path: Any, canary: BrokerCanary, transactional_db: None
) -> Iterator[Harness]:
    harness = Harness(tmp_path, run_id=str(settings.RUN_ID))
    try:
        harness.start_temporal()
        harness.start_daemon()
        harness.start_worker(TRIGGER_RELAY_TEST_REDIS_URL=canary.url)
        yield harness
    finally:
        harness.stop()


def manage(*args: str, canary: BrokerCanary, **env: str) -> subprocess.CompletedProcess[str]:
    """``manage.py`` in a process of its own, on this test database, broker at the canary."""
    return subprocess.run(
        [sys.executable, str(EXAMPLE_DIR / "manage.py"), *args],
        cwd=TESTS_DIR,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "test_settings",
            "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(EXAMPLE_DIR)]),
            "TRIGGER_RELAY_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
            "TRIGGER_RELAY_TEST_REDIS_URL": canary.url,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_trigger_on_temporal_needs_no_broker(
    no_broker_harness: Harness, canary: BrokerCanary
) -> None:
    harness = no_broker_harness
    events = [make_trigger(f"No broker {number}") for number in range(4)]
    out = io.StringIO()
    call_command("trigger_relay_route", "--all", "--to", "temporal", stdout=out)
    assert "routed 4 trigger(s) to temporal" in out.getvalue()
    users = [
        get_user_model().objects.create(username=f"nb{number}", email=f"nb{number}@example.com")
        for number in range(FIRINGS // len(events))
    ]

    for user in users:
        with transaction.atomic():
            for event in events:
                event.fire_single(user.pk, task_id=user.pk, task_title="t", task_important=False)

    assert OutboxRow.objects.count() == FIRINGS
    states = wait_until(
        lambda: (
            counts
            if sum((counts := _state_counts()).get(state, 0) for state in FINAL_STATES) == FIRINGS
            else None
        ),
        timeout=180,
        what=f"{FIRINGS} firings performed",
        services=harness.services,
    )
    assert states == {"done": FIRINGS}

    check = manage("check", "--database", "default", canary=canary, TRIGGER_RELAY_CELERY_FREE="1")
    assert check.returncode == 0, check.stderr
    assert "W002" not in check.stdout + check.stderr
    migrate = manage("migrate", "--check", canary=canary)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    admin = get_user_model().objects.create_superuser("nb-admin", "a@example.com", "pw")
    client = Client()
    client.force_login(admin)
    for page in ("/admin/", "/admin/triggers/trigger/", "/admin/trigger_relay/outboxrow/"):
        assert client.get(page).status_code == 200, page

    assert canary.connections == 0, "something connected to the broker"

    # One trigger back on Celery: the Celery-free site is warned, naming it.
    call_command(
        "trigger_relay_route", "--trigger", str(events[0].trigger_id), "--to", "celery", stdout=out
    )
    check = manage("check", "--database", "default", canary=canary, TRIGGER_RELAY_CELERY_FREE="1")
    assert "trigger_relay.W002" in check.stderr + check.stdout
    assert "'No broker 0'" in check.stderr + check.stdout


def _state_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for state in OutboxRow.objects.values_list("state", flat=True):
        counts[state] = counts.get(state, 0) + 1
    return counts
