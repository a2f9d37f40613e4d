"""A firing's outcome, recorded on its outbox row by the Python activity itself
(docs/performance.md).

The workflow asks for it (``record_outcome`` in the activity's input): a ``done`` outcome is
then written in the transaction that performed the actions, so the row says ``done`` exactly
when the actions committed, and the workflow needs no ``record_outcome`` activity of the
daemon's afterwards (a third of a firing's history events). A ``skipped`` outcome has no
actions to commit with and is written on its own.

The statement is the daemon's own, ``sql/queries/record_outcome.sql`` (shipped in the
package through the ``trigger_relay/sql`` link): one transition of the row's state machine,
with the generation and firing-uuid guards, whoever runs it. A row it does not match (a
replay gave it a new generation, it was cancelled meanwhile) is left alone and the result
says ``recorded: false``: the workflow then runs ``record_outcome``, which leaves it alone
too, as before. One exception: a row that already holds this very outcome for this
generation and firing was recorded by an earlier attempt whose result was lost (the worker
killed after the commit); the retry says ``recorded: true`` then, so that the workflow counts
the outcome once (``sql/queries/outcome_held.sql``).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connections
from django.db import router

from trigger_relay import queries
from trigger_relay.models import OutboxRow
from trigger_relay.perform.core import Caller
from trigger_relay.perform.core import FiringResult
from trigger_relay.perform.core import perform
from trigger_relay.perform.workflow_input import WorkflowInput


@dataclass(frozen=True)
class OutcomeRecorder:
    """Records the outcome of one firing: its row (id, generation, firing uuid) and the
    workflow that performs it (written on a row still ``pending``)."""

    outbox_id: int
    generation: int
    firing_uuid: str | None
    workflow_id: str
    run_id: str

    def __call__(self, state: str, skip_reason: str | None) -> bool:
        """Runs the statement on the outbox's database, in the caller's transaction if there
        is one. True if the row took the outcome."""
        with connections[router.db_for_write(OutboxRow)].cursor() as cursor:
            cursor.execute(
                queries.statement("record_outcome"),
                queries.parameters(
                    [
                        self.outbox_id,
                        self.generation,
                        state,
                        skip_reason,
                        None,  # last_error
                        self.firing_uuid,
                        self.workflow_id,
                        self.run_id,
                    ]
                ),
            )
            return cursor.fetchone() is not None

    def holds(self, state: str, skip_reason: str | None) -> bool:
        """Whether the row already holds ``state`` (``skip_reason``) for this generation and
        firing: recorded by an earlier attempt whose result was lost
        (``sql/queries/outcome_held.sql``)."""
        with connections[router.db_for_write(OutboxRow)].cursor() as cursor:
            cursor.execute(
                queries.statement("outcome_held"),
                queries.parameters(
                    [
                        self.outbox_id,
                        self.generation,
                        state,
                        skip_reason,
                        self.firing_uuid,
                        self.workflow_id,
                    ]
                ),
            )
            return cursor.fetchone() is not None


def recorder_for(firing: WorkflowInput, workflow_id: str, run_id: str) -> OutcomeRecorder | None:
    """The recorder the workflow asked for in ``firing``, or None (a workflow from before
    the field, or the activity run outside Temporal)."""
    if not firing.get("record_outcome"):
        return None
    uuid = firing.get("firing_uuid")
    return OutcomeRecorder(
        outbox_id=int(firing["outbox_id"]),
        generation=int(firing["generation"]),
        firing_uuid=str(uuid) if uuid else None,
        workflow_id=workflow_id,
        run_id=run_id,
    )


def perform_and_record(
    firing: WorkflowInput, recorder: OutcomeRecorder | None, caller: Caller | None = None
) -> FiringResult:
    """:func:`trigger_relay.perform.core.perform` on behalf of ``caller``, with the outcome on the
    row when it returns: ``done`` from inside the actions' transaction, any other outcome (a
    skip, a replay of a finished row) right after, on its own. Nothing is recorded when
    ``perform`` raises: the attempt rolled back, and the workflow retries it or records the
    failure."""
    # The recorder goes to perform() as a parameter: it writes ``done`` through it inside
    # the actions' transaction, if the workflow asked for the outcome (``recorder``).
    result = perform(firing, caller, record_done=recorder)
    if recorder is not None and not result.recorded:
        result.recorded = recorder(result.outcome, result.reason) or recorder.holds(
            result.outcome, result.reason
        )
    return result
