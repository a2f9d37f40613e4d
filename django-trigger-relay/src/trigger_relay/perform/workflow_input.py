"""The input of ``perform_firing``: the workflow's input (``WorkflowInput`` in the daemon's
``src/outbox.rs``, docs/contract.md "Workflow started by the relay"), field for field, plus
``record_outcome``, which the workflow sets on the copy it hands to the activity.

A ``TypedDict``, not a dataclass: the activity receives the JSON object as a plain ``dict``
(``perform_firing`` declares no type of it for Temporal's data converter to enforce), and
whoever may start workflows in the namespace may send any object. What it holds is checked
where it is read (:func:`trigger_relay.perform.core.perform` against the outbox row,
:func:`trigger_relay.perform.site.check_site`), as it always was: this type says what the relay
sends, it validates nothing. ``tests/test_workflow_input.py`` checks it against the inputs
of the recorded histories (``tests/histories/`` at the repository's root).

The fields absent from some inputs are those of :class:`WorkflowInput` itself, declared
with ``total=False`` (each is ``NotRequired``): unlike ``NotRequired[...]`` annotations, that
keeps ``__required_keys__`` right at run time under ``from __future__ import annotations``
and on Python 3.10.
"""

from __future__ import annotations

from typing import Any
from typing import TypedDict


class _Always(TypedDict):
    """The fields of every input the relay ever wrote."""

    outbox_id: int
    generation: int
    event_id: int
    trigger_id: int
    #: The user's pk as text (the row's ``user_pk``).
    user_pk: str
    #: RFC 3339 timestamps.
    created_at: str
    due_at: str


class WorkflowInput(_Always, total=False):
    """``perform_firing``'s input (every field below may be absent)."""

    #: A canonical uuid, or null; absent in inputs of rows from before schema version 3.
    firing_uuid: str | None
    #: The row's context as PostgreSQL prints it (a JSON object as text).
    context_json: str
    #: The context as an object, in inputs recorded before ``context_json``.
    context: dict[str, Any]
    #: Set by the workflow on the activity's copy: the activity may record the outcome
    #: itself (:mod:`trigger_relay.perform.outcome`). Absent from the workflow's own input and from
    #: older histories.
    record_outcome: bool
    #: The site identity (docs/contract.md, "Site identity"); absent in inputs of rows from
    #: before schema version 7.
    site: str
