"""``manage.py trigger_relay_status`` (guarantees §2.5): per trigger its route, its outbox
rows by state and what Celery still holds for it, and whether Celery can be stopped.

What Celery holds is read from the run's own real Redis queue (no worker runs here: the
messages wait in the queue, as they do in a broker before a worker takes them).
"""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from tests_support.broker import CeleryQueue
from tests_support.factories import make_trigger

from trigger_relay.management.commands.trigger_relay_status import CAN_STOP

pytestmark = pytest.mark.django_db(transaction=True)


def status() -> dict[str, Any]:
    out = io.StringIO()
    call_command("trigger_relay_status", "--json", stdout=out)
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {trigger["name"]: trigger for trigger in report["triggers"]}


def test_status_says_when_celery_can_be_stopped(tx_user: Any, celery_queue: CeleryQueue) -> None:
    waiting = make_trigger("Waits in Celery", delay=dt.timedelta(days=2))
    moved = make_trigger("Already on Temporal")
    call_command("trigger_relay_route", "--trigger", "Already on Temporal", "--to", "temporal")
    with transaction.atomic():
        waiting.fire_single(tx_user.pk, task_id=1)
        waiting.fire_single(tx_user.pk, task_id=2)
        moved.fire_single(tx_user.pk, task_id=3)
    assert len(celery_queue.tasks()) == 2

    report = status()

    triggers = by_name(report)
    assert triggers["Waits in Celery"]["route"] == "celery"
    assert triggers["Waits in Celery"]["celery"] == {"queued": 2, "held": 0, "adopted": 0}
    assert triggers["Already on Temporal"]["outbox"] == {"pending": 1}
    assert triggers["Already on Temporal"]["source"] == "database"
    assert not report["can_stop_celery"]
    assert "1 trigger(s) still route to Celery" in report["verdict"]
    assert "holds 2 handle_event task(s) not adopted" in report["verdict"]

    # Move the last trigger and adopt what waits: nothing left that Celery would perform.
    call_command("trigger_relay_route", "--all", "--to", "temporal")
    call_command("trigger_relay_adopt_celery", stdout=io.StringIO())
    report = status()

    assert by_name(report)["Waits in Celery"]["celery"] == {"queued": 0, "held": 0, "adopted": 2}
    assert by_name(report)["Waits in Celery"]["outbox"] == {"pending": 2}
    assert report["can_stop_celery"]
    assert report["verdict"] == CAN_STOP

    text = io.StringIO()
    call_command("trigger_relay_status", stdout=text)
    assert text.getvalue().rstrip().endswith(CAN_STOP)


def test_status_links_each_trigger_to_its_firings_in_the_temporal_ui(
    tx_user: Any, celery_queue: CeleryQueue, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """guarantees §6.6: with ``TRIGGER_RELAY_TEMPORAL_UI_URL`` set, each trigger links to
    the Temporal UI's list of its workflows (search attribute ``TriggerId``)."""
    monkeypatch.delenv("TRIGGER_RELAY_TEMPORAL_NAMESPACE", raising=False)
    make_trigger("Linked")
    settings.TRIGGER_RELAY_TEMPORAL_UI_URL = None
    assert by_name(status())["Linked"]["temporal_ui"] is None
    text = io.StringIO()
    call_command("trigger_relay_status", stdout=text)
    assert "Temporal UI" not in text.getvalue()

    settings.TRIGGER_RELAY_TEMPORAL_UI_URL = "https://cloud.temporal.io/"
    settings.TRIGGER_RELAY_TEMPORAL_NAMESPACE = "site.a1b2c"
    linked = by_name(status())["Linked"]
    url = (
        "https://cloud.temporal.io/namespaces/site.a1b2c/workflows"
        f"?query=TriggerId%20%3D%20{linked['pk']}"
    )
    assert linked["temporal_ui"] == url
    text = io.StringIO()
    call_command("trigger_relay_status", stdout=text)
    assert f"{linked['pk']:>6}  {url}" in text.getvalue().splitlines()


def test_status_names_route_keys_that_match_no_trigger(
    celery_queue: CeleryQueue, settings: Any
) -> None:
    """A key left by a trigger deleted or renamed in the admin is only a warning of
    ``check``, which a deploy's output buries: the status names it, and still ends with the
    verdict."""
    kept = make_trigger("Kept")
    call_command("trigger_relay_route", "--all", "--to", "temporal")
    missing_pk = kept.trigger_id + 999
    settings.TRIGGER_RELAY_ROUTES = {
        "Kept": "temporal",
        "Deleted": "temporal",
        missing_pk: "celery",
    }

    report = status()

    assert report["unmatched_route_keys"] == ["Deleted", missing_pk]
    assert report["can_stop_celery"]
    text = io.StringIO()
    call_command("trigger_relay_status", stdout=text)
    lines = text.getvalue().rstrip().splitlines()
    assert lines[-1] == CAN_STOP
    assert lines[-2] == (
        "TRIGGER_RELAY_ROUTES keys that match no trigger (their routes apply to nothing): "
        f"'Deleted', {missing_pk}"
    )

    settings.TRIGGER_RELAY_ROUTES = {"Kept": "temporal"}
    assert status()["unmatched_route_keys"] == []
    text = io.StringIO()
    call_command("trigger_relay_status", stdout=text)
    assert "match no trigger" not in text.getvalue()
