"""The action ledger (guarantees §3.4): which actions of an outbox row have completed, and
the idempotency key each action finds in its context.

The table is ``sql/schema/0002_action_ledger.sql``, mapped as
:class:`trigger_relay.models.LedgerEntry`. An entry is written in the same transaction as the
action's own database writes (:func:`record_performed`, called by
:mod:`trigger_relay.perform.core` under the lock), so it exists exactly when the action's work
committed.
"""

from __future__ import annotations

from trigger_relay.models import LedgerEntry

#: Context key under which each action finds its idempotency key (guarantees §3.4). Namespaced:
#: a site's own ``idempotency_key`` in the firing's context is left as it is.
IDEMPOTENCY_KEY = "trigger_relay_idempotency_key"


def idempotency_key(outbox_id: int, action_id: int) -> str:
    """Stable across retries, crashes and replays of the same outbox row."""
    return f"trigger-relay:{outbox_id}:{action_id}"


def record_performed(outbox_id: int, action_id: int, generation: int, key: str) -> None:
    """The action ``action_id`` of the row ``outbox_id`` has completed, in this transaction."""
    LedgerEntry.objects.create(
        outbox_id=outbox_id, action_id=action_id, generation=generation, idempotency_key=key
    )
