"""The Django-side activity of ``trigger_workflow`` (SPEC §3): run at due time, with fresh
data, in the site's own code.

dj-triggers on Celery runs ``Event.handle``: filter the user, check conditions, then
``Activity.lock`` and perform. Its race: conditions are checked *before* the lock, so
concurrent firings all pass a count cap (19-20 of 20 performed with limit 1). Here the
conditions are checked again under the lock, every action of a firing is recorded in the
ledger in the transaction that runs the actions (``Activity.lock``'s, one per firing, as in
dj-triggers), and the Activity's count moves only when something was performed.

What is performed is read from the outbox row (SPEC §3.7): the workflow input finds the row
(id, generation, firing uuid) and must agree with it, so whoever can start workflows in the
namespace cannot run a trigger for a user with a context of their choosing.

Failures (SPEC §3.5): dj-triggers on Celery never retries, so an exception raised by the
site's code (an action, a condition, ``get_user_context``) fails the firing at once, as a
non-retryable Temporal error whose message (the row's ``last_error``) names the exception
and where it came from. Only infrastructure errors (a lost or unusable connection, a
deadlock, a serialization failure) are retried; ``TRIGGER_RELAY_RETRY_APPLICATION_ERRORS``
opts a site into retrying the others too.
"""

from __future__ import annotations

import contextlib
import importlib
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist
from django.db import InterfaceError
from django.db import OperationalError
from django.db import close_old_connections
from django.utils import timezone
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.exceptions import TemporalError

from trigger_relay import conf
from trigger_relay.ledger import LedgerEntry
from trigger_relay.ledger import idempotency_key
from trigger_relay.models import OutboxRow

PERFORM_FIRING = "trigger_relay.perform_firing"

#: Context key under which each action receives its idempotency key.
IDEMPOTENCY_KEY = "idempotency_key"

#: SQLSTATEs retried whatever exception class carries them: serialization failure and
#: deadlock (the transaction lost a race and succeeds when run again).
RETRIED_SQLSTATES = frozenset({"40001", "40P01"})
#: SQLSTATE class of connection exceptions (08xxx): the connection is gone.
CONNECTION_SQLSTATE_CLASS = "08"

#: ``last_error`` is for reading: a longer exception message is cut.
MAX_ERROR_CHARS = 2000

#: Attribute that ``_mark`` sets on an exception: where in the firing it was raised.
_WHERE = "_trigger_relay_where"
#: Where an exception raised by the commit of the firing's transaction comes from.
COMMIT_PHASE = "the commit of the firing's transaction or a transaction.on_commit callback"


@dataclass
class FiringResult:
    """Mirrors ``FiringResult`` in the daemon's src/workflow.rs."""

    outcome: str  # "done" or "skipped"
    reason: str | None = None
    performed: list[int] = field(default_factory=list)
    already_performed: list[int] = field(default_factory=list)

    @classmethod
    def skipped(cls, reason: str, already_performed: list[int] | None = None) -> FiringResult:
        return cls(outcome="skipped", reason=reason, already_performed=already_performed or [])


class _FinishUnderLock(Exception):
    """Leave ``Activity.lock`` with ``result``, rolling back its transaction (nothing was
    written in it) so that the Activity's count does not move."""

    def __init__(self, result: FiringResult) -> None:
        super().__init__(result.reason or result.outcome)
        self.result = result


def actions_of(trigger: Any) -> list[Any]:
    """The trigger's actions in id order, on either dj-triggers schema (SPEC §2.1).

    PyPI 1.0.1: one action, ``trigger.action`` (OneToOne). Upstream main: several,
    ``trigger.actions`` (ForeignKey).
    """
    manager = getattr(trigger, "actions", None)
    if manager is not None and hasattr(manager, "order_by"):
        return list(manager.order_by("pk"))
    try:
        return [trigger.action]
    except ObjectDoesNotExist:
        # RelatedObjectDoesNotExist: a trigger without its action. Only that means "no
        # action": anything else (a lost connection, a deadlock) propagates and is retried
        # or fails the firing as any other error would (SPEC §3.5).
        return []


def _cap_allows(condition: Any, activity: Any) -> bool | None:
    """dj-triggers' cap conditions, judged on this trigger's own Activity row.

    ``ActionCountCondition`` and ``ActionFrequencyCondition`` filter users with
    ``exclude(trigger_activity__trigger=..., trigger_activity__action_count__gte=...)``; over a
    multi-valued relation Django applies the two lookups to *different* Activity rows, so a
    user with any Activity of this trigger and a busy Activity of another trigger is wrongly
    excluded. Here the cap is read from the Activity of this (user, trigger) alone, which is
    what the conditions mean. ``None``: not a cap condition.
    """
    from triggers import models as triggers_models

    count_cls = getattr(triggers_models, "ActionCountCondition", None)
    frequency_cls = getattr(triggers_models, "ActionFrequencyCondition", None)
    if count_cls is not None and isinstance(condition, count_cls):
        return activity is None or activity.action_count < condition.limit
    if frequency_cls is not None and isinstance(condition, frequency_cls):
        last = None if activity is None else activity.last_action_datetime
        return last is None or last <= timezone.now() - condition.limit
    return None


def _mark(exc: BaseException, where: str) -> None:
    """Record where in the firing ``exc`` was raised, unless a closer mark did already."""
    if not hasattr(exc, _WHERE):
        # An exception class with __slots__ takes no attribute: it goes unmarked.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(exc, _WHERE, where)


@contextlib.contextmanager
def _site_code(where: str) -> Iterator[None]:
    """Mark an exception raised inside with ``where``, so that the failure an operator
    reads in ``last_error`` says which action or condition raised."""
    try:
        yield
    except Exception as exc:
        _mark(exc, where)
        raise


def _named(kind: str, instance: Any) -> str:
    return f"{kind} {instance.pk}, {type(instance).__name__}"


def _conditions_hold(trigger: Any, user_pk: Any, activity: Any) -> tuple[Any, str | None]:
    """Fresh checks of SPEC §3.2 against ``activity`` (this user's Activity of the trigger,
    or None): (user, None) or (None, skip reason)."""
    user_model = get_user_model()
    users = user_model.objects.filter(pk=user_pk)
    conditions = list(trigger.conditions.all())
    for condition in conditions:
        allowed = _cap_allows(condition, activity)
        if allowed is False:
            return None, "user_filtered_out"
        if allowed is None:
            with _site_code(_named("condition", condition)):
                users = condition.filter_user_queryset(users)
    # The querysets are lazy: what a condition's filter does wrong surfaces here.
    with _site_code("the conditions' filter_user_queryset"):
        user = users.first()
    if user is None:
        return None, "user_filtered_out"
    for condition in conditions:
        with _site_code(_named("condition", condition)):
            satisfied = condition.is_satisfied(user)
        if not satisfied:
            return None, "condition_false"
    return user, None


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


def _input_matches(firing: dict[str, Any], row: dict[str, Any]) -> bool:
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


def perform(firing: dict[str, Any]) -> FiringResult:
    """SPEC §3.2-3.4, §3.7 for one firing.

    Raising: the transaction rolled back, nothing of this attempt committed;
    :func:`perform_firing` decides whether it is retried (SPEC §3.5). The exception carries
    where it was raised (``_site_code``).
    """
    from triggers.models import Activity
    from triggers.models import Event
    from triggers.models import Trigger

    outbox_id = int(firing["outbox_id"])
    generation = int(firing["generation"])
    row = (
        OutboxRow.objects.filter(pk=outbox_id)
        .values(
            "state",
            "generation",
            "firing_uuid",
            "event_id",
            "trigger_id",
            "user_pk",
            "context",
        )
        .first()
    )
    if row is None or row["state"] == OutboxRow.State.CANCELLED:
        return FiringResult.skipped("cancelled")
    if row["generation"] != generation:
        # A replay superseded this workflow: the newer generation's workflow does the work.
        # Checked before the firing: a replay also gives a row from before schema 3 its
        # uuid, and the old workflow (input without one) was superseded, not misdirected.
        return FiringResult.skipped("superseded")
    if _firing_uuid(row["firing_uuid"]) != _firing_uuid(firing.get("firing_uuid")):
        # Row ids come back after a restored database or `TRUNCATE ... RESTART IDENTITY`:
        # this workflow was started for another firing that had this id, and the row now
        # belongs to a firing of its own (which has its own workflow). Nothing of it is ours.
        return FiringResult.skipped("firing_mismatch")
    if not _input_matches(firing, row):
        # SPEC §3.7: the row is the firing; an input that names another event, trigger or
        # user was not written by the relay from this row. Perform nothing for anyone.
        return FiringResult.skipped("input_mismatch")
    context = row["context"]
    if not isinstance(context, dict):
        raise ValueError(
            f"the outbox row's context is a JSON {type(context).__name__}, not an object"
        )

    event = Event.objects.filter(pk=row["event_id"]).first()
    if event is None:
        return FiringResult.skipped("event_deleted")
    trigger = Trigger.objects.filter(pk=row["trigger_id"]).first()
    if trigger is None:
        return FiringResult.skipped("trigger_deleted")
    actions = actions_of(trigger)
    if not actions:
        return FiringResult.skipped("no_actions")
    # The ledger before anything that may have changed since an earlier attempt committed
    # (the trigger disabled, a cap now reached by that very attempt): what is done is done.
    already = _already_performed(outbox_id, actions)
    if len(already) == len(actions):
        # A replay of a finished row (or a retry after a crash that came after the commit):
        # everything is done already, whatever the trigger and conditions say now.
        return FiringResult(outcome="done", already_performed=already)
    if not trigger.is_enabled:
        return FiringResult.skipped("trigger_disabled", already)
    user_pk = row["user_pk"]
    current = Activity.objects.filter(trigger=trigger, user_id=user_pk).first()
    try:
        user, reason = _conditions_hold(trigger, user_pk, current)
    except Activity.Cancel:
        # dj-triggers semantics: Cancel stops the firing, whatever site code raised it.
        return FiringResult.skipped("cancelled", already)
    if reason is not None:
        return FiringResult.skipped(reason, already)

    result = FiringResult(outcome="done")
    # Where an exception that no mark inside claims was raised: entering the lock, inside
    # (this module's own steps: unmarked), or its commit, which runs what the actions
    # registered with transaction.on_commit.
    phase = "Activity.lock"
    try:
        with Activity.lock(user, trigger) as locked:
            phase = ""
            # Under the lock, with data committed by whoever held it before (SPEC §3.3).
            # The ledger first: an attempt that held the lock before (a retry overlapping a
            # still-running first attempt) may have performed everything, and the
            # conditions, re-checked now, would see its count.
            already = _already_performed(outbox_id, actions)
            if len(already) == len(actions):
                raise _FinishUnderLock(FiringResult(outcome="done", already_performed=already))
            result.already_performed = already
            try:
                user, reason = _conditions_hold(trigger, user_pk, locked)
                if reason is not None:
                    raise _FinishUnderLock(FiringResult.skipped(reason, already))
                with _site_code(f"get_user_context of {_named('event', event)}"):
                    user_context = event.get_user_context(user, context)
                for action in actions:
                    if action.pk in already:
                        continue
                    key = idempotency_key(outbox_id, action.pk)
                    with _site_code(_named("action", action)):
                        action.perform(user, {**user_context, IDEMPOTENCY_KEY: key})
                    LedgerEntry.objects.create(
                        outbox_id=outbox_id,
                        action_id=action.pk,
                        generation=generation,
                        idempotency_key=key,
                    )
                    result.performed.append(action.pk)
            except Activity.Cancel:
                # dj-triggers semantics (raised by an action, or by a condition or
                # get_user_context under the lock): stop the rest, leave the count unchanged;
                # the lock commits what earlier actions wrote, with their ledger entries.
                phase = COMMIT_PHASE
                result = FiringResult(
                    outcome="skipped",
                    reason="cancelled",
                    performed=result.performed,
                    already_performed=result.already_performed,
                )
                raise
            phase = COMMIT_PHASE
            if not result.performed:
                # Nothing left to perform (cannot happen after the checks above, kept as a
                # guard): the count must not move.
                raise Activity.Cancel()
    except _FinishUnderLock as finish:
        return finish.result
    except Exception as exc:
        if phase:
            _mark(exc, phase)
        raise
    return result


def _already_performed(outbox_id: int, actions: list[Any]) -> list[int]:
    """The firing's actions that the ledger records as performed (committed), in order."""
    done = set(LedgerEntry.objects.filter(outbox_id=outbox_id).values_list("action_id", flat=True))
    return [action.pk for action in actions if action.pk in done]


@activity.defn(name=PERFORM_FIRING)
def perform_firing(firing: dict[str, Any]) -> dict[str, Any]:
    """Sync activity on the worker's thread pool, with Django's connection hygiene (SPEC §5.3)."""
    close_old_connections()
    try:
        info = activity.info()
        outbox_id = firing.get("outbox_id")
        activity.logger.info(
            "perform firing of outbox row %s (attempt %s)", outbox_id, info.attempt
        )
        try:
            return asdict(perform(firing))
        except TemporalError:
            # The SDK's own (a cancellation), or an ApplicationError the site raised to
            # decide retries itself: as raised.
            raise
        except Exception as exc:
            failure = activity_failure(exc)
            activity.logger.warning(
                "perform firing of outbox row %s (attempt %s): %s; %s",
                outbox_id,
                info.attempt,
                failure.message,
                "not retryable: the firing fails" if failure.non_retryable else "retryable",
                exc_info=exc,
            )
            # No cause: the daemon records the innermost message of the failure chain as
            # last_error, and this message is the one that says what and where. The
            # traceback stays the site's, for the Temporal UI.
            raise failure.with_traceback(exc.__traceback__) from None
    finally:
        # A thread of the pool keeps its connection between tasks; drop it if it is broken
        # or past CONN_MAX_AGE, as Django does at the end of a request.
        close_old_connections()


def activity_failure(exc: BaseException) -> ApplicationError:
    """The Temporal failure for an exception of :func:`perform`: retryable only for
    infrastructure errors, unless the site opts into retrying application errors."""
    retryable = is_infrastructure_error(exc)
    if not retryable:
        try:
            retryable = conf.retry_application_errors()
        except ValueError as problem:
            # The system check reports it; here the default holds: never repeat an action.
            activity.logger.error("%s", problem)
    # No ``type``: the message already starts with the exception's, and the SDK would print
    # it twice. Nothing matches on it (the workflow's retry policy lists no error types).
    return ApplicationError(failure_message(exc), non_retryable=not retryable)


def failure_message(exc: BaseException) -> str:
    """``ValueError: subject too long (in action 12, SendEmailAction)``: the exception's type
    and message, and where in the firing it was raised when that is known."""
    text = str(exc).strip()
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + "…"
    message = f"{_type_name(exc)}: {text}" if text else _type_name(exc)
    where = getattr(exc, _WHERE, None)
    return f"{message} (in {where})" if where else message


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def is_infrastructure_error(exc: BaseException) -> bool:
    """A lost or unusable database connection, a deadlock, a serialization failure: an
    attempt that a retry can get through, whatever the site's code did before it.

    The whole chain counts (``__cause__`` and ``__context__``): Django raises its own
    ``OperationalError`` from the driver's, and site code may wrap one in an exception of
    its own (``raise MailError(...) from exc``) or raise while handling it.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _infrastructure_types()):
            return True
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str) and (
            sqlstate in RETRIED_SQLSTATES or sqlstate.startswith(CONNECTION_SQLSTATE_CLASS)
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


@cache
def _infrastructure_types() -> tuple[type[BaseException], ...]:
    """Django's ``OperationalError`` and ``InterfaceError`` and the drivers' own (which code
    outside Django's cursor wrapper raises unwrapped): psycopg 3 and psycopg2, either of
    which may be installed. Deadlocks and serialization failures are ``OperationalError``
    subclasses in both drivers."""
    types: list[type[BaseException]] = [OperationalError, InterfaceError]
    for driver in ("psycopg", "psycopg2"):
        try:
            module = importlib.import_module(driver)
        except ImportError:
            continue
        types += [module.OperationalError, module.InterfaceError]
    return tuple(types)
