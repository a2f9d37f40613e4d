"""Firings findable in Temporal (guarantees §6.6), from a real firing of a real dj-triggers
trigger: the daemon names the trigger from dj-triggers' own table, and the workflow is found
by trigger name and user in a dev server that has the search attributes registered
(``TemporalServer.create``, tests_support/harness.py); its memo holds the firing.

The daemon's behaviour on a namespace without the attributes (memo only, one log line) is
tested in the repository's tests/findable.rs; test_e2e_temporal.py's server has none either.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings
from temporalio.client import Client
from test_e2e_temporal import relay_daemon
from test_e2e_temporal import unique_prefix
from test_e2e_temporal import wait_for_dispatch
from tests_support.factories import make_task
from tests_support.factories import make_trigger
from tests_support.harness import TemporalServer

from trigger_relay.models import OutboxRow

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NAME = "Rappel « urgent » l'été 🚀"
#: The relay's search attributes (the server adds its own, e.g. BuildIds once a worker ran a
#: workflow task).
OURS = frozenset({"TriggerRelayOutboxId", "TriggerId", "TriggerName", "EventId", "UserPk"})


@pytest.fixture(scope="module")
def temporal_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A dev server with the relay's search attributes registered, in memory."""
    server = TemporalServer.create(tmp_path_factory.mktemp("temporal-findable"))
    server.start()
    try:
        server.wait_ready()
        yield server.address
    finally:
        server.kill()


async def _listed(address: str, query: str, timeout: float = 30) -> list[dict[str, Any]]:
    """The workflows ``query`` finds (id, memo, names of our search attributes), once there
    are any."""
    client = await Client.connect(address)
    deadline = time.monotonic() + timeout
    while True:
        found = [
            {
                "id": execution.id,
                "memo": await execution.memo(),
                "attributes": sorted(set(execution.search_attributes) & OURS),
            }
            async for execution in client.list_workflows(query)
        ]
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.3)


@override_settings(TRIGGER_RELAY_ROUTES={NAME: "temporal"})
def test_a_firing_is_found_by_trigger_name_and_user(
    tx_user: Any, temporal_address: str, tmp_path: Path
) -> None:
    event = make_trigger(NAME, delay=dt.timedelta(hours=1))  # waits on its timer
    task = make_task(tx_user, "Find me")
    log = tmp_path / "trigger-relay.log"
    with relay_daemon(temporal_address, log, workflow_id_prefix=unique_prefix("find")) as daemon:
        with transaction.atomic():
            task.complete()
        (pending,) = OutboxRow.objects.all()
        row = wait_for_dispatch(pending.pk, daemon, log)

    escaped = NAME.replace("'", "\\'")
    query = f"TriggerName = '{escaped}' AND UserPk = \"{tx_user.pk}\""
    found = asyncio.run(_listed(temporal_address, query))
    assert [w["id"] for w in found] == [row.workflow_id], query
    (workflow,) = found
    assert workflow["memo"] == {
        "outbox_id": row.pk,
        "trigger_id": event.trigger_id,
        "trigger_name": NAME,
        "event_id": event.pk,
        "user_pk": str(tx_user.pk),
    }
    assert workflow["attributes"] == [
        "EventId",
        "TriggerId",
        "TriggerName",
        "TriggerRelayOutboxId",
        "UserPk",
    ]
    by_id = asyncio.run(_listed(temporal_address, f"TriggerId = {event.trigger_id}"))
    assert [w["id"] for w in by_id] == [row.workflow_id]
    assert "search attributes TriggerRelayOutboxId" in log.read_text()
