"""One firing at due time, with fresh data, in the site's own code (guarantees §3.2-3.4, §3.7).

dj-triggers on Celery runs ``event.handle(user_pk, **context)``: the trigger's
``filter_user_queryset``, ``get_user_context``, then ``trigger.on_event``, which checks the
conditions and performs the actions under ``Activity.lock``. Its race: the conditions are
checked *before* the lock, so concurrent firings all pass a count cap. :func:`perform`
runs the same calls (every override of the site's Trigger, Event and Condition subclasses
stays in force, see :mod:`trigger_relay.perform.hooks`), and where they reach dj-triggers' own
``handle`` and ``on_event`` it does the relay's version:

- the ledger first: an action recorded as performed for this firing is never performed
  again (a retry, a replay by hand, a duplicate delivery);
- under the lock, the user filter and the conditions again, with the counts committed by
  whoever held the lock before (guarantees §3.3), and each cap judged on this user's Activity of
  this trigger alone;
- the actions in id order with one context dict per firing, each action's ledger entry in
  the lock's transaction, the Activity's count moved only when something was performed.

What is performed is read from the outbox row: the workflow input finds the row (id,
generation, firing uuid) and must agree with it, so whoever can start workflows in the
namespace cannot run a trigger for a user with a context of their choosing. The activity
also names its :class:`Caller` (the workflow run, as Temporal tells it): only the row's own
workflow, whose id the relay's claim wrote on the row, may perform it, only while the row is
pending or dispatched, and not before its due time (README, "Security model").

Raising: the transaction rolled back, nothing of the attempt committed; the exception
carries where in the firing it was raised (:func:`where_raised`), and
:mod:`trigger_relay.perform.activity` decides whether it is retried (guarantees §3.5).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import MutableMapping
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.contrib.postgres.expressions import ArraySubquery
from django.core.exceptions import ObjectDoesNotExist
from django.db import connection
from django.db import transaction
from django.db.models import OuterRef
from django.db.models import Subquery
from django.db.models import signals
from django.db.models.functions import Now
from django.utils import timezone

from trigger_relay import conf
from trigger_relay.models import LedgerEntry
from trigger_relay.models import OutboxRow
from trigger_relay.perform import hooks
from trigger_relay.perform import ledger
from trigger_relay.perform import metrics
from trigger_relay.perform.workflow_input import WorkflowInput
from trigger_relay.states import Outcome
from trigger_relay.states import SkipReason
from trigger_relay.states import State

#: The skip reasons of :mod:`trigger_relay.states` that tests and sites import from here.
NOT_HANDLED = SkipReason.NOT_HANDLED
WORKFLOW_MISMATCH = SkipReason.WORKFLOW_MISMATCH

#: Records an outcome (state, skip reason) on the firing's row in the caller's transaction;
#: True if the row took it (:class:`trigger_relay.perform.outcome.OutcomeRecorder`).
RecordOutcome = Callable[[str, str | None], bool]

#: How early, by the database's clock, a firing may be performed: the workflow's timer runs
#: on the Temporal server's clock, the due time is the database's. A call earlier than this
#: is retried at the due time (:class:`NotYetDue`). docs/contract.md, "perform_firing".
CLOCK_SKEW = timedelta(seconds=5)

#: Attribute that :func:`mark` sets on an exception: where in the firing it was raised.
#: ``None``: in the relay's own steps (nothing to name).
_WHERE = "_trigger_relay_where"
#: Where an exception raised by the commit of the firing's transaction comes from.
COMMIT_PHASE = "the commit of the firing's transaction or a transaction.on_commit callback"


@dataclass(frozen=True)
class Caller:
    """The workflow run that asks for a firing, as Temporal tells the activity
    (``activity.info()``), never as its input says."""

    workflow_id: str
    run_id: str


class NotYetDispatched(Exception):
    """The row names no workflow yet (claimed by a relay of a release before schema version
    4, whose start was not recorded yet): retried until the relay records it."""


class NotYetDue(Exception):
    """Called before the row's due time (beyond :data:`CLOCK_SKEW`): retried then."""

    def __init__(self, outbox_id: int, due_at: Any, wait: timedelta) -> None:
        super().__init__(
            f"outbox row {outbox_id} is due at {due_at.isoformat()}, in "
            f"{wait.total_seconds():.1f}s by the database's clock: not performed before"
        )
        self.wait = wait


class RowFinished(Exception):
    """The row is ``failed``: it is performed again only by a replay, never by a workflow."""


@dataclass
class FiringResult:
    """Mirrors ``FiringResult`` in the daemon's src/outbox.rs (used by src/workflow.rs)."""

    outcome: Outcome
    #: A :class:`SkipReason`, or what a skipped row holds (a newer release's reason).
    reason: str | None = None
    performed: list[int] = field(default_factory=list)
    already_performed: list[int] = field(default_factory=list)
    #: The outcome is on the outbox row already (:mod:`trigger_relay.perform.outcome`).
    recorded: bool = False

    @classmethod
    def skipped(cls, reason: str, already_performed: list[int] | None = None) -> FiringResult:
        return cls(
            outcome=Outcome.SKIPPED, reason=reason, already_performed=already_performed or []
        )


class _FinishUnderLock(Exception):
    """Leave ``Activity.lock`` with ``result``, rolling back its transaction (nothing was
    written in it) so that the Activity's count does not move."""

    def __init__(self, result: FiringResult) -> None:
        super().__init__(result.reason or result.outcome)
        self.result = result


def actions_of(trigger: Any) -> list[Any]:
    """The trigger's actions in id order, on either dj-triggers schema (guarantees §2.1).

    PyPI 1.0.1: one action, ``trigger.action`` (OneToOne). Upstream main: several,
    ``trigger.actions`` (ForeignKey).
    """
    manager = getattr(trigger, "actions", None)
    if manager is not None and hasattr(manager, "order_by"):
        # all(), not order_by(): it keeps what perform() prefetched.
        return sorted(manager.all(), key=lambda action: action.pk)
    try:
        return [trigger.action]
    except ObjectDoesNotExist:
        # RelatedObjectDoesNotExist: a trigger without its action. Only that means "no
        # action": anything else (a lost connection, a deadlock) propagates and is retried
        # or fails the firing as any other error would (guarantees §3.5).
        return []


def mark(exc: BaseException, where: str | None) -> None:
    """Record where in the firing ``exc`` was raised, unless a closer mark did already."""
    if not hasattr(exc, _WHERE):
        # An exception class with __slots__ takes no attribute: it goes unmarked.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(exc, _WHERE, where)


def where_raised(exc: BaseException) -> str | None:
    """Where :func:`perform` saw ``exc`` raised (``action 12, SendEmailAction``), if known."""
    where = getattr(exc, _WHERE, None)
    return where if isinstance(where, str) else None


@contextlib.contextmanager
def _site_code(where: str | None) -> Iterator[None]:
    """Mark an exception raised inside with ``where``, so that the failure an operator
    reads in ``last_error`` says which action, condition or override raised."""
    try:
        yield
    except Exception as exc:
        mark(exc, where)
        raise


def _named(kind: str, instance: Any) -> str:
    return f"{kind} {instance.pk}, {type(instance).__name__}"


def _override(instance: Any, name: str, base: type, kind: str) -> str | None:
    """``where`` for a call of ``name``: the site's override, or None for dj-triggers' own
    (whose steps mark their own exceptions)."""
    if hooks.is_overridden(instance, name, base):
        return f"{name} of {_named(kind, instance)}"
    return None


def _firing_uuid(value: object) -> str | None:
    """Canonical text of a firing uuid (lowercase, hyphens), or None for rows and inputs
    from before schema version 3. Parsed rather than compared as given, so that a
    differently spelled uuid of the same firing is not mistaken for another firing; a
    value that is no uuid at all raises (a bug of the caller, not a reason to skip)."""
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(uuid.UUID(str(value)))


def _input_matches(firing: WorkflowInput, row: Mapping[str, Any]) -> bool:
    """The workflow input names the row's own event, trigger and user.

    The daemon copies them from the row, so they differ only in an input that someone
    other than the relay wrote (or edited) to run a trigger for a user of their choosing;
    that workflow performs nothing. Values are compared as the row stores them (ids as
    integers, the user pk as text).
    """
    try:
        return (
            int(firing["event_id"]) == row["event_id"]
            and int(firing["trigger_id"]) == row["trigger_id"]
            and str(firing["user_pk"]) == row["user_pk"]
        )
    except (KeyError, TypeError, ValueError):
        return False


def perform(
    firing: WorkflowInput,
    caller: Caller | None = None,
    *,
    record_done: RecordOutcome | None = None,
) -> FiringResult:
    """Perform the firing that the workflow input ``firing`` names, as the module's docstring
    says, on behalf of ``caller`` (the activity always names it; None only where no workflow
    is involved, e.g. a test of dj-triggers' semantics).

    ``record_done``, if given, is called with ``done`` inside the transaction that performed
    the actions, and the result is ``recorded`` if it returns True
    (:func:`trigger_relay.perform.outcome.perform_and_record`)."""
    from triggers.models import Activity
    from triggers.models import Event
    from triggers.models import Trigger

    hooks.install()
    outbox_id = int(firing["outbox_id"])
    generation = int(firing["generation"])
    # The row, its ledger and its event's class in one statement: the ledger is read before
    # anything an earlier attempt may have changed (below), and the event is then fetched
    # from its own class's table at once (see _event_of).
    row = (
        OutboxRow.objects.filter(pk=outbox_id)
        .annotate(
            ledger=ArraySubquery(
                LedgerEntry.objects.filter(outbox_id=OuterRef("pk")).values("action_id")
            ),
            event_type=Subquery(
                Event.objects.non_polymorphic()
                .filter(pk=OuterRef("event_id"))
                .values("polymorphic_ctype_id")[:1]
            ),
            database_now=Now(),
        )
        .values(
            "state",
            "skip_reason",
            "generation",
            "firing_uuid",
            "event_id",
            "trigger_id",
            "user_pk",
            "context",
            "due_at",
            "workflow_id",
            "run_id",
            "ledger",
            "event_type",
            "database_now",
        )
        .first()
    )
    if row is None or row["state"] == State.CANCELLED:
        return FiringResult.skipped(SkipReason.CANCELLED)
    if row["generation"] != generation:
        # A replay superseded this workflow: the newer generation's workflow does the work.
        # Checked before the firing: a replay also gives a row from before schema 3 its
        # uuid, and the old workflow (input without one) was superseded, not misdirected.
        return FiringResult.skipped(SkipReason.SUPERSEDED)
    if _firing_uuid(row["firing_uuid"]) != _firing_uuid(firing.get("firing_uuid")):
        # Row ids come back after a restored database or `TRUNCATE ... RESTART IDENTITY`:
        # this workflow was started for another firing that had this id, and the row now
        # belongs to a firing of its own (which has its own workflow). Nothing of it is ours.
        return FiringResult.skipped(SkipReason.FIRING_MISMATCH)
    if caller is not None and not _is_rows_workflow(row, caller):
        return FiringResult.skipped(SkipReason.WORKFLOW_MISMATCH)
    if not _input_matches(firing, row):
        # guarantees §3.7: the row is the firing; an input that names another event, trigger or
        # user was not written by the relay from this row. Perform nothing for anyone.
        return FiringResult.skipped(SkipReason.INPUT_MISMATCH)
    if caller is not None:
        finished = _finished(outbox_id, row)
        if finished is not None:
            return finished
        wait = row["due_at"] - CLOCK_SKEW - row["database_now"]
        if wait > timedelta(0):
            raise NotYetDue(outbox_id, row["due_at"], wait + CLOCK_SKEW)
    context = row["context"]
    if not isinstance(context, dict):
        raise ValueError(
            f"the outbox row's context is a JSON {type(context).__name__}, not an object"
        )

    # The polymorphic managers: the site's Event and Trigger subclasses, with their overrides.
    event = _event_of(Event, row["event_type"], row["event_id"])
    if event is None:
        return FiringResult.skipped(SkipReason.EVENT_DELETED)
    # The conditions and actions with the trigger, once for the firing: dj-triggers'
    # filter_user_queryset (which also asks whether the trigger has an action), the
    # conditions' pass before the lock and both again under it would each read them again
    # (two statements each, polymorphic). What the conditions judge (counts, the site's
    # data) is read at each pass.
    trigger = (
        Trigger.objects.filter(pk=row["trigger_id"])
        .prefetch_related("conditions", "actions" if hasattr(Trigger, "actions") else "action")
        .first()
    )
    if trigger is None:
        return FiringResult.skipped(SkipReason.TRIGGER_DELETED)
    actions = actions_of(trigger)
    if not actions:
        return FiringResult.skipped(SkipReason.NO_ACTIONS)
    # The ledger before anything that may have changed since an earlier attempt committed
    # (the trigger disabled, a cap now reached by that very attempt): what is done is done.
    already = _performed(row["ledger"], actions)
    if len(already) == len(actions):
        # A replay of a finished row (or a retry after a crash that came after the commit):
        # everything is done already, whatever the trigger and conditions say now.
        return FiringResult(outcome=Outcome.DONE, already_performed=already)
    if not trigger.is_enabled:
        return FiringResult.skipped(SkipReason.TRIGGER_DISABLED, already)

    # The row's trigger is the firing's, whatever the event points to now; upstream's
    # handle (and a site's override of it) reads it as ``self.trigger``.
    event.trigger = trigger
    performing = _Performing(
        outbox_id=outbox_id,
        generation=generation,
        event_id=event.pk,
        trigger_id=trigger.pk,
        actions=actions,
        already=already,
        user_pk=row["user_pk"],
        record_done=record_done,
    )
    try:
        with hooks.performing(performing), _site_code(_override(event, "handle", Event, "event")):
            event.handle(row["user_pk"], **context)
    except Activity.Cancel:
        # dj-triggers semantics: Cancel stops the firing, whatever site code raised it.
        return performing.result or FiringResult.skipped(SkipReason.CANCELLED, already)
    if performing.result is not None:
        return performing.result
    return FiringResult.skipped(performing.reason or SkipReason.NOT_HANDLED, already)


def _is_rows_workflow(row: Mapping[str, Any], caller: Caller) -> bool:
    """Whether ``caller`` is the row's own workflow run: the workflow id the relay's claim
    wrote on the row before starting it, and the run id once the relay recorded it (a
    workflow started under the row's id after its run was terminated has another).
    Raises :class:`NotYetDispatched` while the row names no workflow yet."""
    if row["workflow_id"] is None:
        raise NotYetDispatched(
            "the outbox row names no workflow yet (claimed by a relay of an earlier release); "
            "retried until the relay records its start"
        )
    return row["workflow_id"] == caller.workflow_id and row["run_id"] in (None, caller.run_id)


def _finished(outbox_id: int, row: Mapping[str, Any]) -> FiringResult | None:
    """For a row that is no longer pending or dispatched: what it holds, performing
    nothing. ``done`` and ``skipped`` were recorded by an earlier attempt of this workflow
    whose result was lost (the worker killed after the commit); a ``failed`` row is
    performed again only through a replay (a new generation, a new workflow)."""
    state = row["state"]
    if state == State.DONE:
        return FiringResult(outcome=Outcome.DONE, already_performed=sorted(row["ledger"] or ()))
    if state == State.SKIPPED:
        return FiringResult.skipped(row["skip_reason"] or SkipReason.UNSPECIFIED)
    if state == State.FAILED:
        raise RowFinished(
            f"outbox row {outbox_id} is failed: a workflow does not perform it again; "
            f"replay it (trigger-relay replay --id {outbox_id})"
        )
    return None


def _event_of(event_model: Any, content_type_id: int | None, event_id: int) -> Any:
    """The event as ``Event.objects`` gives it (an instance of the site's subclass), or None
    if it was deleted.

    The polymorphic manager reads the base table, then the subclass's rows: two statements.
    Its content type came with the outbox row, so the subclass's own manager is asked
    directly, which returns the same instance in one; the base manager stays the fallback for
    a content type without a model class.
    """
    if content_type_id is None:
        return None
    try:
        model = ContentType.objects.get_for_id(content_type_id).model_class()
    except ContentType.DoesNotExist:
        model = None
    if model is None or not issubclass(model, event_model):
        model = event_model
    return model._default_manager.filter(pk=event_id).first()


def _already_performed(outbox_id: int, actions: list[Any]) -> list[int]:
    """The firing's actions that the ledger records as performed (committed), in order."""
    return _performed(
        LedgerEntry.objects.filter(outbox_id=outbox_id).values_list("action_id", flat=True),
        actions,
    )


def _performed(ledger: Iterable[int] | None, actions: list[Any]) -> list[int]:
    """Of ``actions``, those whose ids ``ledger`` holds, in order."""
    done = set(ledger or ())
    return [action.pk for action in actions if action.pk in done]


#: :attr:`_Performing.activity` before it was read.
_UNREAD: Any = object()


@dataclass
class _Performing:
    """The firing being performed: dj-triggers' ``handle``, ``on_event`` and cap filters, as
    the relay does them (called through :mod:`trigger_relay.perform.hooks`)."""

    outbox_id: int
    generation: int
    event_id: int
    trigger_id: int
    actions: list[Any]
    already: list[int]
    user_pk: Any
    #: The Activity that the caps are judged on: this user's of this trigger, read before the
    #: lock when a cap is first judged there (a trigger without caps never needs it), then
    #: the locked one.
    activity: Any = _UNREAD
    #: Set once the actions ran (or the firing finished under the lock).
    result: FiringResult | None = None
    #: Why dj-triggers' own steps stopped before the lock.
    reason: SkipReason | None = None
    #: Records ``done`` in the actions' transaction (:func:`perform`'s ``record_done``).
    record_done: RecordOutcome | None = None

    def owns_event(self, event: Any) -> bool:
        return bool(event.pk == self.event_id)

    def owns_trigger_id(self, trigger_id: Any) -> bool:
        return bool(trigger_id == self.trigger_id)

    def cap_allows(self, condition: Any, cap: type) -> bool:
        """dj-triggers' cap conditions, judged on this trigger's own Activity row.

        Upstream filters users with ``exclude(trigger_activity__trigger=...,
        trigger_activity__action_count__gte=...)``; over a multi-valued relation Django
        applies the two lookups to *different* Activity rows, so a user with any Activity
        of this trigger and a busy Activity of another trigger is wrongly excluded. Here
        the cap is read from the Activity of this (user, trigger) alone, which is what the
        conditions mean.
        """
        from triggers import models

        if self.activity is _UNREAD:
            self.activity = models.Activity.objects.filter(
                trigger_id=self.trigger_id, user_id=self.user_pk
            ).first()
        activity = self.activity
        if cap is getattr(models, "ActionFrequencyCondition", None):
            last = None if activity is None else activity.last_action_datetime
            return last is None or last <= timezone.now() - condition.limit
        return activity is None or activity.action_count < condition.limit

    def handle(self, event: Any, user_pk: Any, context: dict[str, Any]) -> None:
        """dj-triggers' ``Event.handle``, step by step, each step's outcome recorded."""
        from triggers.models import Trigger

        trigger = event.trigger
        user = self._filtered_user(trigger, user_pk)
        if user is None:
            self.reason = SkipReason.USER_FILTERED_OUT
            return
        with _site_code(f"get_user_context of {_named('event', event)}"):
            user_context = event.get_user_context(user, context)
        if not isinstance(user_context, MutableMapping):
            # The actions share it and each gets its idempotency key in it.
            user_context = dict(user_context)
        with _site_code(_override(trigger, "on_event", Trigger, "trigger")):
            trigger.on_event(user, user_context)

    def on_event(self, trigger: Any, user: Any, context: MutableMapping[str, Any]) -> None:
        """dj-triggers' ``Trigger.on_event``: the conditions, then the actions under
        ``Activity.lock``, with the ledger and the checks again under the lock."""
        if not user:
            self.reason = SkipReason.USER_FILTERED_OUT
            return
        if not self._conditions_satisfied(trigger, user):
            self.reason = SkipReason.CONDITION_FALSE
            return
        self.result = self._perform_under_lock(trigger, user, context)

    def _filtered_user(self, trigger: Any, user_pk: Any) -> Any:
        """The user if ``trigger.filter_user_queryset`` keeps them (the site's override and
        each condition's filter, the caps judged on :attr:`activity`), else None."""
        from triggers.models import Trigger

        users = get_user_model().objects.filter(pk=user_pk)
        where = _override(trigger, "filter_user_queryset", Trigger, "trigger")
        # The querysets are lazy: what a filter does wrong surfaces at first().
        with _site_code(where or "the conditions' filter_user_queryset"):
            return trigger.filter_user_queryset(users).first()

    @staticmethod
    def _filter_may_change(trigger: Any) -> bool:
        """Whether ``filter_user_queryset`` may judge the user otherwise under the lock than
        before it: a condition's filter may (a cap reached by the attempt that held the lock
        before), and a site's override may; dj-triggers' own with no conditions keeps every
        user, as it did a moment ago, and is not asked again (one statement fewer, as
        dj-triggers' own handle_event, which filters once)."""
        from triggers.models import Trigger

        has_conditions = bool(trigger.conditions.all())  # prefetched with the trigger
        return has_conditions or hooks.is_overridden(trigger, "filter_user_queryset", Trigger)

    def _conditions_satisfied(self, trigger: Any, user: Any) -> bool:
        for condition in trigger.conditions.all():
            with _site_code(_named("condition", condition)):
                if not condition.is_satisfied(user):
                    return False
        return True

    def _perform_under_lock(
        self, trigger: Any, user: Any, context: MutableMapping[str, Any]
    ) -> FiringResult:
        from triggers.models import Activity

        result = FiringResult(outcome=Outcome.DONE)
        # Where an exception that no mark inside claims was raised: entering the lock, inside
        # (the relay's own steps: None), or its commit, which runs what the actions
        # registered with transaction.on_commit.
        phase: str | None = "Activity.lock"
        try:
            # dj-triggers' Activity.lock, as it behaves, in the firing's one transaction (its
            # get_or_create and its own atomic() would add two savepoints and a SELECT).
            with transaction.atomic():
                _bound_lock_waits()
                waiting = time.monotonic()
                try:
                    locked = _lock_activity(Activity, trigger, user)
                finally:
                    # A wait that ran out (lock_timeout) counts too: it is the one to see.
                    metrics.lock_wait(time.monotonic() - waiting)
                phase = None
                self.activity = locked
                try:
                    result = self._perform_locked(trigger, user, context, result)
                except Activity.Cancel:
                    # As Activity.lock: the firing stops, what it wrote commits, the count
                    # stays.
                    phase = COMMIT_PHASE
                else:
                    phase = COMMIT_PHASE
                    locked.action_count += 1
                    locked.last_action_datetime = timezone.now()
                    locked.save()
                    # The row says done in the transaction that performed the actions.
                    result.recorded = self.record_done is not None and self.record_done(
                        State.DONE, None
                    )
        except _FinishUnderLock as finish:
            return finish.result
        except Exception as exc:
            mark(exc, phase)
            raise
        # A cancelled firing's result was set where the Activity.Cancel was caught.
        return self.result if self.result is not None else result

    def _perform_locked(
        self, trigger: Any, user: Any, context: MutableMapping[str, Any], result: FiringResult
    ) -> FiringResult:
        """Inside ``Activity.lock``, with data committed by whoever held it before
        (guarantees §3.3)."""
        from triggers.models import Activity

        # The ledger first: an attempt that held the lock before (a retry overlapping a
        # still-running first attempt) may have performed everything, and the conditions,
        # re-checked now, would see its count.
        already = _already_performed(self.outbox_id, self.actions)
        if len(already) == len(self.actions):
            raise _FinishUnderLock(FiringResult(outcome=Outcome.DONE, already_performed=already))
        result.already_performed = already
        try:
            if self._filter_may_change(trigger) and self._filtered_user(trigger, user.pk) is None:
                raise _FinishUnderLock(FiringResult.skipped(SkipReason.USER_FILTERED_OUT, already))
            if not self._conditions_satisfied(trigger, user):
                raise _FinishUnderLock(FiringResult.skipped(SkipReason.CONDITION_FALSE, already))
            for action in self.actions:
                if action.pk in already:
                    continue
                key = ledger.idempotency_key(self.outbox_id, action.pk)
                # One dict for the whole firing, as upstream passes it: actions may hand
                # data on to the next one. Only our own key changes between actions.
                context[ledger.IDEMPOTENCY_KEY] = key
                with _site_code(_named("action", action)):
                    try:
                        action.perform(user, context)
                    except Activity.Cancel:
                        raise
                    except Exception:
                        metrics.action_error(action)
                        raise
                ledger.record_performed(self.outbox_id, action.pk, self.generation, key)
                result.performed.append(action.pk)
        except Activity.Cancel:
            # dj-triggers semantics (raised by an action, or by a condition under the lock):
            # stop the rest, leave the count unchanged; the lock commits what earlier
            # actions wrote, with their ledger entries.
            self.result = FiringResult(
                outcome=Outcome.SKIPPED,
                reason=SkipReason.CANCELLED,
                performed=result.performed,
                already_performed=result.already_performed,
            )
            raise
        if not result.performed:
            # Nothing left to perform (cannot happen after the checks above, kept as a
            # guard): the count must not move.
            self.result = FiringResult.skipped(SkipReason.CANCELLED, already)
            raise Activity.Cancel()
        return result


def _lock_activity(activity_model: Any, trigger: Any, user: Any) -> Any:
    """The user's Activity of the trigger, locked ``FOR UPDATE`` in the current transaction
    and created (count 0) if there is none: what ``Activity.lock`` yields.

    One statement when the row exists. Upstream's ``get_or_create`` creates a missing row in
    a savepoint of its own and, when a concurrent first firing of the same user and trigger
    inserted it first, reads theirs; here the ``INSERT`` does the same without a savepoint:
    ``ON CONFLICT DO NOTHING`` on the (trigger, user) key waits for that firing's commit and
    skips, and the row it committed is locked instead. A row this transaction inserted is
    locked by it until it commits.
    """
    for _ in range(_LOCK_ATTEMPTS):
        locked = (
            activity_model.objects.select_for_update()
            .filter(trigger_id=trigger.pk, user_id=user.pk)
            .first()
        )
        if locked is not None:
            return locked
        created = _insert_activity(activity_model, trigger, user)
        if created is not None:
            return created
    # Inserted by another firing and deleted again, each time: not a race to keep losing.
    raise RuntimeError(
        f"the Activity of user {user.pk} and trigger {trigger.pk} was created and deleted "
        f"{_LOCK_ATTEMPTS} times while this firing tried to lock it"
    )


#: Rounds of "lock it, else insert it" before :func:`_lock_activity` gives up.
_LOCK_ATTEMPTS = 3


def _insert_activity(activity_model: Any, trigger: Any, user: Any) -> Any:
    """Insert the user's Activity of the trigger as ``get_or_create`` would (the polymorphic
    content type, field defaults, ``pre_save`` and ``post_save``); the instance, or None if
    a row for the two exists already."""
    activity = activity_model(trigger=trigger, user=user)
    # What the polymorphic save() sets: the content type of the row's class.
    activity.pre_save_polymorphic()
    meta = activity_model._meta
    signals.pre_save.send(
        sender=activity_model,
        instance=activity,
        raw=False,
        using=connection.alias,
        update_fields=None,
    )
    fields = [field for field in meta.concrete_fields if field is not meta.pk]
    values = [
        field.get_db_prep_save(field.pre_save(activity, True), connection) for field in fields
    ]
    quote = connection.ops.quote_name
    key = ", ".join(quote(meta.get_field(name).column) for name in ("trigger", "user"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(meta.db_table)}"
            f" ({', '.join(quote(field.column) for field in fields)})"
            f" VALUES ({', '.join(['%s'] * len(fields))})"
            f" ON CONFLICT ({key}) DO NOTHING RETURNING {quote(meta.pk.column)}",
            values,
        )
        inserted = cursor.fetchone()
    if inserted is None:
        return None
    activity.pk = inserted[0]
    activity._state.adding = False
    activity._state.db = connection.alias
    signals.post_save.send(
        sender=activity_model,
        instance=activity,
        created=True,
        update_fields=None,
        raw=False,
        using=connection.alias,
    )
    return activity


def _bound_lock_waits() -> None:
    """``lock_timeout`` for the firing's transaction alone (guarantees §3.6): a worker cut off
    while holding ``Activity.lock`` cannot pin every thread that fires for the same user
    and trigger. A wait that runs out raises (SQLSTATE 55P03), rolls the attempt back and
    is retried as an infrastructure error. ``set_config(..., true)`` rather than ``SET
    LOCAL``: it takes a parameter, and is transaction-scoped, so PgBouncer's transaction
    pooling carries it to no other client."""
    seconds = conf.lock_timeout_seconds()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('lock_timeout', %s, true)", [f"{round(seconds * 1000)}ms"]
        )
