"""The Python worker's Prometheus endpoint (guarantees §6.5).

``TRIGGER_RELAY_WORKER_METRICS_ADDR`` is read as the worker's other settings (the environment
over Django settings, empty counts as unset, a bad value named with where it was set). With it,
the SDK's own Prometheus exporter serves the runtime's metrics and the add-on's counters
(trigger_relay/perform/metrics.py); without it nothing listens. Real processes: a Temporal dev
server, the daemon and ``manage.py trigger_relay_worker`` (tests_support/harness.py), and the
endpoint scraped over HTTP.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import override_settings
from tests_support.harness import DJANGO_TASK_QUEUE
from tests_support.harness import FINAL_STATES
from tests_support.harness import Harness
from tests_support.harness import HarnessError
from tests_support.processes import free_port
from tests_support.worker_metrics import DAEMON_ENV
from tests_support.worker_metrics import fire
from tests_support.worker_metrics import outcome_triggers
from tests_support.worker_metrics import start_with_worker_metrics

from trigger_relay.models import OutboxRow
from trigger_relay.perform.activity import PERFORM_FIRING
from trigger_relay.worker.settings import METRICS_ADDR
from trigger_relay.worker.settings import ConfigError
from trigger_relay.worker.settings import WorkerSettings

TESTS_DIR = Path(__file__).resolve().parent
EXAMPLE_DIR = TESTS_DIR.parents[1] / "example"

User = get_user_model()

#: A series: its name and its labels, as a sorted tuple of (name, value).
Series = tuple[str, tuple[tuple[str, str], ...]]

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


# -- the setting, read as the worker's other settings ----------------------------------------


def test_metrics_are_off_by_default_and_when_empty() -> None:
    assert (
        WorkerSettings.from_django(environ={}, django_settings=SimpleNamespace()).metrics_addr
        is None
    )
    empty = WorkerSettings.from_django(
        environ={METRICS_ADDR: " "}, django_settings=SimpleNamespace(**{METRICS_ADDR: ""})
    )
    assert empty.metrics_addr is None


def test_the_environment_wins_over_django_settings() -> None:
    django_settings = SimpleNamespace(**{METRICS_ADDR: "127.0.0.1:9465"})
    from_settings = WorkerSettings.from_django(environ={}, django_settings=django_settings)
    assert from_settings.metrics_addr == "127.0.0.1:9465"
    assert from_settings.where(METRICS_ADDR) == f"settings.{METRICS_ADDR}"
    from_env = WorkerSettings.from_django(
        environ={METRICS_ADDR: "[::]:9466"}, django_settings=django_settings
    )
    assert from_env.metrics_addr == "[::]:9466"
    assert from_env.where(METRICS_ADDR) == f"{METRICS_ADDR} in the environment"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("localhost:9465", "'localhost' is not an IP address (a host name is not accepted)"),
        ("9465", "not host:port"),
        ("127.0.0.1:", "port '' is not a number from 1 to 65535"),
        ("127.0.0.1:0", "port '0' is not a number from 1 to 65535"),
        ("127.0.0.1:70000", "port '70000' is not a number from 1 to 65535"),
        ("::1:9465", "an IPv6 address goes in brackets: [::1]:9465"),
    ],
)
def test_a_bad_address_is_named_with_where_it_was_set(raw: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        WorkerSettings.from_django(
            environ={METRICS_ADDR: raw},
            django_settings=SimpleNamespace(**{METRICS_ADDR: "127.0.0.1:9465"}),
        )
    assert str(raised.value) == (
        f"{METRICS_ADDR}={raw!r} in the environment: {problem}; use an IP address and a port, "
        "such as 127.0.0.1:9465, 0.0.0.0:9465 or [::]:9465."
    )


def test_a_django_setting_of_another_type_is_named() -> None:
    with pytest.raises(ConfigError) as raised:
        WorkerSettings.from_django(
            environ={}, django_settings=SimpleNamespace(**{METRICS_ADDR: 9465})
        )
    assert str(raised.value) == (
        f"settings.{METRICS_ADDR} is 9465 (type int); use a str such as '127.0.0.1:9465'."
    )


# -- the command refuses what it cannot serve, without a traceback ---------------------------


def _run_worker(**env: str) -> subprocess.CompletedProcess[str]:
    """``manage.py trigger_relay_worker`` with the test settings, Temporal nowhere (these
    settings are refused before it is needed)."""
    return subprocess.run(
        [sys.executable, str(EXAMPLE_DIR / "manage.py"), "trigger_relay_worker"],
        env={
            "DJANGO_SETTINGS_MODULE": "test_settings",
            "DJT_SCHEMA": os.environ.get("DJT_SCHEMA", "pypi"),
            "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(EXAMPLE_DIR)]),
            "PATH": "/usr/bin:/bin",
            "TRIGGER_RELAY_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
            **env,
        },
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_command_refuses_a_bad_address_with_a_clear_error() -> None:
    result = _run_worker(**{METRICS_ADDR: "localhost:9465"})
    assert result.returncode == 1, result.stderr
    assert (
        f"{METRICS_ADDR}='localhost:9465' in the environment: 'localhost' is not an IP address"
        in result.stderr
    )
    assert "Traceback" not in result.stderr + result.stdout


def test_command_refuses_a_port_in_use_with_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = _run_worker(**{METRICS_ADDR: address})
    assert result.returncode == 1, result.stderr
    assert (
        f"{METRICS_ADDR}={address!r} in the environment: cannot serve metrics there: "
        "Failed starting Prometheus exporter: Address already in use (os error 98)."
    ) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


# -- real processes: a firing done, one skipped, an action failing ----------------------------


@pytest.fixture(scope="module")
def metrics_harness(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None, django_db_blocker: Any
) -> Iterator[Harness]:
    """Temporal dev server + daemon + a worker serving metrics on a port of its own."""
    harness = Harness(
        tmp_path_factory.mktemp("worker-metrics"),
        run_id=str(settings.RUN_ID),
        daemon_env=DAEMON_ENV,
    )
    try:
        with (
            django_db_blocker.unblock(),
            override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal", TRIGGER_RELAY_ROUTES={}),
        ):
            start_with_worker_metrics(harness)
            yield harness
    finally:
        harness.stop()


@pytest.fixture
def harness(metrics_harness: Harness, transactional_db: None) -> Iterator[Harness]:
    with override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal", TRIGGER_RELAY_ROUTES={}):
        metrics_harness.begin_test()
        yield metrics_harness


def scrape(address: str) -> dict[Series, float]:
    """Every sample of ``http://address/metrics``, by name and labels."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    samples: dict[Series, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        key = (name, tuple(sorted(_LABEL.findall(labels or ""))))
        samples[key] = float(value)
    return samples


def value(samples: dict[Series, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s series that have ``labels`` (0 if none)."""
    return sum(
        number
        for (series, have), number in samples.items()
        if series == name and set(labels.items()) <= set(have)
    )


def wait_final(harness: Harness, rows: list[OutboxRow]) -> dict[int, OutboxRow]:
    ids = [row.pk for row in rows]

    def probe() -> dict[int, OutboxRow] | None:
        found = {
            row.pk: row for row in OutboxRow.objects.filter(pk__in=ids, state__in=FINAL_STATES)
        }
        return found if len(found) == len(ids) else None

    return harness.wait(probe, what=f"outcomes of outbox rows {ids}", timeout=90, interval=0.25)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True, reset_sequences=True)
def test_metrics_show_the_sdk_and_the_firings(harness: Harness) -> None:
    address = harness.worker.env[METRICS_ADDR]
    before = scrape(address)
    # Before any firing: the series a dashboard and alerts read are there, at 0.
    assert (
        "trigger_relay_worker_ledger_skips_total",
        (
            ("namespace", "default"),
            ("service_name", "temporal-core-sdk"),
            ("task_queue", DJANGO_TASK_QUEUE),
        ),
    ) in before
    assert value(before, "trigger_relay_worker_firings_total", outcome="done", reason="") == 0

    user = User.objects.create(username="metrics", email="metrics@example.com")
    done_trigger, skipped_trigger, failing_trigger = outcome_triggers("metrics")

    rows = [fire(done_trigger, user), fire(skipped_trigger, user), fire(failing_trigger, user)]
    final = wait_final(harness, rows)
    assert [final[row.pk].state for row in rows] == ["done", "skipped", "failed"]
    assert final[rows[1].pk].skip_reason == "condition_false"

    # The replay of the done row finds its action in the ledger: done, nothing performed.
    replayed = harness.cli("replay", "--id", str(rows[0].pk), "--json")
    assert replayed.returncode == 0, replayed.stderr
    harness.wait(
        lambda: OutboxRow.objects.filter(pk=rows[0].pk, generation=1, state="done").exists(),
        what="the replayed row done again",
        timeout=90,
    )

    ours = {"namespace": "default", "task_queue": DJANGO_TASK_QUEUE}
    expected = {
        ("trigger_relay_worker_firings_total", (("outcome", "done"), ("reason", ""))): 2,
        (
            "trigger_relay_worker_firings_total",
            (("outcome", "skipped"), ("reason", "condition_false")),
        ): 1,
        (
            "trigger_relay_worker_firings_total",
            (("outcome", "failed"), ("reason", "site_error")),
        ): 1,
        ("trigger_relay_worker_action_errors_total", (("action_type", "RecordAction"),)): 1,
        ("trigger_relay_worker_ledger_skips_total", ()): 1,
        # The done row's lock, its replay's none (the ledger comes first), the failing one's.
        ("trigger_relay_worker_lock_wait_seconds_count", ()): 2,
    }

    def deltas() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        after = scrape(address)
        return {
            key: value(after, key[0], **ours, **dict(key[1]))
            - value(before, key[0], **ours, **dict(key[1]))
            for key in expected
        }

    # The counters move as the activity returns, just after the row took its outcome.
    try:
        harness.wait(lambda: deltas() == expected, what="the worker's counters", timeout=30)
    except HarnessError:
        assert deltas() == expected

    after = scrape(address)
    perform = {"task_queue": DJANGO_TASK_QUEUE, "activity_type": PERFORM_FIRING}
    # The SDK's runtime metrics, for the Django task queue, in seconds.
    assert (
        value(
            after, "temporal_activity_schedule_to_start_latency_count", task_queue=DJANGO_TASK_QUEUE
        )
        >= 4
    )
    assert value(after, "temporal_activity_execution_latency_count", **perform) >= 4
    assert value(after, "temporal_activity_execution_failed", **perform) >= 1
    assert (
        value(
            after, "temporal_num_pollers", task_queue=DJANGO_TASK_QUEUE, poller_type="activity_task"
        )
        >= 1
    )
    slots = {"task_queue": DJANGO_TASK_QUEUE, "worker_type": "ActivityWorker"}
    available = value(after, "temporal_worker_task_slots_available", **slots)
    used = value(after, "temporal_worker_task_slots_used", **slots)
    assert available + used == 8, (available, used)  # TRIGGER_RELAY_WORKER_CONCURRENCY
    assert 0 <= value(after, "trigger_relay_worker_lock_wait_seconds_sum", **ours) < 5
    # The worker's buckets (trigger_relay/perform/metrics.py), not the SDK's coarse defaults.
    buckets = {
        (name, dict(labels).get("le"))
        for name, labels in after
        if name.endswith("_bucket") and ("task_queue", DJANGO_TASK_QUEUE) in labels
    }
    assert ("temporal_activity_schedule_to_start_latency_bucket", "0.025") in buckets
    assert ("temporal_activity_execution_latency_bucket", "0.025") in buckets
    assert ("trigger_relay_worker_lock_wait_seconds_bucket", "0.001") in buckets


def _listening_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True, reset_sequences=True)
def test_without_the_setting_nothing_listens(harness: Harness) -> None:
    address = harness.worker.env[METRICS_ADDR]
    port = int(address.rsplit(":", 1)[1])
    assert _listening_ports(harness.worker.pid) == {port}
    harness.worker.terminate()
    try:
        harness.start_worker(**{METRICS_ADDR: ""})  # empty: unset
        assert _listening_ports(harness.worker.pid) == set()
        assert "trigger_relay worker metrics: off" in harness.worker.tail(200)
    finally:
        harness.worker.terminate()
        harness.start_worker()
    assert _listening_ports(harness.worker.pid) == {port}
