"""The two routes of the example site side by side, in one run (docs/performance.md):
dj-triggers on Celery (Redis) and the same trigger through the outbox, the daemon, Temporal
and the Python worker.

    .venv/bin/python bench/end_to_end.py [--firings 1000] [--latency 40] [--repeats 3]
        [--backlog 2000] [--users 1] [--fanout 2000,20000] [--server wal|memory]
        [--poll-interval 5]
    make bench                  # the same, after a release build of the daemon

It starts its own processes on free ports: a Temporal dev server (SQLite file in WAL mode,
as the demo runs it, or in memory), the daemon, `manage.py trigger_relay_worker` and a
Celery worker (prefork, the example site's app, on its own Redis database), on a fresh
database `trigger_relay_bench`. Two identical triggers (task completed -> SendEmailAction),
one routed to Celery and one to Temporal; only the one being measured is enabled. Per repeat
and route, in alternating order:

- latency: `--latency` firings one at a time, each waited for: the fire call's time
  (`Task.complete()`: the site's transaction including the firing and its commit) and
  fire -> action performed (the SentEmail row's `sent_at` minus the moment before the fire);
- sustained: `--firings` firings fired back to back from this process, then waited for:
  firings/s from the first fire to the last action, and the CPU seconds each process spent
  meanwhile, per 1,000 firings (process trees, so Celery's prefork children and PostgreSQL's
  backends count, exited ones included).
- fan-out, for each N of `--fanout`: one clock event fired for N users in one transaction, as
  the example's `manage.py fire_clock` does (`HourlyClockEvent.fire_all()`: every active user;
  the bench makes exactly N of its users active first). Two more triggers, one per route,
  defined as the example's hourly reminder (HourlyClockEvent, HasUncompletedTaskCondition,
  ActionFrequencyCondition, SendEmailAction with its templates; the frequency limit 0 instead
  of a day, so that every repeat fires again; every user has one open task); only the one
  being measured is enabled. Firings/s from the fire to the last action performed (the last
  SentEmail's `sent_at`), the firing transaction's duration, and the CPU seconds per 1,000
  firings of each process tree, as in the sustained phase. The users (as many as the largest
  N, or `--users`) are created once per run, in bulk.

On the Temporal route (and the baseline daemon's), the sustained and fan-out phases also
count Temporal's billable actions: the dev server's Prometheus endpoint (`--metrics-port`) is
scraped before and after each phase, once the route's workflows have finished, and the delta
of its `action` counter (all label sets of the route's namespace; label `action_type`) is
divided by the phase's firings. The bench fails if the counter is absent or did not move.

With the Temporal route, each repeat then runs two phases with the daemon restarted in
another mode (SIGTERM, then the same binary with other settings; same server, worker and
database):

- poll only (`TRIGGER_RELAY_LISTEN=false`, polling every `--poll-interval`, by default the
  daemon's 5 s): `--latency` firings at random moments (exponential gaps, a quarter of the
  interval on average), so each meets the poll timer at a random phase: row written ->
  workflow started. (Fired one at a time and waited for, each would follow a poll and wait
  the whole interval: the timer restarts after every drain.)
- start rate: `--backlog` firings written while the daemon is stopped, then a relay-only
  daemon (`TRIGGER_RELAY_MODE=relay`, `TRIGGER_RELAY_MAX_IN_FLIGHT=16`) starting their
  workflows on a task queue nobody polls: starts/s from its spawn to the last row
  dispatched. Against it, the same server's raw start rate: as many `trigger_workflow` starts
  (the same inputs, memo and id policies) from the Temporal Python client, 16 in flight, on
  that queue. The order of the two alternates; the backlog's rows are deleted from the outbox
  afterwards (the reconciler would describe their never-run workflows). Nothing but starts
  runs on the server meanwhile.

`--server memory` runs everything against an in-memory dev server instead of the WAL file;
`--users N` spreads the sustained and backlog firings over N users (one (trigger, user) pair
serializes its performs on its Activity row lock). `--fanout ''` leaves the fan-out out.

With `--baseline-daemon PATH` (another build of the daemon, e.g. the last release's), each
repeat also runs the Temporal route with that daemon (swapped in and out; same server, worker
and database), and the table gains its column and the Temporal / baseline ratio: how a change
to the daemon or the workflow moves the figures, in the same invocation. The poll-only and
start-rate phases run with `--daemon` only; the fan-out runs with both.

Prints one table (median and min-max over repeats, the Temporal/Celery ratio) and writes
the figures as JSON to bench/results/. Nothing else should run on the machine meanwhile:
PostgreSQL's and Redis' CPU is the whole server's. `BENCH_DATABASE` and `BENCH_REDIS_DB`
(environment) name another database and Redis database, for a second bench at the same time.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example"
VENV_BIN = ROOT / ".venv" / "bin"
# Both overridable, for two benches at once on one PostgreSQL and Redis (the database is
# dropped and created at start, the Redis database flushed).
DB_NAME = os.environ.get("BENCH_DATABASE", "trigger_relay_bench")
DB_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
# A Redis database of its own (the add-on's tests use 11, bench/request_path.py 15, the
# example site 0): no other test's or demo's Celery worker takes our messages.
BROKER_URL = f"redis://127.0.0.1:6379/{os.environ.get('BENCH_REDIS_DB', '12')}"
ROUTES = ("celery", "temporal")
#: The phase that runs the Temporal route with --baseline-daemon.
BASELINE = "baseline"
#: The daemon's TRIGGER_RELAY_MAX_IN_FLIGHT default, set explicitly for the relay's drain and
#: used as the raw starts' concurrency.
STARTS_IN_FLIGHT = 16
#: A task queue no worker polls: the start-rate phase's workflows are started, never run.
UNPOLLED_QUEUE = "bench-unpolled"
#: The daemon's default TRIGGER_RELAY_TEMPORAL_TASK_QUEUE, the route's workflows'.
WORKFLOW_QUEUE = "trigger-relay"
SERVERS = {
    "wal": "start-dev, SQLite file, journal_mode=wal, synchronous=normal",
    "memory": "start-dev, in memory (no --db-filename)",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The namespace the daemon starts its workflows in (its TRIGGER_RELAY_TEMPORAL_NAMESPACE).
NAMESPACE = os.environ.get("TRIGGER_RELAY_TEMPORAL_NAMESPACE") or "default"
#: The dev server's counter of billable actions, as `temporal server start-dev` exports it
#: (a Prometheus exporter may add the `_total` suffix).
ACTION_METRICS = ("action", "action_total")
#: The fan-out's clock triggers, in `triggers` next to the task-completed ones (by route).
CLOCK = "clock {}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(what: str, timeout: float, check: Callable[[], Any], every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


# ---------------------------------------------------------------------------------------
# CPU and memory of process trees, from /proc


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and of its reaped children)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    # After the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based
    # from the state field.
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return int(fields[1]), ticks / CLK_TCK


def tree_cpu(root: int) -> float:
    """CPU seconds of `root` and its live descendants, plus every reaped descendant (a live
    process's cutime/cstime holds its reaped children's, recursively)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                parents[int(entry.name)], cpu[int(entry.name)] = stat
    total = 0.0
    for pid, seconds in cpu.items():
        ancestor = pid
        while ancestor not in (root, 0, 1) and ancestor in parents:
            ancestor = parents[ancestor]
        if ancestor == root:
            total += seconds
    return total


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of one process in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


# ---------------------------------------------------------------------------------------
# The processes


class Processes:
    def __init__(self, workdir: Path, daemon: Path) -> None:
        self.workdir = workdir
        self.daemon_bin = daemon
        #: TRIGGER_RELAY_* settings of the running daemon on top of ``env``'s.
        self.daemon_settings: dict[str, str] = {}
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.temporal_port = free_port()
        self.metrics_port = free_port()
        #: The dev server's Prometheus endpoint (its billable actions: `server_actions`).
        self.server_metrics_port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": DB_URL,
            "CELERY_BROKER_URL": BROKER_URL,
            "DJANGO_SETTINGS_MODULE": "example_site.settings",
            "DJANGO_DEBUG": "0",
            "TRIGGER_RELAY_DATABASE_URL": DB_URL,
            "TRIGGER_RELAY_TEMPORAL_ADDRESS": f"http://127.0.0.1:{self.temporal_port}",
            "TRIGGER_RELAY_METRICS_ADDR": f"127.0.0.1:{self.metrics_port}",
            "TRIGGER_RELAY_LOG_FORMAT": "text",
            "PYTHONPATH": str(EXAMPLE),
        }

    def spawn(
        self, name: str, argv: list[str], cwd: Path = ROOT, settings: dict[str, str] | None = None
    ) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 (closed with the child)
        self.children[name] = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**self.env, **(settings or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def pid(self, name: str) -> int:
        return self.children[name].pid

    def start(self, server: str, task_queue_partitions: int | None, transfer_rps: int) -> None:
        # The server's default is 4 partitions per task queue; a task written to a
        # partition where no poller waits is dispatched late (see docs/performance.md).
        config = [
            f"matching.numTaskqueue{kind}Partitions={task_queue_partitions}"
            for kind in ("Read", "Write")
            if task_queue_partitions is not None
        ]
        # As the demo: at the server's default (20) its one history shard's transfer queue
        # holds every workflow and activity task 30-40 ms (docs/performance.md).
        config.append(f"history.transferProcessorMaxPollRPS={transfer_rps}")
        partitions = [arg for value in config for arg in ("--dynamic-config-value", value)]
        self.spawn(
            "temporal",
            [
                str(VENV_BIN / "temporal"),
                *("server", "start-dev", "--headless", "--log-level", "error"),
                *("--ip", "127.0.0.1", "--port", str(self.temporal_port)),
                *("--http-port", str(free_port())),
                *("--metrics-port", str(self.server_metrics_port)),
                *(self.database_args() if server == "wal" else ()),
                *partitions,
            ],
        )
        wait_until("the Temporal dev server", 60, lambda: port_open(self.temporal_port))
        self.spawn("daemon", [str(self.daemon_bin), "run"])
        self.spawn(
            "worker",
            [str(VENV_BIN / "python"), "manage.py", "trigger_relay_worker"],
            EXAMPLE,
        )
        self.spawn(
            "celery",
            [
                str(VENV_BIN / "celery"),
                "-A",
                "example_site",
                "worker",
                "--loglevel=WARNING",
            ],
            EXAMPLE,
        )
        wait_until("the daemon's /readyz", 60, self.daemon_ready, every=0.2)
        for name, child in self.children.items():
            if child.poll() is not None:
                raise SystemExit(f"bench: {name} exited; see {self.workdir / name}.log")

    def database_args(self) -> list[str]:
        """The dev server's SQLite file in WAL mode, as the demo runs it."""
        return [
            *("--db-filename", str(self.workdir / "temporal.db")),
            *("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"),
        ]

    def use_daemon(self, daemon: Path, settings: dict[str, str] | None = None) -> int:
        """Run ``daemon`` with ``settings`` (TRIGGER_RELAY_* variables) instead of the current
        daemon (stopped with SIGTERM, as a deploy would), unless it runs so already; returns
        its pid once ready."""
        settings = settings or {}
        if "daemon" not in self.children or (daemon, settings) != (
            self.daemon_bin,
            self.daemon_settings,
        ):
            self.stop_daemon()
            self.spawn_daemon(daemon, settings)
            wait_until("the daemon's /readyz", 60, self.daemon_ready, every=0.2)
        return self.pid("daemon")

    def stop_daemon(self) -> None:
        current = self.children.pop("daemon", None)
        if current is not None:
            current.terminate()
            current.wait(timeout=30)

    def spawn_daemon(self, daemon: Path, settings: dict[str, str]) -> None:
        self.daemon_bin, self.daemon_settings = daemon, settings
        self.spawn("daemon", [str(daemon), "run"], settings=settings)

    def ensure_running(self, name: str) -> None:
        if self.children[name].poll() is not None:
            raise SystemExit(f"bench: {name} exited; see {self.workdir / name}.log")

    def daemon_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        for child in self.children.values():
            child.terminate()
        for child in self.children.values():
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def manage(*args: str) -> None:
    env = {**os.environ, "DATABASE_URL": DB_URL, "CELERY_BROKER_URL": BROKER_URL}
    subprocess.run([str(VENV_BIN / "python"), "manage.py", *args], cwd=EXAMPLE, env=env, check=True)


def create_database() -> None:
    for statement in (
        f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)",
        f"CREATE DATABASE {DB_NAME}",
    ):
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-qc",
                statement,
            ],
            check=True,
        )
    manage("migrate", "--verbosity", "0")


def postgres_pid() -> int:
    out = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
            "SHOW data_directory",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return int(Path(out, "postmaster.pid").read_text().split()[0])


# ---------------------------------------------------------------------------------------
# The site side (this process is the site firing its triggers)


def setup_django() -> None:
    os.environ["DATABASE_URL"] = DB_URL
    os.environ["CELERY_BROKER_URL"] = BROKER_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_site.settings")
    os.environ["DJANGO_DEBUG"] = "0"
    sys.path.insert(0, str(EXAMPLE))
    import django

    django.setup()
    # Publishing to the broker from this process, as the site's web process does.
    import example_site.celery  # noqa: F401


#: Rows per INSERT when seeding users and their open tasks.
SEED_BATCH = 5000


def seed(users: int) -> tuple[list[Any], dict[str, Any]]:
    """``users`` users in pk order (the first one is the example's one user), each with one
    open task (the clock triggers' condition), and the four triggers: task completed and the
    clock reminder, for each route (``triggers[route]``, ``triggers[CLOCK.format(route)]``)."""
    from django.contrib.auth import get_user_model
    from tasks.models import HasUncompletedTaskCondition
    from tasks.models import HourlyClockEvent
    from tasks.models import SendEmailAction
    from tasks.models import Task
    from tasks.models import TaskCompletedEvent
    from triggers.models import ActionFrequencyCondition
    from triggers.models import Trigger

    from trigger_relay.firing.routes import set_routes

    names = ["bench", *(f"bench{i}" for i in range(2, users + 1))]
    user_model = get_user_model()
    created = user_model.objects.bulk_create(
        (user_model(username=name, email=f"{name}@example.com") for name in names),
        batch_size=SEED_BATCH,
    )
    Task.objects.bulk_create(
        (Task(user=user, title="bench: open task") for user in created), batch_size=SEED_BATCH
    )
    triggers = {}
    for route in ROUTES:
        trigger = Trigger.objects.create(name=f"bench: task completed, {route}", is_enabled=False)
        TaskCompletedEvent.objects.create(trigger=trigger)
        SendEmailAction.objects.create(
            trigger=trigger,
            subject="Done: {{ task_title }}",
            body="{{ task_title }} is done.\n",
        )
        set_routes([trigger.pk], route, changed_by="bench")  # type: ignore[arg-type]
        triggers[route] = trigger
        # As the example's "Remind users with open tasks, at most daily" (seed_demo.py),
        # but with no frequency limit: each repeat's fan-out fires for every user again.
        trigger = Trigger.objects.create(name=f"bench: hourly clock, {route}", is_enabled=False)
        HourlyClockEvent.objects.create(trigger=trigger)
        HasUncompletedTaskCondition.objects.create(trigger=trigger)
        ActionFrequencyCondition.objects.create(trigger=trigger, limit=dt.timedelta(0))
        SendEmailAction.objects.create(
            trigger=trigger,
            subject="{{ user.username }}, you have open tasks",
            body=(
                "{% for task in user.tasks.all %}{% if not task.completed_at %}"
                "- {{ task.title }}\n{% endif %}{% endfor %}(clock: {{ fired_at }})\n"
            ),
        )
        set_routes([trigger.pk], route, changed_by="bench")  # type: ignore[arg-type]
        triggers[CLOCK.format(route)] = trigger
    return created, triggers


def enable_only(triggers: dict[str, Any], name: str) -> None:
    """Enable ``triggers[name]`` (a route's task-completed trigger, or ``CLOCK.format(route)``)
    and disable the others."""
    for key, trigger in triggers.items():
        trigger.is_enabled = key == name
        trigger.save(update_fields=["is_enabled"])


def new_tasks(users: list[Any], n: int, label: str) -> list[Any]:
    """``n`` tasks, one user after the other."""
    from tasks.models import Task

    return list(
        Task.objects.bulk_create(
            Task(user=users[i % len(users)], title=f"{label} {i}") for i in range(n)
        )
    )


def emails_for(tasks: list[Any]) -> int:
    from tasks.models import SentEmail

    return SentEmail.objects.filter(context__task_id__in=[t.pk for t in tasks]).count()


def latency_phase(user: Any, n: int, label: str) -> dict[str, list[float]]:
    from tasks.models import SentEmail

    fire_ms, action_ms = [], []
    tasks = new_tasks([user], n, f"{label} latency")
    for task in tasks:
        before = time.time()
        started = time.perf_counter()
        task.complete()
        fire_ms.append((time.perf_counter() - started) * 1000)
        mail = wait_until(
            f"the action of {label}",
            120,
            lambda task=task: SentEmail.objects.filter(context__task_id=task.pk).first(),
            every=0.002,
        )
        action_ms.append((mail.sent_at.timestamp() - before) * 1000)
    return {"fire_ms": fire_ms, "fire_to_action_ms": action_ms, **start_latency(tasks)}


def start_latency(tasks: list[Any]) -> dict[str, list[float]]:
    """Temporal route: outbox row written (its transaction's start) -> workflow started, as
    the daemon recorded it (dispatched_at: the commit of its batch's mark_dispatched)."""
    from trigger_relay.models import OutboxRow

    rows = OutboxRow.objects.filter(context__task_id__in=[t.pk for t in tasks])
    return {
        "row_to_start_ms": [
            (row.dispatched_at - row.created_at).total_seconds() * 1000
            for row in rows
            if row.dispatched_at is not None
        ]
    }


def self_cpu() -> float:
    """CPU seconds of this process (the site firing its triggers) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_per_1000(
    pids: dict[str, int], before: dict[str, float], site_s: float, n: int
) -> dict[str, float]:
    """CPU seconds per 1,000 firings of each process tree since ``before`` (their
    ``tree_cpu``), and of the site's firing process (``site_s``, measured by the caller)."""
    cpu = {name: tree_cpu(pid) - before[name] for name, pid in pids.items()}
    cpu["site (firing process)"] = site_s
    return {name: seconds * 1000 / n for name, seconds in cpu.items()}


def sustained_phase(users: list[Any], n: int, label: str, pids: dict[str, int]) -> dict[str, Any]:
    tasks = new_tasks(users, n, label)
    cpu_before = {name: tree_cpu(pid) for name, pid in pids.items()}
    self_before = self_cpu()
    started = time.perf_counter()
    for task in tasks:
        task.complete()
    fired = time.perf_counter() - started
    site_s = self_cpu() - self_before
    wait_until(f"{n} actions of {label}", 600, lambda: emails_for(tasks) == n, every=0.05)
    elapsed = time.perf_counter() - started
    return {
        "firings_per_s": n / elapsed,
        "fire_loop_s": fired,
        "cpu_s_per_1000": cpu_per_1000(pids, cpu_before, site_s, n),
    }


def activate_first(users: list[Any], n: int) -> None:
    """Make exactly the first ``n`` of ``users`` (pk order; all the database's users) active,
    in one statement: the fan-out's clock event fires for every active user."""
    from django.contrib.auth import get_user_model
    from django.db.models import Case
    from django.db.models import Value
    from django.db.models import When

    last = users[n - 1].pk
    get_user_model().objects.update(
        is_active=Case(When(pk__lte=last, then=Value(True)), default=Value(False))
    )
    active = get_user_model().objects.filter(is_active=True).count()
    if active != n:
        raise SystemExit(f"bench: {active} active users for a fan-out of {n}")


def fanout_phase(
    users: list[Any], n: int, trigger: Any, label: str, pids: dict[str, int]
) -> dict[str, Any]:
    """One clock event fired for ``n`` users in one transaction, as ``manage.py fire_clock``
    does (``HourlyClockEvent.fire_all()``, ``trigger`` the only enabled clock trigger), waited
    for: firings/s from the fire to the last action performed, and CPU per 1,000 firings."""
    from django.db.models import Max
    from tasks.models import HourlyClockEvent
    from tasks.models import SendEmailAction
    from tasks.models import SentEmail

    activate_first(users, n)
    action = SendEmailAction.objects.get(trigger=trigger)
    after_id = SentEmail.objects.aggregate(last=Max("id"))["last"] or 0
    mails = SentEmail.objects.filter(action=action, id__gt=after_id)
    cpu_before = {name: tree_cpu(pid) for name, pid in pids.items()}
    self_before = self_cpu()
    before = time.time()
    started = time.perf_counter()
    fired_events = HourlyClockEvent.fire_all()
    fire_s = time.perf_counter() - started
    site_s = self_cpu() - self_before
    if fired_events != 1:
        raise SystemExit(f"bench: {fired_events} clock events fired for {label}, not 1")
    # Counting the phase's SentEmail rows is PostgreSQL work in the measured window: every
    # 0.25 s, not faster; the last action's time comes from the rows, not from this poll.
    wait_until(
        f"{n} actions of {label}",
        600 + n / 4,
        lambda: mails.count() >= n,
        every=0.25,
    )
    cpu = cpu_per_1000(pids, cpu_before, site_s, n)
    found = mails.count()
    if found != n:
        raise SystemExit(f"bench: {found} actions for a fan-out of {n} ({label})")
    last = mails.aggregate(last=Max("sent_at"))["last"].timestamp()
    return {
        "firings": n,
        "firings_per_s": n / (last - before),
        "fire_s": fire_s,
        "fire_to_last_action_s": last - before,
        "cpu_s_per_1000": cpu,
    }


# ---------------------------------------------------------------------------------------
# Temporal's billable actions, from the dev server's Prometheus endpoint

#: One sample line of the Prometheus text format: name, optional {labels}, value.
_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_actions(text: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of the `action` counter (``ACTION_METRICS``) in a Prometheus text page, by
    label set (sorted (name, value) pairs). Raises SystemExit if there is none: a renamed or
    missing counter must not read as zero actions."""
    samples: dict[tuple[tuple[str, str], ...], float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] not in ACTION_METRICS:
            continue
        labels = tuple(sorted(_LABEL.findall(match["labels"] or "")))
        samples[labels] = samples.get(labels, 0.0) + float(match["value"])
    if not samples:
        raise SystemExit(
            f"bench: the Temporal dev server's /metrics has no {' or '.join(ACTION_METRICS)} "
            "counter: cannot count billable actions"
        )
    return samples


def server_actions(processes: Processes) -> dict[tuple[tuple[str, str], ...], float]:
    """The dev server's `action` counter now, by label set."""
    url = f"http://127.0.0.1:{processes.server_metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return parse_actions(response.read().decode())


#: Seconds between two scrapes that must agree: the dev server's /metrics shows a counter's
#: increments up to about 1 s late (its reporter's interval; a start showed after 0.5-0.9 s).
ACTIONS_SETTLE_S = 1.5


def settled_actions(processes: Processes) -> dict[tuple[tuple[str, str], ...], float]:
    """The `action` counter once no workflow of the route runs and two scrapes
    ``ACTIONS_SETTLE_S`` apart agree: every action of the firings before is counted, none of
    the next phase's."""
    wait_until(
        "the Temporal route's workflows to finish",
        600,
        lambda: running_workflows(processes, WORKFLOW_QUEUE) == 0,
        every=0.5,
    )
    seen = server_actions(processes)

    def stable() -> dict[tuple[tuple[str, str], ...], float] | None:
        nonlocal seen
        time.sleep(ACTIONS_SETTLE_S)
        previous, seen = seen, server_actions(processes)
        return seen if seen == previous else None

    return wait_until("Temporal's action counter to settle", 60, stable, every=0)


def actions_between(
    before: dict[tuple[tuple[str, str], ...], float],
    after: dict[tuple[tuple[str, str], ...], float],
    firings: int,
    label: str,
) -> dict[str, Any]:
    """Billable actions per firing between two scrapes: the counter's delta summed over every
    label set of the route's namespace (``NAMESPACE``), and the delta by `action_type`; other
    namespaces' delta (the server's own system workflows) is kept apart, not billed to us."""
    by_type: dict[str, float] = {}
    others = 0.0
    for labels, value in after.items():
        delta = value - before.get(labels, 0.0)
        named = dict(labels)
        if named.get("namespace") == NAMESPACE:
            kind = named.get("action_type", "?")
            by_type[kind] = by_type.get(kind, 0.0) + delta
        else:
            others += delta
    total = sum(by_type.values())
    if total <= 0:
        raise SystemExit(
            f"bench: the `action` counter of namespace {NAMESPACE!r} did not move during "
            f"{firings} firings of {label}"
        )
    return {
        "actions": total,
        "actions_per_firing": total / firings,
        "per_firing_by_type": {kind: value / firings for kind, value in sorted(by_type.items())},
        "other_namespaces_actions": others,
    }


def poll_latency_phase(
    user: Any, n: int, label: str, poll_interval_s: float, rng: random.Random
) -> dict[str, list[float]]:
    """Row written -> workflow started with a poll-only daemon: ``n`` firings at random
    moments (exponential gaps, a quarter of the interval on average), then all waited for."""
    tasks = new_tasks([user], n, f"{label} poll")
    for task in tasks:
        time.sleep(rng.expovariate(4 / poll_interval_s))
        task.complete()
    wait_until(
        f"the poll-only firings of {label}",
        120 + 2 * poll_interval_s,
        lambda: emails_for(tasks) == n,
        every=0.05,
    )
    return start_latency(tasks)


def write_backlog(users: list[Any], n: int, label: str) -> list[int]:
    """``n`` firings through the site's path; returns their outbox ids."""
    from trigger_relay.models import OutboxRow

    tasks = new_tasks(users, n, f"{label} backlog")
    for task in tasks:
        task.complete()
    ids = list(
        OutboxRow.objects.filter(context__task_id__in=[t.pk for t in tasks]).values_list(
            "id", flat=True
        )
    )
    if len(ids) != n:
        raise SystemExit(f"bench: {len(ids)} outbox rows for {n} backlog firings")
    return ids


def dispatched_between(ids: list[int]) -> tuple[float, float] | None:
    """When the first and the last of the rows were dispatched (epoch seconds), once all
    are."""
    from django.db.models import Count
    from django.db.models import Max
    from django.db.models import Min

    from trigger_relay.models import OutboxRow

    rows = OutboxRow.objects.filter(id__in=ids, dispatched_at__isnull=False)
    found = rows.aggregate(n=Count("id"), first=Min("dispatched_at"), last=Max("dispatched_at"))
    if found["n"] != len(ids):
        return None
    return found["first"].timestamp(), found["last"].timestamp()


def relay_drain(processes: Processes, daemon: Path, ids: list[int]) -> dict[str, float]:
    """Starts a relay-only daemon on the pending ``ids`` (its workflows on a queue nobody
    polls): starts/s from its spawn to the last row's dispatch."""
    server_cpu = tree_cpu(processes.pid("temporal"))
    spawned = time.time()
    processes.spawn_daemon(
        daemon,
        {
            "TRIGGER_RELAY_MODE": "relay",
            "TRIGGER_RELAY_TEMPORAL_TASK_QUEUE": UNPOLLED_QUEUE,
            "TRIGGER_RELAY_MAX_IN_FLIGHT": str(STARTS_IN_FLIGHT),
        },
    )

    def drained() -> tuple[float, float] | None:
        processes.ensure_running("daemon")
        return dispatched_between(ids)

    first, last = wait_until("the relay's drain of the backlog", 600, drained, 0.1)
    server_cpu = tree_cpu(processes.pid("temporal")) - server_cpu
    return {
        "starts": len(ids),
        "seconds": last - spawned,
        "starts_per_s": len(ids) / (last - spawned),
        # Spawn -> first batch recorded: the daemon's start-up and its first claim.
        "first_dispatched_s": first - spawned,
        "server_cpu_s_per_1000": server_cpu * 1000 / len(ids),
    }


def start_inputs(ids: list[int]) -> list[dict[str, Any]]:
    """The backlog rows' workflow inputs, memos and summaries, as the relay sends them, under
    other workflow ids."""
    from triggers.models import Trigger

    from trigger_relay.models import OutboxRow

    names = dict(Trigger.objects.values_list("id", "name"))
    starts = []
    for row in OutboxRow.objects.filter(id__in=ids).order_by("id"):
        starts.append(
            {
                "id": f"bench-raw-{row.id}-g{row.generation}-{row.firing_uuid}",
                "input": {
                    "outbox_id": row.id,
                    "generation": row.generation,
                    "firing_uuid": str(row.firing_uuid),
                    "event_id": row.event_id,
                    "trigger_id": row.trigger_id,
                    "user_pk": row.user_pk,
                    "context_json": json.dumps(row.context),
                    "created_at": row.created_at.isoformat(),
                    "due_at": row.due_at.isoformat(),
                },
                "memo": {
                    "outbox_id": row.id,
                    "trigger_id": row.trigger_id,
                    "trigger_name": names.get(row.trigger_id),
                    "event_id": row.event_id,
                    "user_pk": row.user_pk,
                },
                "summary": f"outbox row {row.id} (trigger {row.trigger_id}, user {row.user_pk})",
            }
        )
    return starts


async def raw_starts(address: str, starts: list[dict[str, Any]]) -> float:
    """Seconds the Temporal Python client takes for ``starts``, STARTS_IN_FLIGHT at a time
    (connected before the clock starts)."""
    from temporalio.client import Client
    from temporalio.common import WorkflowIDConflictPolicy
    from temporalio.common import WorkflowIDReusePolicy

    client = await Client.connect(address)
    todo = iter(starts)

    async def starter() -> None:
        for start in todo:  # one iterator shared by the starters: each start is taken once
            await client.start_workflow(
                "trigger_workflow",
                start["input"],
                id=start["id"],
                task_queue=UNPOLLED_QUEUE,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                memo=start["memo"],
                static_summary=start["summary"],
            )

    started = time.perf_counter()
    await asyncio.gather(*(starter() for _ in range(STARTS_IN_FLIGHT)))
    return time.perf_counter() - started


def raw_start_rate(processes: Processes, ids: list[int]) -> dict[str, float]:
    starts = start_inputs(ids)
    server_cpu = tree_cpu(processes.pid("temporal"))
    seconds = asyncio.run(raw_starts(f"127.0.0.1:{processes.temporal_port}", starts))
    server_cpu = tree_cpu(processes.pid("temporal")) - server_cpu
    return {
        "starts": len(starts),
        "seconds": seconds,
        "starts_per_s": len(starts) / seconds,
        "server_cpu_s_per_1000": server_cpu * 1000 / len(starts),
    }


def temporal_json(processes: Processes, *args: str) -> Any:
    """``temporal workflow <args> --output json`` against the bench's dev server, parsed."""
    out = subprocess.run(
        [
            str(VENV_BIN / "temporal"),
            "workflow",
            *args,
            *("--address", f"127.0.0.1:{processes.temporal_port}", "--output", "json"),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def running_workflows(processes: Processes, task_queue: str) -> int:
    query = f"ExecutionStatus = 'Running' AND TaskQueue = '{task_queue}'"
    return int(temporal_json(processes, "count", "--query", query).get("count", 0))


def start_rate_phase(
    processes: Processes, daemon: Path, users: list[Any], n: int, label: str, relay_first: bool
) -> dict[str, Any]:
    """Relay vs raw starts on the same server, only starts running on it: a backlog of ``n``
    rows written with the daemon stopped, drained by a relay-only daemon; the same number of
    starts from the Python client. Leaves the daemon stopped and the backlog deleted."""
    from trigger_relay.models import OutboxRow

    # The route's last workflows finish first: their tasks would run during the measure.
    wait_until(
        "the Temporal route's workflows to finish",
        60,
        lambda: running_workflows(processes, WORKFLOW_QUEUE) == 0,
        every=0.5,
    )
    processes.stop_daemon()
    ids = write_backlog(users, n, label)
    measures: dict[str, Callable[[], dict[str, float]]] = {
        "relay": lambda: relay_drain(processes, daemon, ids),
        "raw": lambda: raw_start_rate(processes, ids),
    }
    result: dict[str, Any] = {}
    for kind in ("relay", "raw") if relay_first else ("raw", "relay"):
        result[kind] = measures[kind]()
    processes.stop_daemon()
    # Dispatched rows of workflows that never run: the reconciler would describe them.
    OutboxRow.objects.filter(id__in=ids).delete()
    result["relay_over_raw"] = result["relay"]["starts_per_s"] / result["raw"]["starts_per_s"]
    return result


def history(processes: Processes, workflow_id: str) -> list[dict[str, Any]]:
    return list(temporal_json(processes, "show", "--workflow-id", workflow_id)["events"])


def history_events(processes: Processes, label: str) -> int:
    """Events in the history of the last finished firing's workflow of phase ``label``."""
    from trigger_relay.models import OutboxRow

    rows = OutboxRow.objects.filter(state="done", context__task_title__startswith=f"{label} ")
    row = rows.order_by("-id").first()
    if row is None or not row.workflow_id:
        raise SystemExit("bench: no finished Temporal firing to count history events of")
    return len(history(processes, row.workflow_id))


#: Stages of a firing without delay: (name, from event type, to event type), each the first
#: event of its type in the history.
STAGES = (
    ("start -> first workflow task picked up", "workflowexecutionstarted", "workflowtaskstarted"),
    ("the daemon's first workflow task", "workflowtaskstarted", "workflowtaskcompleted"),
    ("perform scheduled -> picked up", "activitytaskscheduled", "activitytaskstarted"),
    ("perform (the Python activity)", "activitytaskstarted", "activitytaskcompleted"),
    (
        "perform completed -> workflow completed",
        "activitytaskcompleted",
        "workflowexecutioncompleted",
    ),
)


def latency_breakdown(processes: Processes, label: str) -> dict[str, list[float]]:
    """Where a one-at-a-time firing's time goes, from the histories of the latency phase's
    Temporal rows (event times are the server's clock, the same machine's)."""
    from trigger_relay.models import OutboxRow

    stages: dict[str, list[float]] = {"row written -> workflow started": []}
    stages.update({name: [] for name, _, _ in STAGES})
    rows = OutboxRow.objects.filter(context__task_title__startswith=f"{label} latency ")
    for row in rows.exclude(workflow_id=None):
        times: dict[str, float] = {}
        for event in history(processes, row.workflow_id):
            kind = str(event["eventType"]).lower().replace("_", "").removeprefix("eventtype")
            when = dt.datetime.fromisoformat(str(event["eventTime"]).replace("Z", "+00:00"))
            times.setdefault(kind, when.timestamp())
        if "workflowexecutionstarted" in times:
            started = times["workflowexecutionstarted"]
            stages["row written -> workflow started"].append(
                (started - row.created_at.timestamp()) * 1000
            )
        for name, start, end in STAGES:
            if start in times and end in times:
                stages[name].append((times[end] - times[start]) * 1000)
    return stages


# ---------------------------------------------------------------------------------------
# Report


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def spread(values: list[float], digits: int = 1) -> str:
    if not values or not any(values):
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def report(results: dict[str, Any]) -> str:
    runs = results["repeats"]
    phases = [phase for phase in (*ROUTES, BASELINE) if phase in runs[0]]
    rows: list[tuple[str, dict[str, list[float]], bool, int]] = []

    def add(
        label: str,
        pick: Callable[[str, dict[str, Any]], float],
        *,
        ratio: bool = True,
        digits: int = 1,
    ) -> None:
        values = {phase: [pick(phase, run[phase]) for run in runs] for phase in phases}
        rows.append((label, values, ratio, digits))

    for q in (50, 99):
        add(
            f"fire call incl. commit, p{q} (ms)",
            lambda _, x, q=q: percentile(x["latency"]["fire_ms"], q),
        )
    for q in (50, 99):
        add(
            f"fire -> action performed, p{q} (ms)",
            lambda _, x, q=q: percentile(x["latency"]["fire_to_action_ms"], q),
        )
    for q in (50, 99):
        add(
            f"row written -> workflow started (NOTIFY), p{q} (ms)",
            lambda r, x, q=q: (
                percentile(x["latency"]["row_to_start_ms"], q) if r != "celery" else 0
            ),
        )
    for q in (50, 99):
        add(
            f"row written -> workflow started (poll only, every "
            f"{results['poll_interval_s']:g} s), p{q} (ms)",
            lambda _, x, q=q: (
                percentile(x["poll_latency"]["row_to_start_ms"], q) if "poll_latency" in x else 0
            ),
            ratio=False,
        )
    backlog = results["backlog"]
    for kind, label in (
        ("relay", f"relay-only daemon, {backlog} pending rows: starts/s"),
        ("raw", f"raw starts, Python client, {STARTS_IN_FLIGHT} in flight: starts/s"),
    ):
        add(
            label,
            lambda _, x, k=kind: x["start_rate"][k]["starts_per_s"] if "start_rate" in x else 0,
            ratio=False,
        )
    add(
        "relay / raw starts",
        lambda _, x: x["start_rate"]["relay_over_raw"] if "start_rate" in x else 0,
        ratio=False,
        digits=2,
    )
    users = f", {results['users']} users" if results["users"] > 1 else ""
    add(
        f"sustained, {results['firings']} firings{users}: firings/s",
        lambda _, x: x["sustained"]["firings_per_s"],
    )
    names = sorted(
        {n for run in runs for r in phases for n in run[r]["sustained"]["cpu_s_per_1000"]}
    )
    for name in names:
        add(
            f"CPU s per 1,000 firings: {name}",
            lambda _, x, n=name: x["sustained"]["cpu_s_per_1000"][n],
            # Each route runs its own processes; the sum below is the comparison.
            ratio=name in ("postgres", "site (firing process)"),
        )
    # What a site runs on its own hosts; the Temporal cluster runs elsewhere in production.
    site = ("daemon", "worker", "postgres")
    add(
        "CPU s per 1,000 firings, site's hosts (Celery worker + PostgreSQL + Redis | "
        "daemon + worker + PostgreSQL)",
        lambda r, x: sum(
            x["sustained"]["cpu_s_per_1000"][n]
            for n in (("celery", "postgres", "redis") if r == "celery" else site)
        ),
    )
    add(
        "billable actions per firing (Temporal's `action` counter), sustained",
        lambda _, x: x["sustained"].get("actions", {}).get("actions_per_firing", 0),
        ratio=False,
        digits=2,
    )
    for n in map(str, results.get("fanout", [])):
        fanout = f"fan-out, one clock event for {n} users"
        add(f"{fanout}: firings/s", lambda _, x, n=n: x["fanout"][n]["firings_per_s"])
        add(
            f"{fanout}: the firing transaction (s)",
            lambda _, x, n=n: x["fanout"][n]["fire_s"],
            digits=2,
        )
        add(
            f"{fanout}: CPU s per 1,000 firings: temporal server",
            lambda _, x, n=n: x["fanout"][n]["cpu_s_per_1000"]["temporal server"],
            ratio=False,
        )
        add(
            f"{fanout}: CPU s per 1,000 firings, site's hosts (as above)",
            lambda r, x, n=n: sum(
                x["fanout"][n]["cpu_s_per_1000"][name]
                for name in (("celery", "postgres", "redis") if r == "celery" else site)
            ),
        )
        add(
            f"{fanout}: billable actions per firing",
            lambda _, x, n=n: x["fanout"][n].get("actions", {}).get("actions_per_firing", 0),
            ratio=False,
            digits=2,
        )
    for name in dict.fromkeys(n for run in runs for n in run["temporal"].get("stages_ms", {})):
        add(
            f"one at a time, p50 (ms): {name}",
            lambda r, x, n=name: (
                percentile(x["stages_ms"][n], 50) if x.get("stages_ms", {}).get(n) else 0
            ),
            ratio=False,
        )
    add(
        "workflow history events per firing (no delay)",
        lambda r, x: x.get("history_events", 0),
        ratio=False,
    )

    header = "| figure | Celery route (dj-triggers) | Temporal route | Temporal / Celery |"
    if BASELINE in phases:
        header += " Temporal, baseline daemon | Temporal / baseline |"
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for label, values, compare, digits in rows:
        median = {phase: statistics.median(values[phase]) for phase in phases}
        ratio = (
            f"{median['temporal'] / median['celery']:.2f}"
            if compare and median["celery"] > 0
            else "-"
        )
        celery, temporal = spread(values["celery"], digits), spread(values["temporal"], digits)
        line = f"| {label} | {celery} | {temporal} | {ratio} |"
        if BASELINE in phases:
            base = median[BASELINE]
            versus = f"{median['temporal'] / base:.2f}" if base > 0 else "-"
            line += f" {spread(values[BASELINE], digits)} | {versus} |"
        lines.append(line)
    for name in ("daemon", "worker"):
        idle, peak = results[f"{name}_rss_mib"]
        lines.append(f"| {name} RSS idle / peak (MiB) | - | {idle:.0f} / {peak:.0f} | - |")
    return "\n".join(lines)


def notes(results: dict[str, Any]) -> str:
    """What the table's figures were measured against."""
    return "\n".join(
        (
            f"Temporal dev server: {results['temporal_server']}, "
            f"history.transferProcessorMaxPollRPS={results['transfer_poll_rps']}; "
            f"{results['users']} user(s) for the sustained and backlog firings.",
            f"Start rate: the relay-only daemon (TRIGGER_RELAY_MODE=relay, "
            f"MAX_IN_FLIGHT={STARTS_IN_FLIGHT}) timed from its spawn to the last of "
            f"{results['backlog']} rows dispatched; raw: the same inputs started by the "
            f"Temporal Python client, {STARTS_IN_FLIGHT} in flight; both on a task queue "
            "nobody polls. We measured the Python and Rust clients "
            "equal against this dev server (SQLite file, default journal, 32 in flight: "
            "35-36 starts/s each; in memory: Python 96-111, Rust 111-122): the raw figure is "
            "the server's rate, not the Python client's.",
            *action_notes(results),
        )
    )


def action_notes(results: dict[str, Any]) -> list[str]:
    """Billable actions per firing by `action_type`, from the first repeat's Temporal route."""
    run = results["repeats"][0]["temporal"]
    phases = [("sustained", run["sustained"])]
    phases += [(f"fan-out {n}", fanout) for n, fanout in run.get("fanout", {}).items()]
    lines = []
    for name, phase in phases:
        counted = phase.get("actions")
        if counted:
            kinds = ", ".join(f"{k} {v:.2f}" for k, v in counted["per_firing_by_type"].items())
            lines.append(
                f"Actions per firing, repeat 1, {name} (namespace {results['namespace']}): "
                f"{kinds}; other namespaces' actions meanwhile: "
                f"{counted['other_namespaces_actions']:g}."
            )
    return lines


def fanout_sizes(value: str) -> list[int]:
    """``--fanout``: comma-separated user counts, in the order given; empty for none."""
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of counts: {value!r}"
        ) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--firings",
        type=int,
        default=1000,
        help="sustained firings per route and repeat",
    )
    parser.add_argument(
        "--latency",
        type=int,
        default=40,
        help="one-at-a-time firings per route and repeat",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--backlog",
        type=int,
        default=2000,
        help="pending rows the relay drains, and raw starts, per repeat (start rate)",
    )
    parser.add_argument(
        "--users",
        type=int,
        default=1,
        help="users the sustained and backlog firings are spread over",
    )
    parser.add_argument(
        "--fanout",
        type=fanout_sizes,
        default="2000,20000",
        help="users one clock event is fired for in one transaction, per fan-out phase "
        "(comma-separated; '' for none); the run creates as many users as the largest",
    )
    parser.add_argument(
        "--server",
        choices=tuple(SERVERS),
        default="wal",
        help="the dev server's store: SQLite file in WAL mode (as the demo) or in memory",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=5.0,
        help="TRIGGER_RELAY_POLL_INTERVAL (s) of the poll-only phase; the daemon's default 5",
    )
    parser.add_argument(
        "--daemon", type=Path, default=ROOT / "target" / "release" / "trigger-relay"
    )
    parser.add_argument(
        "--baseline-daemon",
        type=Path,
        default=None,
        help="another daemon build to run the Temporal route with too, for comparison",
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs' directory")
    parser.add_argument(
        "--transfer-poll-rps",
        type=int,
        default=1000,
        help="the dev server's history.transferProcessorMaxPollRPS: the demo's 1000, or the "
        "server's default 20",
    )
    parser.add_argument(
        "--task-queue-partitions",
        type=int,
        default=None,
        help="the dev server's partitions per task queue (default: the server's, 4)",
    )
    args = parser.parse_args()
    if not args.daemon.exists():
        raise SystemExit(f"bench: no daemon at {args.daemon} (cargo build --release, or --daemon)")
    if args.baseline_daemon is not None and not args.baseline_daemon.exists():
        raise SystemExit(f"bench: no baseline daemon at {args.baseline_daemon}")
    if min(args.backlog, args.users, args.latency, args.firings, *args.fanout) < 1 or (
        args.poll_interval < 0.01
    ):
        raise SystemExit(
            "bench: --backlog, --users, --latency, --firings and --fanout must be >= 1, "
            "--poll-interval >= 0.01"
        )
    poll_only = {
        "TRIGGER_RELAY_LISTEN": "false",
        "TRIGGER_RELAY_POLL_INTERVAL": f"{round(args.poll_interval * 1000)}ms",
    }
    phases: tuple[str, ...] = (*ROUTES, BASELINE) if args.baseline_daemon else ROUTES

    workdir = Path(tempfile.mkdtemp(prefix="trigger-relay-bench-"))
    create_database()
    setup_django()
    import redis

    redis_client = redis.Redis.from_url(BROKER_URL)
    redis_client.flushdb()
    everyone, triggers = seed(max([args.users, *args.fanout]))
    users = everyone[: args.users]
    processes = Processes(workdir, args.daemon)
    results: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()},
        "firings": args.firings,
        "latency_firings": args.latency,
        "backlog": args.backlog,
        "users": args.users,
        "fanout": args.fanout,
        "namespace": NAMESPACE,
        "poll_interval_s": args.poll_interval,
        "starts_in_flight": STARTS_IN_FLIGHT,
        "daemon": str(args.daemon),
        "baseline_daemon": str(args.baseline_daemon) if args.baseline_daemon else None,
        "server": args.server,
        "temporal_server": SERVERS[args.server],
        "task_queue_partitions": args.task_queue_partitions,
        "transfer_poll_rps": args.transfer_poll_rps,
        "repeats": [],
    }
    try:
        processes.start(args.server, args.task_queue_partitions, args.transfer_poll_rps)
        pids = {
            "temporal server": processes.pid("temporal"),
            "daemon": processes.pid("daemon"),
            "worker": processes.pid("worker"),
            "celery": processes.pid("celery"),
            "postgres": postgres_pid(),
            "redis": int(redis_client.info("server")["process_id"]),
        }
        # Warm-up: one firing per route, waited for (workers polling, caches, connections).
        for route in ROUTES:
            enable_only(triggers, route)
            latency_phase(users[0], 1, f"warm-up {route}")
        idle_rss = {name: rss_mib(pids[name])[0] for name in ("daemon", "worker")}
        for repeat in range(args.repeats):
            run: dict[str, Any] = {}
            order = phases if repeat % 2 == 0 else tuple(reversed(phases))
            for phase in order:
                route = "temporal" if phase == BASELINE else phase
                if route == "temporal":
                    daemon = args.baseline_daemon if phase == BASELINE else args.daemon
                    pids["daemon"] = processes.use_daemon(daemon)
                enable_only(triggers, route)
                label = f"r{repeat} {phase}"
                print(
                    f"bench: repeat {repeat + 1}/{args.repeats}, {phase}"
                    f"{' daemon' if phase == BASELINE else ' route'}",
                    file=sys.stderr,
                )
                run[phase] = {"latency": latency_phase(users[0], args.latency, label)}
                actions = route == "temporal"
                before = settled_actions(processes) if actions else {}
                run[phase]["sustained"] = sustained_phase(users, args.firings, label, pids)
                if actions:
                    run[phase]["sustained"]["actions"] = actions_between(
                        before, settled_actions(processes), args.firings, f"{label} sustained"
                    )
                run[phase]["fanout"] = {}
                for n in args.fanout:
                    print(
                        f"bench: repeat {repeat + 1}/{args.repeats}, {phase}, fan-out {n}",
                        file=sys.stderr,
                    )
                    enable_only(triggers, CLOCK.format(route))
                    before = settled_actions(processes) if actions else {}
                    fanout = fanout_phase(
                        everyone, n, triggers[CLOCK.format(route)], f"{label} fan-out {n}", pids
                    )
                    if actions:
                        fanout["actions"] = actions_between(
                            before, settled_actions(processes), n, f"{label} fan-out {n}"
                        )
                    run[phase]["fanout"][str(n)] = fanout
                enable_only(triggers, route)
                if route == "temporal":
                    run[phase]["stages_ms"] = latency_breakdown(processes, label)
                    run[phase]["history_events"] = history_events(processes, label)
                    run[phase]["daemon_peak_rss_mib"] = rss_mib(pids["daemon"])[1]
                if phase == "temporal":
                    print(f"bench: repeat {repeat + 1}/{args.repeats}, poll only", file=sys.stderr)
                    processes.use_daemon(args.daemon, poll_only)
                    run[phase]["poll_latency"] = poll_latency_phase(
                        users[0], args.latency, label, args.poll_interval, random.Random(repeat)
                    )
                    print(f"bench: repeat {repeat + 1}/{args.repeats}, start rate", file=sys.stderr)
                    run[phase]["start_rate"] = start_rate_phase(
                        processes, args.daemon, users, args.backlog, label, repeat % 2 == 0
                    )
                    pids["daemon"] = processes.use_daemon(args.daemon)
            run["worker_peak_rss_mib"] = rss_mib(pids["worker"])[1]
            results["repeats"].append(run)
        peaks = [run["temporal"]["daemon_peak_rss_mib"] for run in results["repeats"]]
        results["daemon_rss_mib"] = (idle_rss["daemon"], max(peaks))
        peaks = [run["worker_peak_rss_mib"] for run in results["repeats"]]
        results["worker_rss_mib"] = (idle_rss["worker"], max(peaks))
    finally:
        processes.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"bench: logs in {workdir}", file=sys.stderr)

    table = report(results)
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"end_to_end-{results['started_at'].replace(':', '')}.json"
    out.write_text(json.dumps(results, indent=1))
    print(table)
    print(f"\n{notes(results)}")
    print(f"\nJSON: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
