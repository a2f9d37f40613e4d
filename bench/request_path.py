"""Benchmark (docs/performance.md): what a firing costs the site's request, on each route,
in one run.

Each iteration is what the example's ``Task.complete()`` does in a request: a transaction that
saves the task, loads the event with its trigger and fires it for the user, then commits. Three
variants, interleaved iteration by iteration so that they share the machine's state:

  baseline   the same transaction without ``fire_single`` (what the site pays anyway)
  unrouted   dj-triggers' own ``fire_single`` with no receiver connected (what dj-triggers
             costs before anything is routed)
  celery     a trigger routed to Celery: the add-on's one statement finds the route, then
             dj-triggers' own receiver publishes ``handle_event`` to Redis
  temporal   a trigger routed to Temporal: the add-on's one statement finds the route and
             writes the outbox row (sql/queries/record_firing.sql)

and prints p50/p99 of each (milliseconds, the whole transaction with its commit) and its SQL
statements (BEGIN and COMMIT included), what each
route adds to the baseline at p50, and the ratio of the routes. Nothing is performed: no Celery
worker, no relay runs; the rows and the queue are dropped at the end.

Needs PostgreSQL on 127.0.0.1:5432 (trust auth; a throwaway database is created and dropped)
and Redis on 127.0.0.1:6379 (a queue of its own in database 15):

    .venv/bin/python bench/request_path.py [iterations per variant, default 2000]
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = uuid.uuid4().hex[:8]
DATABASE = f"trigger_relay_bench_request_path_{RUN}"
QUEUE = f"trigger-relay-bench-{RUN}"
WARMUP = 100

sys.path.insert(0, str(ROOT / "example"))
os.environ["DJANGO_SETTINGS_MODULE"] = "example_site.settings"
os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
os.environ["CELERY_BROKER_URL"] = "redis://127.0.0.1:6379/15"


def admin_sql(statement: str) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres") as conn:
        conn.autocommit = True
        conn.execute(statement)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main(iterations: int) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.db import transaction
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone
    from example_site.celery import app
    from tasks.models import SendEmailAction
    from tasks.models import Task
    from tasks.models import TaskCompletedEvent
    from triggers.models import Event
    from triggers.models import Trigger

    from trigger_relay.firing.receivers import DISPATCH_UID
    from trigger_relay.firing.receivers import on_event_fired
    from trigger_relay.firing.routes import set_routes

    app.conf.task_default_queue = QUEUE
    settings.TRIGGER_RELAY_ROUTES = {}
    call_command("migrate", verbosity=0)

    user = get_user_model().objects.create(username="bench", email="bench@example.com")
    task = Task.objects.create(user=user, title="bench")
    events: dict[str, int] = {}
    for route in ("celery", "temporal"):
        trigger = Trigger.objects.create(name=f"bench {route}", is_enabled=True)
        events[route] = TaskCompletedEvent.objects.create(trigger=trigger).pk
        SendEmailAction.objects.create(trigger=trigger, subject="s", body="b")
        set_routes([trigger.pk], route, changed_by="bench")  # type: ignore[arg-type]

    def request(event_pk: int, fire: bool) -> float:
        started = time.perf_counter()
        with transaction.atomic():
            task.completed_at = timezone.now()
            task.save(update_fields=["completed_at"])
            event = TaskCompletedEvent.objects.select_related("trigger").get(pk=event_pk)
            if fire:
                event.fire_single(
                    user.pk, task_id=task.pk, task_title=task.title, task_important=False
                )
        return (time.perf_counter() - started) * 1000

    def unrouted() -> float:
        # Outside the timed transaction: the add-on's receiver off for this request alone.
        Event.fired.disconnect(dispatch_uid=DISPATCH_UID)
        try:
            return request(events["temporal"], fire=True)
        finally:
            Event.fired.connect(on_event_fired, weak=False, dispatch_uid=DISPATCH_UID)

    variants: dict[str, Callable[[], float]] = {
        "no firing": lambda: request(events["temporal"], fire=False),
        "unrouted": unrouted,
        "celery": lambda: request(events["celery"], fire=True),
        "temporal": lambda: request(events["temporal"], fire=True),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for number in range(WARMUP + iterations):
        random.shuffle(names)
        for name in names:
            elapsed = variants[name]()
            if number >= WARMUP:
                samples[name].append(elapsed)

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM trigger_relay_outbox")
        (rows,) = cursor.fetchone()
    with app.connection_for_write() as broker:
        published = broker.default_channel.queue_purge(QUEUE)
        broker.default_channel.queue_delete(QUEUE)
    print(
        f"{iterations} requests per variant (after {WARMUP} of warm-up), interleaved;"
        f" {rows} outbox rows written, {published} Celery messages published"
    )
    # Statements per request, counted once more after the timed runs (not timed).
    statements = {}
    for name, variant in variants.items():
        # Django keeps the last 9,000 statements only; the count needs a log with room.
        connection.queries_log.clear()
        with CaptureQueriesContext(connection) as captured:
            variant()
        statements[name] = len(captured.captured_queries)
        if os.environ.get("BENCH_SHOW_SQL"):
            print(name, *(q["sql"][:150] for q in captured.captured_queries), sep="\n  ")
    print(f"{'variant':<10} {'p50 ms':>8} {'p99 ms':>8} {'statements':>11}")
    p50 = {}
    for name in variants:
        p50[name] = statistics.median(samples[name])
        print(
            f"{name:<10} {p50[name]:>8.3f} {percentile(samples[name], 0.99):>8.3f}"
            f" {statements[name]:>11}"
        )
    added = {route: p50[route] - p50["unrouted"] for route in ("celery", "temporal")}
    print(
        f"added to a firing at p50 (over unrouted): celery {added['celery']:.3f} ms,"
        f" temporal {added['temporal']:.3f} ms"
    )
    print(
        f"temporal / celery: {p50['temporal'] / p50['celery']:.2f} (whole request at p50),"
        f" {added['temporal'] / added['celery']:.2f} (what the firing adds)"
    )
    floor(iterations, events["temporal"], user.pk)


def floor(iterations: int, event_pk: int, user_pk: int) -> None:
    """What one round trip costs here, for scale: ``SELECT 1`` and the add-on's receiver alone
    (its one statement and its Python), each in a loop inside one transaction, so no commit
    is timed; mean milliseconds per call."""
    from django.db import connection
    from django.db import transaction
    from tasks.models import TaskCompletedEvent
    from triggers.models import Event

    from trigger_relay.firing.receivers import on_event_fired

    event = TaskCompletedEvent.objects.select_related("trigger").get(pk=event_pk)

    def select_one() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    def receiver() -> None:
        on_event_fired(Event, Event.fired, event=event, user_pk=user_pk, task_id=1)

    for name, call in (("SELECT 1", select_one), ("receiver alone", receiver)):
        with transaction.atomic():
            started = time.perf_counter()
            for _ in range(iterations):
                call()
            elapsed = (time.perf_counter() - started) / iterations * 1000
            transaction.set_rollback(True)
        print(f"{name}, in a loop without commits: {elapsed:.3f} ms per call")


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    admin_sql(f'CREATE DATABASE "{DATABASE}"')
    try:
        main(count)
    finally:
        from django.db import connections

        connections.close_all()
        admin_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
