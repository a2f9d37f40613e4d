"""Adopting the firings waiting in Celery (guarantees §2.5).

Real processes, no mocks: a Celery worker (tests_support/celery_worker.py) on the run's Redis
queue, and the Temporal dev server, daemon and Python worker of tests_support/harness.py, all
on the test database. 200 delayed firings go to Celery (due in 20 s, 40 s, 2 days, 5 days)
and the worker holds them (ETA tasks: unacknowledged in Redis). The triggers are routed to
Temporal and ``manage.py trigger_relay_adopt_celery`` adopts them while the worker keeps
running. Each one is performed once, by the Python worker through Temporal, at its original
due time; Celery performs none, after a warm restart nor after a SIGKILL and the broker's
redelivery; a rerun adopts nothing.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from tasks.models import SentEmail
from tests_support.broker import CeleryQueue
from tests_support.celery_worker import CeleryWorker
from tests_support.celery_worker import celery_worker
from tests_support.celery_worker import unacked
from tests_support.factories import make_trigger
from tests_support.harness import Harness
from tests_support.harness import wait_until

from trigger_relay.celery import adoption
from trigger_relay.celery import broker
from trigger_relay.celery import guard
from trigger_relay.firing.routes import set_routes
from trigger_relay.models import CeleryTaskClaim
from trigger_relay.models import LedgerEntry
from trigger_relay.models import OutboxRow

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

USERS = 50
#: Trigger name -> delay. The short ones fall due while the test watches; the long ones
#: stay waiting, in Temporal after the adoption, in the Celery worker's memory too.
DELAYS = {
    "Adopt 20s": dt.timedelta(seconds=20),
    "Adopt 40s": dt.timedelta(seconds=40),
    "Adopt 2d": dt.timedelta(days=2),
    "Adopt 5d": dt.timedelta(days=5),
}
SHORT = ("Adopt 20s", "Adopt 40s")
FIRINGS = USERS * len(DELAYS)

_ADOPTED_LINE = re.compile(r"Celery task triggers\.tasks\.handle_event\[([0-9a-f-]+)\] was adopted")


@pytest.fixture
def harness(tmp_path: Path, transactional_db: None) -> Iterator[Harness]:
    harness = Harness(tmp_path, run_id=str(settings.RUN_ID))
    try:
        harness.start()
        yield harness
    finally:
        harness.stop()


def adopt_command(*args: str) -> str:
    out = io.StringIO()
    call_command("trigger_relay_adopt_celery", *args, stdout=out)
    return out.getvalue()


def summary_count(output: str, label: str) -> int:
    match = re.search(rf"^  {re.escape(label)}:\s+(\d+)$", output, re.MULTILINE)
    assert match, f"no {label!r} in the summary:\n{output}"
    return int(match.group(1))


def adopted_in_log(worker: CeleryWorker) -> Counter[str]:
    """Task id -> how many times this worker skipped it as adopted."""
    return Counter(_ADOPTED_LINE.findall(worker.log.read_text(errors="replace")))


def redeliver_unacked() -> int:
    """What the Redis transport does once a dead worker's messages pass the visibility
    timeout (one hour by default): put each unacknowledged message of the run's queue back
    into the queue (kombu's own ``restore_by_tag``), here at once."""
    app = broker.celery_app()
    restored = 0
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        for tag, raw in channel.client.hgetall(channel.unacked_key).items():
            # Only this run's queue: the hash is shared with whatever else uses the database.
            if json.loads(raw)[2] == settings.CELERY_TASK_DEFAULT_QUEUE:
                channel.qos.restore_by_tag(tag)
                restored += 1
    return restored


def test_adopt_firings_waiting_in_celery(
    harness: Harness, celery_queue: CeleryQueue, tmp_path: Path
) -> None:
    events = {name: make_trigger(name, delay=delay) for name, delay in DELAYS.items()}
    trigger_ids = [event.trigger_id for event in events.values()]
    set_routes(trigger_ids, "celery", changed_by="test")
    users = [
        get_user_model().objects.create(username=f"ad{n}", email=f"ad{n}@example.com")
        for n in range(USERS)
    ]
    fire_time: dict[int, tuple[str, dt.datetime]] = {}  # firing number -> trigger, fired at

    with celery_worker(tmp_path / "celery-1.log") as worker:
        number = 0
        for user in users:
            for name, event in events.items():
                number += 1
                fire_time[number] = (name, timezone.now())
                with transaction.atomic():
                    event.fire_single(
                        user.pk, task_id=number, task_title=f"firing {number}", task_important=False
                    )
        # The worker holds every one of them until its ETA (unacknowledged in Redis).
        wait_until(
            lambda: unacked(celery_queue) == FIRINGS and not celery_queue.tasks(),
            timeout=60,
            what=f"the Celery worker holds {FIRINGS} ETA tasks",
        )
        waiting = {task.task_id: task for task in broker.find_tasks()}
        assert len(waiting) == FIRINGS
        assert not OutboxRow.objects.exists()

        # Only Temporal-routed triggers are adopted: route them first (then no new firing
        # goes to Celery), then adopt.
        dry = adopt_command("--dry-run", "--trigger", "Adopt 2d")
        assert summary_count(dry, "would adopt") == 0, dry
        assert f"routed to celery (route it to temporal first): {USERS}" in dry, dry
        set_routes(trigger_ids, "temporal", changed_by="test")
        dry = adopt_command("--dry-run", "--trigger", "Adopt 2d", "--trigger", "Adopt 5d")
        assert summary_count(dry, "would adopt") == 2 * USERS, dry
        assert not OutboxRow.objects.exists()
        assert not CeleryTaskClaim.objects.exists()
        output = adopt_command()
        assert summary_count(output, "found") == FIRINGS, output
        assert summary_count(output, "adopted") == FIRINGS, output
        assert f"{FIRINGS}/{FIRINGS} examined" in output
        assert "50/200 examined" in output

        # One outbox row per task, due at the task's own ETA, with its context.
        claims = dict(CeleryTaskClaim.objects.values_list("task_id", "outbox_id"))
        assert set(claims) == set(waiting)
        rows = OutboxRow.objects.in_bulk(list(claims.values()))
        assert len(rows) == FIRINGS
        for task_id, outbox_id in claims.items():
            task, row = waiting[task_id], rows[outbox_id]
            assert task.eta is not None
            assert abs(row.due_at - task.eta) < dt.timedelta(seconds=1)
            name, fired_at = fire_time[row.context["task_id"]]
            assert (row.event_id, row.trigger_id) == (events[name].pk, events[name].trigger_id)
            assert row.context == task.context
            assert abs(row.due_at - (fired_at + DELAYS[name])) < dt.timedelta(seconds=5)

        # Celery keeps running: the 20 s firings fall due in the worker, which skips them,
        # and Temporal performs them.
        first_short = [tid for tid in claims if rows[claims[tid]].trigger_id == trigger_ids[0]]
        wait_until(
            lambda: set(first_short) <= set(adopted_in_log(worker)),
            timeout=90,
            what="the first Celery worker skips the adopted 20 s firings",
        )
        skipped_by_first = adopted_in_log(worker)

    # Warm restart (the SIGTERM above: the worker puts what it holds back into the queue),
    # then a SIGKILL and the broker's redelivery of what the killed worker held.
    with celery_worker(tmp_path / "celery-2.log") as worker:
        wait_until(
            lambda: unacked(celery_queue) == FIRINGS - USERS and not celery_queue.tasks(),
            timeout=60,
            what="the restarted Celery worker holds the remaining tasks again",
        )
        worker.process.kill()
        worker.process.wait(10)
    assert redeliver_unacked() >= FIRINGS - USERS
    assert len(celery_queue.tasks()) == FIRINGS - USERS

    with celery_worker(tmp_path / "celery-3.log") as worker:
        second_short = [tid for tid in claims if rows[claims[tid]].trigger_id == trigger_ids[1]]
        wait_until(
            lambda: set(second_short) <= set(adopted_in_log(worker)),
            timeout=120,
            what="the third Celery worker skips the adopted 40 s firings",
        )
        short_ids = {claims[tid] for tid in first_short + second_short}
        harness.wait(
            lambda: (
                OutboxRow.objects.filter(pk__in=short_ids, state="done").count() == len(short_ids)
            ),
            what="Temporal performs the 100 short firings",
            timeout=120,
        )

        # Each short firing performed exactly once, by the Python worker (ledger), at or
        # after its due time; the long ones wait in Temporal, performed by no one.
        emails = Counter(SentEmail.objects.values_list("context__task_id", flat=True))
        assert len(emails) == 2 * USERS, emails
        assert set(emails.values()) == {1}, emails
        for row in OutboxRow.objects.filter(pk__in=short_ids):
            assert row.finished_at is not None
            assert row.finished_at >= row.due_at
            assert fire_time[row.context["task_id"]][0] in SHORT
            assert emails[row.context["task_id"]] == 1
        assert LedgerEntry.objects.filter(outbox_id__in=short_ids).count() == len(short_ids)
        long_rows = OutboxRow.objects.exclude(pk__in=short_ids)
        assert long_rows.count() == FIRINGS - 2 * USERS
        assert set(long_rows.values_list("state", flat=True)) == {"dispatched"}
        assert not LedgerEntry.objects.exclude(outbox_id__in=short_ids).exists()

        # The third worker holds the long ones again, and will skip them when due.
        wait_until(
            lambda: unacked(celery_queue) == FIRINGS - 2 * USERS,
            timeout=60,
            what="the third Celery worker holds the long tasks",
        )
        skipped = skipped_by_first + adopted_in_log(worker)
        assert set(skipped) == set(first_short) | set(second_short)

        # A rerun adopts nothing twice.
        output = adopt_command()
        assert summary_count(output, "found") == FIRINGS - 2 * USERS, output
        assert summary_count(output, "adopted") == 0, output
        assert summary_count(output, "already adopted") == FIRINGS - 2 * USERS, output
        assert OutboxRow.objects.count() == FIRINGS
        assert "ERROR" not in worker.log.read_text(errors="replace")


def test_guard_claims_for_celery_first_then_adoption_leaves_the_task(
    transactional_db: None,
) -> None:
    """A task a Celery worker started is never adopted: the claims exclude each other."""
    event = make_trigger("Claimed", delay=dt.timedelta(hours=1))
    set_routes([event.trigger_id], "temporal", changed_by="test")
    task = broker.WaitingTask(
        task_id="started-in-celery",
        where="test",
        event_id=event.pk,
        user_pk=1,
        context={"task_id": 1},
        eta=timezone.now() + dt.timedelta(hours=1),
    )
    assert guard.claim_for_celery(task.task_id).owner == "celery"
    assert adoption.adopt(task, event.trigger_id) == (adoption.STARTED_IN_CELERY, None)
    assert not OutboxRow.objects.exists()

    adopted = broker.WaitingTask(**{**task.__dict__, "task_id": "adopted"})
    result, row_id = adoption.adopt(adopted, event.trigger_id)
    assert result == adoption.ADOPTED
    assert adoption.adopt(adopted, event.trigger_id) == (adoption.ALREADY_ADOPTED, row_id)
    claim = guard.claim_for_celery("adopted")
    assert (claim.owner, claim.outbox_id) == ("temporal", row_id)
    assert OutboxRow.objects.get().due_at == adopted.eta


def test_guard_skips_an_adopted_task_body(transactional_db: None) -> None:
    """The wrapper around handle_event's run: an adopted task id returns without running
    dj-triggers' body; any other one runs it (once claimed for Celery)."""
    calls: list[tuple[Any, ...]] = []

    class FakeTask:
        class request:
            id = "t-1"

        @staticmethod
        def run(*args: Any, **kwargs: Any) -> str:
            calls.append(args)
            return "ran"

    fake = FakeTask()
    assert guard.guard_task(fake) is True
    assert guard.guard_task(fake) is False  # wrapped once
    CeleryTaskClaim.objects.create(task_id="t-1", owner="temporal", outbox_id=7)
    assert fake.run(1, 2) is None
    assert calls == []
    fake.request.id = "t-2"
    assert fake.run(1, 2) == "ran"
    assert calls == [(1, 2)]
    assert CeleryTaskClaim.objects.get(task_id="t-2").owner == "celery"


def test_guard_runs_the_task_before_migrate(transactional_db: None) -> None:
    """A worker of this version started before ``migrate`` (no claims' table): nothing can
    have been adopted, so dj-triggers' task runs rather than fails."""
    from django.db import connection

    calls: list[tuple[Any, ...]] = []

    class FakeTask:
        class request:
            id = "before-migrate"

        @staticmethod
        def run(*args: Any) -> str:
            calls.append(args)
            return "ran"

    fake = FakeTask()
    guard.guard_task(fake)
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE trigger_relay_celery_claim RENAME TO trigger_relay_cc_away")
    try:
        assert fake.run(3) == "ran"
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE trigger_relay_cc_away RENAME TO trigger_relay_celery_claim")
    assert calls == [(3,)]
