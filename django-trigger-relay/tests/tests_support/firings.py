"""Outbox rows as others see them: the workflow input the daemon builds from a row (for tests
that call ``perform`` directly), and the rows another session sees (what was committed)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from django.db import connection

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


def committed_rows() -> list[dict[str, Any]]:
    """Outbox rows as another session sees them: only what was committed."""
    params = connection.get_connection_params()
    with (
        psycopg.connect(
            dbname=params["dbname"], user=params["user"], host=params["host"], port=params["port"]
        ) as other,
        other.cursor(row_factory=psycopg.rows.dict_row) as cursor,
    ):
        cursor.execute("SELECT * FROM trigger_relay_outbox ORDER BY id")
        return cursor.fetchall()
