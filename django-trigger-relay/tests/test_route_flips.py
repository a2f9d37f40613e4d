"""Flipping routes under load (guarantees §2.3).

Real processes, no mocks: a Temporal dev server, the daemon, the Python worker
(tests_support/harness.py) and a Celery worker (tests_support/celery_worker.py), all on the
test database; the Celery worker on the run's own Redis queue.

Ten triggers (three of them with a delay of 1, 2 and 3 s) each have one RecordAction. Firing
threads fire them continuously, each firing in a transaction of its own, while a flipper
thread flips random triggers' routes (``trigger_relay.firing.routes.set_routes``) at random
moments. Each firing is one (user, trigger) pair never fired again, with its number in its
context (``firing_id``), so that its performance is found as the one ActionWrite of that user
and trigger.

The path a firing took is read from the database afterwards: it has an outbox row (Temporal)
or not (Celery). The route "at the moment it fired" is known exactly for most firings:
every flip stores a unique ``changed_by``, and the firing's transaction reads the trigger's
route row before and after ``fire_single``; the receiver reads it in between (READ
COMMITTED: each statement sees what was committed when it began), so when both reads agree
the receiver saw that very route. A firing during which a flip committed is counted as
"raced" and may have taken either path (but exactly one).

Then, once the outbox rows are final and Celery holds nothing more of the queue: every
firing performed exactly once, on its path, by that path's worker process, no row left
pending or dispatched, and the counts per path add up to the firings.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db import transaction
from relay_e2e.models import ActionWrite
from relay_e2e.models import RecordAction
from tasks.models import TaskCompletedEvent
from tests_support.broker import CeleryQueue
from tests_support.celery_worker import CeleryWorker
from tests_support.celery_worker import celery_worker
from tests_support.celery_worker import drained
from tests_support.celery_worker import unacked
from tests_support.harness import FINAL_STATES
from tests_support.harness import Harness
from tests_support.harness import HarnessError
from tests_support.harness import wait_until
from triggers.models import Trigger

from trigger_relay import conf
from trigger_relay.firing.routes import set_routes
from trigger_relay.models import OutboxRow
from trigger_relay.models import TriggerRoute

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

logger = logging.getLogger(__name__)

#: Delay of each trigger's event, in seconds: three of the ten are delayed.
DELAYS = (0, 0, 0, 0, 0, 0, 0, 1, 2, 3)
USERS = 200
FIRINGS = len(DELAYS) * USERS  # 2,000: each (user, trigger) pair fired once
FIRING_THREADS = 4
#: Generous: a loaded 2-core machine; nothing below is a timed assertion.
SETTLE_TIMEOUT = 900

Version = tuple[str, str]  # (route, changed_by) of a trigger's route row


@dataclass(frozen=True)
class Firing:
    firing_id: int
    trigger_id: int
    user_id: int
    before: Version
    after: Version


@pytest.fixture
def flip_harness(tmp_path: Path, transactional_db: None) -> Iterator[Harness]:
    harness = Harness(tmp_path, run_id=str(settings.RUN_ID))
    try:
        harness.start()
        harness.begin_test()
        yield harness
    finally:
        harness.stop()


@pytest.fixture
def flip_celery(
    flip_harness: Harness, celery_queue: CeleryQueue, tmp_path: Path
) -> Iterator[CeleryWorker]:
    """A Celery worker that journals to the harness's journal."""
    with celery_worker(
        tmp_path / "celery-worker.log",
        env={"TRIGGER_RELAY_E2E_JOURNAL": str(flip_harness.journal)},
    ) as worker:
        yield worker


def route_version(trigger_id: int) -> Version:
    route, changed_by = (
        TriggerRoute.objects.filter(trigger_id=trigger_id).values_list("route", "changed_by").get()
    )
    return route, changed_by


class Plan:
    """The firings still to do, handed out to the threads one by one."""

    def __init__(self, pairs: list[tuple[int, int, int]]) -> None:
        self._pairs = iter(pairs)
        self._lock = threading.Lock()

    def next(self) -> tuple[int, int, int] | None:
        with self._lock:
            return next(self._pairs, None)


def fire_continuously(plan: Plan, fired: list[Firing], errors: list[BaseException]) -> None:
    """A firing thread, with its own database connection: fire until the plan is done."""
    try:
        events = {
            event.trigger_id: event
            for event in TaskCompletedEvent.objects.select_related("trigger")
        }
        while (item := plan.next()) is not None:
            firing_id, trigger_id, user_id = item
            with transaction.atomic():
                before = route_version(trigger_id)
                events[trigger_id].fire_single(user_id, firing_id=firing_id)
                after = route_version(trigger_id)
            fired.append(Firing(firing_id, trigger_id, user_id, before, after))
    except BaseException as exc:  # reported by the test
        errors.append(exc)
    finally:
        connection.close()


def flip_at_random(
    trigger_ids: list[int],
    stop: threading.Event,
    flips: list[int],
    errors: list[BaseException],
    rng: random.Random,
) -> None:
    """The flipper thread: flip 1 to 3 random triggers, pause 0 to 30 ms, again, until
    stopped. Each flip stores a ``changed_by`` of its own."""
    try:
        number = 0
        while not stop.is_set():
            for trigger_id in rng.sample(trigger_ids, rng.randint(1, 3)):
                current = TriggerRoute.objects.get(trigger_id=trigger_id).route
                number += 1
                other = conf.CELERY if current == conf.TEMPORAL else conf.TEMPORAL
                assert set_routes([trigger_id], other, changed_by=f"flip #{number}") == [trigger_id]
                flips.append(trigger_id)
            time.sleep(rng.uniform(0, 0.03))
    except BaseException as exc:
        errors.append(exc)
    finally:
        connection.close()


def test_flipping_routes_under_load_performs_every_firing_once_on_its_path(
    flip_harness: Harness, flip_celery: CeleryWorker, celery_queue: CeleryQueue
) -> None:
    harness = flip_harness
    started = time.monotonic()
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)

    triggers = []
    for number, delay in enumerate(DELAYS):
        trigger = Trigger.objects.create(name=f"Flip {number} (delay {delay}s)", is_enabled=True)
        TaskCompletedEvent.objects.create(trigger=trigger, delay=dt.timedelta(seconds=delay))
        RecordAction.objects.create(trigger=trigger, label=f"flip-{number}")
        triggers.append(trigger)
    trigger_ids = [trigger.pk for trigger in triggers]
    delay_of = dict(zip(trigger_ids, DELAYS, strict=True))
    half = len(trigger_ids) // 2
    set_routes(trigger_ids[:half], conf.TEMPORAL, changed_by="start")
    set_routes(trigger_ids[half:], conf.CELERY, changed_by="start")
    User = get_user_model()
    User.objects.bulk_create(
        User(username=f"flip{number}", email=f"flip{number}@example.com") for number in range(USERS)
    )
    user_ids = list(User.objects.filter(username__startswith="flip").values_list("pk", flat=True))
    assert len(user_ids) == USERS
    pairs = [(trigger_id, user_id) for trigger_id in trigger_ids for user_id in user_ids]
    rng.shuffle(pairs)
    plan = Plan(
        [(number, trigger_id, user_id) for number, (trigger_id, user_id) in enumerate(pairs, 1)]
    )

    fired: list[Firing] = []
    flips: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    firing_threads = [
        threading.Thread(target=fire_continuously, args=(plan, fired, errors), name=f"fire-{n}")
        for n in range(FIRING_THREADS)
    ]
    flipper = threading.Thread(
        target=flip_at_random, args=(trigger_ids, stop, flips, errors, rng), name="flipper"
    )
    flipper.start()
    for thread in firing_threads:
        thread.start()
    for thread in firing_threads:
        thread.join()
    stop.set()
    flipper.join()
    firing_seconds = time.monotonic() - started
    assert not errors, f"seed {seed}: {errors!r}"
    assert len(fired) == FIRINGS

    # -- the path each firing took, from the database ------------------------------------
    rows = list(OutboxRow.objects.values_list("context", "trigger_id", "user_pk"))
    rows_per_firing = Counter(context["firing_id"] for context, _t, _u in rows)
    assert max(rows_per_firing.values(), default=1) == 1, "a firing has two outbox rows"
    by_id = {firing.firing_id: firing for firing in fired}
    for context, trigger_id, user_pk in rows:
        firing = by_id[context["firing_id"]]
        assert (firing.trigger_id, str(firing.user_id)) == (trigger_id, user_pk)
    path_of = {
        firing.firing_id: conf.TEMPORAL if firing.firing_id in rows_per_firing else conf.CELERY
        for firing in fired
    }
    raced = [firing for firing in fired if firing.before != firing.after]
    wrong_path = [
        firing
        for firing in fired
        if firing.before == firing.after and path_of[firing.firing_id] != firing.before[0]
    ]
    counts = Counter(path_of.values())
    delayed = Counter(path_of[f.firing_id] for f in fired if delay_of[f.trigger_id])
    expected_celery = counts[conf.CELERY]

    # -- wait until both paths have done everything ----------------------------------------
    def temporal_settled() -> bool:
        return not OutboxRow.objects.exclude(state__in=FINAL_STATES).exists()

    wait_until(
        temporal_settled,
        timeout=SETTLE_TIMEOUT,
        interval=1,
        what=f"{counts[conf.TEMPORAL]} outbox rows final",
        services=harness.services,
    )

    def celery_settled() -> bool:
        assert flip_celery.alive(), f"the Celery worker exited\n{flip_celery.tail()}"
        return flip_celery.counts()[1] >= expected_celery and drained(flip_celery, celery_queue)

    try:
        wait_until(
            celery_settled,
            timeout=SETTLE_TIMEOUT,
            interval=1,
            what=f"{expected_celery} Celery tasks done (seed {seed})",
            services=harness.services,
        )
    except HarnessError as exc:
        raise AssertionError(f"{exc}\n{flip_celery.tail()}") from exc
    settled_seconds = time.monotonic() - started

    # -- every firing performed exactly once, on its path, by that path's worker ------------
    action_trigger = dict(RecordAction.objects.values_list("pk", "trigger_id"))
    writes = list(ActionWrite.objects.values_list("pk", "action_id", "user_id"))
    firing_of_pair = {(f.trigger_id, f.user_id): f.firing_id for f in fired}
    performed = Counter(
        firing_of_pair[(action_trigger[action_id], user_id)] for _pk, action_id, user_id in writes
    )
    wrote_pid = {entry["write"]: entry["pid"] for entry in harness.journal_entries("action_wrote")}
    returned = Counter(entry["pid"] for entry in harness.journal_entries("action_returned"))
    pid_of_path = {conf.TEMPORAL: harness.worker.pid, conf.CELERY: flip_celery.pid}
    performed_by = Counter(
        (path_of[firing_of_pair[(action_trigger[action_id], user_id)]], wrote_pid.get(pk))
        for pk, action_id, user_id in writes
    )
    states = Counter(OutboxRow.objects.values_list("state", flat=True))
    celery_received, celery_succeeded, celery_failed = flip_celery.counts()

    summary = (
        f"route flips under load (seed {seed}): {len(fired)} firings by {FIRING_THREADS} "
        f"threads in {firing_seconds:.1f}s, {len(flips)} flips; "
        f"temporal {counts[conf.TEMPORAL]} (delayed {delayed[conf.TEMPORAL]}), "
        f"celery {counts[conf.CELERY]} (delayed {delayed[conf.CELERY]}); "
        f"{len(raced)} fired while a flip of their trigger committed; "
        f"outbox rows {dict(states)}; celery tasks received {celery_received}, "
        f"succeeded {celery_succeeded}, failed {celery_failed}; "
        f"performed {sum(performed.values())}; all settled after {settled_seconds:.1f}s"
    )
    print(f"\n{summary}")
    logger.warning("%s", summary)

    assert len(flips) >= 100, summary
    assert not wrong_path, f"{summary}\nnot on their route's path: {wrong_path[:10]}"
    assert counts[conf.TEMPORAL] + counts[conf.CELERY] == FIRINGS, summary
    assert counts[conf.TEMPORAL] > 0, summary
    assert counts[conf.CELERY] > 0, summary
    missing = [f.firing_id for f in fired if performed[f.firing_id] == 0]
    doubled = {firing_id: n for firing_id, n in performed.items() if n > 1}
    assert not missing, f"{summary}\nnever performed: {missing[:20]} ({len(missing)})"
    assert not doubled, f"{summary}\nperformed more than once: {list(doubled.items())[:20]}"
    assert sum(performed.values()) == FIRINGS, summary
    assert states == {"done": counts[conf.TEMPORAL]}, summary
    assert performed_by == {
        (conf.TEMPORAL, pid_of_path[conf.TEMPORAL]): counts[conf.TEMPORAL],
        (conf.CELERY, pid_of_path[conf.CELERY]): counts[conf.CELERY],
    }, f"{summary}\nperformed by (path, pid): {dict(performed_by)}; pids {pid_of_path}"
    assert returned == {
        pid_of_path[conf.TEMPORAL]: counts[conf.TEMPORAL],
        pid_of_path[conf.CELERY]: counts[conf.CELERY],
    }, f"{summary}\naction_returned by pid: {dict(returned)}; pids {pid_of_path}"
    assert (celery_received, celery_succeeded, celery_failed) == (
        counts[conf.CELERY],
        counts[conf.CELERY],
        0,
    ), summary
    assert celery_queue.tasks() == [], summary
    assert unacked(celery_queue) == 0, summary
