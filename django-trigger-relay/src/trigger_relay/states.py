"""The add-on's one vocabulary of a firing's states, outcomes and skip reasons.

The words are the daemon's (``State`` in ``src/outbox.rs``) and the schema's (the CHECK
constraint ``trigger_relay_outbox_state_valid`` of ``sql/schema/0001_outbox.sql``), as
docs/contract.md lists them ("Outbox table", "Activities", "Skip reasons");
``tests/test_vocabulary.py`` checks these classes against that constraint and those lists.

Each member is a ``str`` (Django's ``TextChoices``, on every supported Python and Django):
it compares equal to its word, prints as it, and goes into JSON and SQL parameters as it, so
the rows, the activity's result and the metrics' labels carry the same text as before.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class State(models.TextChoices):
    """A row's state (guarantees §1.3): ``pending`` → ``dispatched`` → ``done``, ``skipped``
    (with a :class:`SkipReason`), ``failed`` (with the error) or ``cancelled``."""

    PENDING = "pending", _("pending")
    DISPATCHED = "dispatched", _("dispatched")
    DONE = "done", _("done")
    SKIPPED = "skipped", _("skipped")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")


class Outcome(models.TextChoices):
    """The outcome of ``perform_firing`` that returned (``FiringResult.outcome``, mirrored by
    ``FiringResult`` in ``src/outbox.rs``); it raises for a failure."""

    DONE = State.DONE.value, State.DONE.label
    SKIPPED = State.SKIPPED.value, State.SKIPPED.label


class SkipReason(models.TextChoices):
    """Why a firing was skipped (docs/contract.md, "Skip reasons")."""

    #: Cancelled (the row, or the site's code raised ``Activity.Cancel``).
    CANCELLED = "cancelled"
    CONDITION_FALSE = "condition_false"
    EVENT_DELETED = "event_deleted"
    #: The row's ``firing_uuid`` is not the workflow's: the row id belongs to another firing.
    FIRING_MISMATCH = "firing_mismatch"
    #: The input names another event, trigger or user than its row (guarantees §3.7).
    INPUT_MISMATCH = "input_mismatch"
    NO_ACTIONS = "no_actions"
    #: The site's ``Event.handle`` or ``Trigger.on_event`` override returned without reaching
    #: dj-triggers' own (and so without performing anything).
    NOT_HANDLED = "not_handled"
    #: A replay started a newer generation, whose workflow does the work.
    SUPERSEDED = "superseded"
    TRIGGER_DELETED = "trigger_deleted"
    TRIGGER_DISABLED = "trigger_disabled"
    USER_FILTERED_OUT = "user_filtered_out"
    #: The calling workflow is not the row's own: another workflow in the namespace, started
    #: by hand with a copied input or under the row's workflow id after its run was
    #: terminated. Nothing is performed, and nothing is written on the row (the outcome
    #: writes are guarded by the workflow id and run id, sql/queries/record_outcome.sql): no
    #: row ever holds this reason.
    WORKFLOW_MISMATCH = "workflow_mismatch"
    #: A skip that came without a reason: the daemon's word for it (src/workflow.rs), and
    #: what the activity reports for a skipped row that holds none.
    UNSPECIFIED = "unspecified"


#: The reasons an outbox row can hold (all but :attr:`SkipReason.WORKFLOW_MISMATCH`), in the
#: order the admin's filter offers them.
ROW_SKIP_REASONS: tuple[SkipReason, ...] = tuple(
    reason for reason in SkipReason if reason is not SkipReason.WORKFLOW_MISMATCH
)
