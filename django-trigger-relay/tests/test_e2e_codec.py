"""Payload encryption end to end (docs/operations.md, "Encrypting payloads"): a real dev
server, the daemon ``trigger-relay run`` and the Python worker ``manage.py
trigger_relay_worker``, both with the same key file (tests_support/harness.py).

- A firing is performed: the daemon's workflow worker and the Python activity worker both
  decrypt what the other encrypted; the history the server stores, fetched with Temporal's
  CLI, holds neither the context nor the user pk nor the site's exception text, and the row's
  ``last_error`` is still the real message (the daemon decrypts the failure's attributes).
- Key rotation: a firing started under key A is performed after the daemon and the worker
  are restarted with key B current and A kept for decryption.
- The daemon's codec endpoint and the Python codec read each other's payloads, and
  Temporal's sample format (test_codec.py has the codec's own rules).

The daemon's side alone (the endpoint's refusals, the start-up checks, the search
attributes) is in the repository's tests/codec.rs.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from relay_e2e.models import Flag
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus
from test_e2e_workflow import fire
from test_e2e_workflow import make_trigger
from test_e2e_workflow import make_user
from test_e2e_workflow import record_action
from test_e2e_workflow import task_event
from test_e2e_workflow import wait_final
from test_e2e_workflow import writes_of
from tests_support.harness import TEMPORAL_BIN
from tests_support.harness import Harness
from tests_support.harness import events_of
from tests_support.harness import serve

from trigger_relay import conf
from trigger_relay.models import OutboxRow
from trigger_relay.worker import codec

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, reset_sequences=True),
    pytest.mark.usefixtures("route_everything_to_temporal"),
]

KEY_A = os.urandom(32)
KEY_B = os.urandom(32)
TOKEN = "e2e-codec-token-" + base64.b16encode(os.urandom(8)).decode()
UI_ORIGIN = "http://ui.example:8233"
#: In the firing's context and in a failing action's message: never in Temporal's history.
CONTEXT_MARKER = "context-marker-5c1e"
FAILURE_MARKER = "failure-marker-77ab"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Keys:
    """The key file both processes read, and its current key id."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "keys"
        self.current = "a"
        self.write({"a": KEY_A})

    def write(self, keys: dict[str, bytes]) -> None:
        self.path.write_text("".join(f"{key_id}={b64(key)}\n" for key_id, key in keys.items()))

    def env(self) -> dict[str, str]:
        return {conf.KEYS_FILE: str(self.path), conf.CURRENT_KEY_ID: self.current}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("codec-keys"))


@pytest.fixture(scope="module")
def codec_harness(
    tmp_path_factory: pytest.TempPathFactory,
    django_db_setup: None,
    django_db_blocker: Any,
    keys: Keys,
) -> Iterator[Harness]:
    workdir = tmp_path_factory.mktemp("e2e-codec")
    token_file = workdir / "token"
    token_file.write_text(TOKEN + "\n")
    harness = Harness(
        workdir,
        run_id=str(settings.RUN_ID),
        daemon_env={
            **keys.env(),
            "TRIGGER_RELAY_CODEC_SERVER_TOKEN_FILE": str(token_file),
            "TRIGGER_RELAY_CODEC_CORS_ORIGIN": UI_ORIGIN,
            "TRIGGER_RELAY_VISIBILITY_PERSONAL_DATA": "false",
            "TRIGGER_RELAY_PERFORM_MAX_ATTEMPTS": "2",
            "TRIGGER_RELAY_STICKY_TIMEOUT": "2s",
        },
    )
    harness.worker.env.update(keys.env())
    yield from serve(harness, django_db_blocker)


@pytest.fixture
def harness(codec_harness: Harness, transactional_db: None) -> Harness:
    codec_harness.begin_test()
    return codec_harness


def wait_closed(harness: Harness, workflow_id: str) -> None:
    """Until the workflow has closed (its last task ran after the row's commit). Not through
    its result: the harness's client has no keys, and the result is encrypted."""
    harness.wait(
        lambda: harness.describe(workflow_id).status != WorkflowExecutionStatus.RUNNING,
        what=f"workflow {workflow_id} closed",
    )


def cli_history(harness: Harness, workflow_id: str, *codec_args: str) -> dict[str, Any]:
    """``temporal workflow show --output json``: the history as Temporal's CLI shows it."""
    result = subprocess.run(
        [
            str(TEMPORAL_BIN),
            "workflow",
            "show",
            "--workflow-id",
            workflow_id,
            "--address",
            harness.temporal.address,
            "--output",
            "json",
            *codec_args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def payloads_of(node: Any) -> Iterator[dict[str, Any]]:
    """Every payload (a JSON object with ``metadata`` and ``data``) in the CLI's history."""
    if isinstance(node, dict):
        if "metadata" in node and "data" in node:
            yield node
        for value in node.values():
            yield from payloads_of(value)
    elif isinstance(node, list):
        for value in node:
            yield from payloads_of(value)


def text_of(history: dict[str, Any]) -> str:
    """The history's JSON with every payload's data decoded from base64, as one text."""
    parts = [json.dumps(history)]
    parts += [
        base64.b64decode(payload["data"]).decode("utf-8", "replace")
        for payload in payloads_of(history)
    ]
    return "\n".join(parts)


def encoding(payload: dict[str, Any]) -> str:
    return base64.b64decode(payload["metadata"].get("encoding", "")).decode()


def key_id(payload: dict[str, Any]) -> str:
    return base64.b64decode(payload["metadata"].get("encryption-key-id", "")).decode()


def plaintext_payloads(history: dict[str, Any]) -> list[dict[str, Any]]:
    """Payloads that are not encrypted, but for the ones that cannot be: search attributes
    (the server indexes them) and the summary (the SDKs do not encode it)."""
    events = history["events"]
    exempt: list[Any] = []
    for event in events:
        started = event.get("workflowExecutionStartedEventAttributes", {})
        exempt += list(payloads_of(started.get("searchAttributes", {})))
        exempt += list(payloads_of(event.get("userMetadata", {})))
    return [p for p in payloads_of(events) if encoding(p) != "binary/encrypted" and p not in exempt]


def codec_request(harness: Harness, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://{harness.metrics_addr}/codec/{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def as_json(payload: Payload) -> dict[str, Any]:
    return {
        "metadata": {key: b64(value) for key, value in payload.metadata.items()},
        "data": b64(payload.data),
    }


def from_json(payload: dict[str, Any]) -> Payload:
    return Payload(
        metadata={key: base64.b64decode(value) for key, value in payload["metadata"].items()},
        data=base64.b64decode(payload["data"]),
    )


def test_a_firing_is_performed_and_the_history_holds_no_plaintext(harness: Harness) -> None:
    user = make_user("codec-user")
    trigger = make_trigger("e2e codec done")
    event = task_event(trigger, dt.timedelta())
    action = record_action(trigger, "performed")
    (row,) = fire(event, user, task_id=1, task_title=CONTEXT_MARKER, task_important=False)

    (row,) = wait_final(harness, [row])
    assert (row.state, row.last_error) == ("done", None)
    assert len(writes_of(f"trigger-relay:{row.pk}:{action.pk}")) == 1
    assert row.workflow_id
    wait_closed(harness, row.workflow_id)

    stored = cli_history(harness, row.workflow_id)
    assert plaintext_payloads(stored) == []
    text = text_of(stored)
    assert CONTEXT_MARKER not in text
    assert f'"user_pk": "{user.pk}"' not in text
    assert '"UserPk"' not in text
    (started,) = [e for e in stored["events"] if e["eventType"].endswith("EXECUTION_STARTED")]
    summary = started["userMetadata"]["summary"]
    assert base64.b64decode(summary["data"]).decode() == (
        f'"outbox row {row.pk} (trigger {trigger.pk})"'
    )

    # The same history through the daemon's codec endpoint, as an operator reads it.
    decoded = cli_history(
        harness,
        row.workflow_id,
        "--codec-endpoint",
        f"http://{harness.metrics_addr}/codec",
        "--codec-auth",
        f"Bearer {TOKEN}",
    )
    decoded_text = text_of(decoded)
    assert CONTEXT_MARKER in decoded_text
    assert f'"user_pk":"{user.pk}"' in decoded_text.replace(" ", "")


def test_a_failure_message_is_encrypted_and_recorded(harness: Harness) -> None:
    """The Python worker sends the site's exception text in the failure's encrypted
    attributes ("Encoded failure" in the clear); the daemon's workflow decrypts them and
    records the real message as ``last_error``."""
    user = make_user("codec-failure")
    trigger = make_trigger("e2e codec failure")
    event = task_event(trigger, dt.timedelta())
    Flag.set("codec-flag", True)
    action = record_action(trigger, FAILURE_MARKER, fail_while="codec-flag")
    (row,) = fire(event, user, task_id=2, task_title="t", task_important=False)

    (row,) = wait_final(harness, [row])
    assert row.state == "failed"
    assert row.last_error == (
        f"RuntimeError: action {FAILURE_MARKER!r}: flag 'codec-flag' is on "
        f"(in action {action.pk}, RecordAction)"
    )
    assert row.workflow_id
    wait_closed(harness, row.workflow_id)
    stored = cli_history(harness, row.workflow_id)
    assert FAILURE_MARKER not in text_of(stored)
    failures = [
        e["activityTaskFailedEventAttributes"]["failure"]
        for e in stored["events"]
        if "activityTaskFailedEventAttributes" in e
    ]
    assert failures
    assert all(failure["message"] == "Encoded failure" for failure in failures), failures
    assert plaintext_payloads(stored) == []


def test_the_endpoint_and_the_python_codec_read_each_other(harness: Harness) -> None:
    python = codec.EncryptionCodec(conf.KeyRing(keys={"a": KEY_A}, current="a"))
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"from": "python"}')

    # Rust encrypts, Python decrypts.
    (sealed,) = codec_request(harness, "encode", {"payloads": [as_json(plain)]})["payloads"]
    assert encoding(sealed) == "binary/encrypted"
    assert key_id(sealed) == "a"
    assert python.decrypt(from_json(sealed)) == plain
    # Python encrypts, Rust decrypts; and so does Temporal's sample format.
    nonce = os.urandom(12)
    sample = Payload(
        metadata={"encoding": b"binary/encrypted", "encryption-key-id": b"a"},
        data=nonce + AESGCM(KEY_A).encrypt(nonce, plain.SerializeToString(), None),
    )
    answer = codec_request(
        harness, "decode", {"payloads": [as_json(python.encrypt(plain)), as_json(sample)]}
    )
    assert [from_json(p) for p in answer["payloads"]] == [plain, plain]

    # A browser page of another origin gets nothing, even with the token.
    request = urllib.request.Request(
        f"http://{harness.metrics_addr}/codec/decode",
        data=json.dumps({"payloads": [sealed]}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Origin": "https://evil.example"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403


def test_key_rotation_keeps_old_firings_performable(harness: Harness, keys: Keys) -> None:
    """A firing started under key A waits for a Python worker (none runs); the daemon and the
    worker are restarted with key B current and A kept: the firing is performed, its start
    under A, the worker's result under B; a new firing is B throughout."""
    user = make_user("codec-rotation")
    trigger = make_trigger("e2e codec rotation")
    event = task_event(trigger, dt.timedelta())
    action = record_action(trigger, "rotated")
    harness.worker.terminate()
    # Stopped on purpose: the harness's waits fail on a service that died, not on one that
    # is not started.
    harness.worker.process = None
    (old,) = fire(event, user, task_id=3, task_title="t", task_important=False)

    def scheduled() -> str | None:
        row = OutboxRow.objects.get(pk=old.pk)
        if row.run_id is None or not row.workflow_id:
            return None
        history = harness.history(row.workflow_id)
        found = events_of(history, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
        return row.workflow_id if found else None

    workflow_id = harness.wait(scheduled, what="perform_firing scheduled under key A")

    harness.daemon.terminate()
    keys.write({"a": KEY_A, "b": KEY_B})
    keys.current = "b"
    harness.daemon.env.update(keys.env())
    harness.worker.env.update(keys.env())
    try:
        harness.start_daemon()
        harness.start_worker()
        (old,) = wait_final(harness, [old])
        assert (old.state, old.last_error) == ("done", None)
        assert len(writes_of(f"trigger-relay:{old.pk}:{action.pk}")) == 1
        wait_closed(harness, workflow_id)
        stored = cli_history(harness, workflow_id)
        assert plaintext_payloads(stored) == []
        (started,) = [e for e in stored["events"] if e["eventType"].endswith("EXECUTION_STARTED")]
        (start_input,) = started["workflowExecutionStartedEventAttributes"]["input"]["payloads"]
        assert key_id(start_input) == "a"
        (completed,) = [e for e in stored["events"] if "activityTaskCompletedEventAttributes" in e]
        (result,) = completed["activityTaskCompletedEventAttributes"]["result"]["payloads"]
        assert key_id(result) == "b"

        (new,) = fire(event, user, task_id=4, task_title="t", task_important=False)
        (new,) = wait_final(harness, [new])
        assert new.state == "done"
        assert new.workflow_id
        wait_closed(harness, new.workflow_id)
        ids = {key_id(p) for p in payloads_of(cli_history(harness, new.workflow_id)["events"])}
        assert ids - {""} == {"b"}
    finally:
        # The next tests start from key A alone (begin_test starts both again).
        harness.daemon.terminate()
        harness.worker.terminate()
        keys.write({"a": KEY_A})
        keys.current = "a"
        harness.daemon.env.update(keys.env())
        harness.worker.env.update(keys.env())
