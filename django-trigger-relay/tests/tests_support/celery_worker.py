"""A real Celery worker (the example site's app, solo pool) on the test database and the run's
own Redis queue, and what it still holds: for tests that must see Celery finish its work.

As the fixture of test_celery_worker.py: one process, ``--pool=solo`` (tasks run in the
worker's own process, so ``pid`` is the pid that the journal records), started with the
test settings on the test database as pytest-django made it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests_support.broker import CeleryQueue
from tests_support.processes import running
from tests_support.processes import tail
from tests_support.processes import wait_for

TESTS_DIR = Path(__file__).resolve().parents[1]
EXAMPLE_DIR = TESTS_DIR.parents[1] / "example"

#: kombu's Redis transport keeps every delivered, not yet acknowledged message (an ETA task
#: the worker holds until its time, a task being started) in this hash, for all queues.
UNACKED_KEY = "unacked"

_RECEIVED = re.compile(r"Task [\w.]+\[[0-9a-f-]+\] received")
_SUCCEEDED = re.compile(r"Task [\w.]+\[[0-9a-f-]+\] succeeded in")
_FAILED = re.compile(r"Task [\w.]+\[[0-9a-f-]+\] (raised|retry)")


@dataclass
class CeleryWorker:
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def counts(self) -> tuple[int, int, int]:
        """Tasks received (ETA ones when fetched, long before they run), succeeded, and
        raised or retried, from the worker's log."""
        text = self.log.read_text(errors="replace")
        return (
            len(_RECEIVED.findall(text)),
            len(_SUCCEEDED.findall(text)),
            len(_FAILED.findall(text)),
        )

    def tail(self, lines: int = 40) -> str:
        return f"--- celery worker ({self.log}) ---\n{tail(self.log, lines)}"


def unacked(queue: CeleryQueue) -> int:
    """Messages of ``queue`` delivered to a worker and not yet acknowledged."""
    count = 0
    for raw in queue.client.hvals(UNACKED_KEY):
        try:
            _message, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        if routing_key == queue.name:
            count += 1
    return count


def drained(worker: CeleryWorker, queue: CeleryQueue) -> bool:
    """Whether Celery holds nothing more of ``queue``: no message waiting, none held
    unacknowledged (ETA tasks), and every task the worker received has ended."""
    received, succeeded, failed = worker.counts()
    return not queue.tasks() and unacked(queue) == 0 and received == succeeded + failed


@contextlib.contextmanager
def celery_worker(log: Path, *, env: dict[str, str] | None = None) -> Iterator[CeleryWorker]:
    """Start a Celery worker on the test database and the run's queue; wait until it is
    ready; stop it (SIGTERM: warm shutdown) on exit."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "example_site",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "--loglevel=INFO",
        "--queues",
        settings.CELERY_TASK_DEFAULT_QUEUE,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--hostname",
        f"trigger-relay-test-{settings.RUN_ID}-{os.getpid()}@%h",
    ]
    worker_env = {
        "DJANGO_SETTINGS_MODULE": "test_settings",
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(EXAMPLE_DIR)]),
        # The worker connects to the test database as it is (pytest-django made it).
        "TRIGGER_RELAY_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    with running(command, log=log, env=worker_env, cwd=TESTS_DIR) as process:
        wait_for(
            lambda: "ready." in log.read_text(errors="replace"),
            timeout=60,
            what="celery worker ready",
            process=process,
            log=log,
        )
        yield CeleryWorker(process, log)
