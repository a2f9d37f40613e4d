"""The workflow input of an outbox row, for tests that call ``perform`` directly."""

from __future__ import annotations

import json
from typing import Any

from trigger_relay.models import OutboxRow

#: Leaves a key out of the workflow input, as the daemon before schema 3 did.
ABSENT: Any = object()


def workflow_input(row: OutboxRow, **changes: Any) -> dict[str, Any]:
    """The workflow input the daemon builds from ``row`` (docs/contract.md), with
    ``changes`` applied; a change to :data:`ABSENT` leaves its key out."""
    firing: dict[str, Any] = {
        "outbox_id": row.pk,
        "generation": row.generation,
        "event_id": row.event_id,
        "trigger_id": row.trigger_id,
        "user_pk": row.user_pk,
        "context_json": json.dumps(row.context),
        "created_at": row.created_at.isoformat(),
        "due_at": row.due_at.isoformat(),
        "firing_uuid": None if row.firing_uuid is None else str(row.firing_uuid),
    }
    firing.update(changes)
    return {key: value for key, value in firing.items() if value is not ABSENT}
