"""``trigger_relay.perform.workflow_input.WorkflowInput`` says what the relay sends: its keys
against every input that ``perform_firing`` (and the workflow) received in the recorded histories
(``tests/histories/v*/`` at the repository's root, docs/versioning.md).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trigger_relay.perform.activity import PERFORM_FIRING
from trigger_relay.perform.workflow_input import WorkflowInput

HISTORIES = Path(__file__).resolve().parents[2] / "tests" / "histories"
WORKFLOW_TYPE = "trigger_workflow"
#: The one field of the activity's input that the workflow's own input never has.
ACTIVITY_ONLY = {"record_outcome"}


def _payload_values(payloads: dict[str, Any] | None, where: str) -> Iterator[Any]:
    for payload in (payloads or {}).get("payloads", ()):
        encoding = base64.b64decode(payload["metadata"]["encoding"]).decode()
        assert encoding == "json/plain", f"{where}: a payload encoded {encoding!r}"
        yield json.loads(base64.b64decode(payload["data"]))


def recorded_inputs() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(history, what received it, the input) of every perform_firing scheduled and every
    workflow started in the recorded histories."""
    for path in sorted(HISTORIES.glob("v*/*.json")):
        name = str(path.relative_to(HISTORIES))
        for event in json.loads(path.read_text())["events"]:
            attributes = event["attributes"]
            scheduled = attributes.get("ActivityTaskScheduledEventAttributes")
            started = attributes.get("WorkflowExecutionStartedEventAttributes")
            if scheduled is not None and scheduled["activity_type"]["name"] == PERFORM_FIRING:
                for value in _payload_values(scheduled["input"], name):
                    yield name, PERFORM_FIRING, value
            elif started is not None and started["workflow_type"]["name"] == WORKFLOW_TYPE:
                for value in _payload_values(started["input"], name):
                    yield name, WORKFLOW_TYPE, value


INPUTS = list(recorded_inputs())


def test_the_histories_hold_inputs_of_every_version() -> None:
    versions = {name.split("/")[0] for name, _, _ in INPUTS}
    assert versions == {path.name for path in HISTORIES.glob("v*") if path.is_dir()}
    assert {receiver for _, receiver, _ in INPUTS} == {PERFORM_FIRING, WORKFLOW_TYPE}


@pytest.mark.parametrize(
    ("history", "receiver", "value"),
    INPUTS,
    ids=[f"{name}:{receiver}" for name, receiver, _ in INPUTS],
)
def test_recorded_input_has_the_fields_of_the_type(
    history: str, receiver: str, value: dict[str, Any]
) -> None:
    assert isinstance(value, dict)
    fields = WorkflowInput.__required_keys__ | WorkflowInput.__optional_keys__
    assert set(value) <= fields, f"keys that WorkflowInput lacks: {sorted(set(value) - fields)}"
    missing = WorkflowInput.__required_keys__ - set(value)
    assert not missing, f"required fields absent: {sorted(missing)}"
    if receiver == WORKFLOW_TYPE:
        assert not ACTIVITY_ONLY & set(value)


def test_the_fields_absent_from_old_inputs_are_not_required() -> None:
    """What the daemon writes only sometimes (``#[serde(default)]`` in src/outbox.rs) is
    optional here, and what every input holds is required."""
    assert WorkflowInput.__optional_keys__ == {
        "firing_uuid",
        "context_json",
        "context",
        "record_outcome",
        "site",
    }
    every_input = set.intersection(*(set(value) for _, _, value in INPUTS))
    assert every_input == WorkflowInput.__required_keys__
