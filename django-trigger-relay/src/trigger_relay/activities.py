"""The Django-side activity of ``trigger_workflow`` (SPEC §3): run at due time, with fresh
data, in the site's own code.

dj-triggers on Celery runs ``Event.handle``: filter the user, check conditions, then
``Activity.lock`` and perform. Its race: conditions are checked *before* the lock, so
concurrent firings all pass a count cap (19-20 of 20 performed with limit 1). Here the
conditions are checked again under the lock, every action of a firing is recorded in the
ledger in the action's own transaction, and the Activity's count moves only when something
was performed.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from django.contrib.auth import get_user_model
from django.db import close_old_connections
from django.utils import timezone
from temporalio import activity

from trigger_relay.ledger import LedgerEntry
from trigger_relay.ledger import idempotency_key
from trigger_relay.models import OutboxRow

PERFORM_FIRING = "trigger_relay.perform_firing"

#: Context key under which each action receives its idempotency key.
IDEMPOTENCY_KEY = "idempotency_key"


@dataclass
class FiringResult:
    """Mirrors ``FiringResult`` in the daemon's src/workflow.rs."""

    outcome: str  # "done" or "skipped"
    reason: str | None = None
    performed: list[int] = field(default_factory=list)
    already_performed: list[int] = field(default_factory=list)

    @classmethod
    def skipped(cls, reason: str) -> FiringResult:
        return cls(outcome="skipped", reason=reason)


class _SkipUnderLock(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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
    except Exception:  # RelatedObjectDoesNotExist: a trigger without its action
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
            users = condition.filter_user_queryset(users)
    user = users.first()
    if user is None:
        return None, "user_filtered_out"
    if not all(condition.is_satisfied(user) for condition in conditions):
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


def perform(firing: dict[str, Any]) -> FiringResult:
    """SPEC §3.2-3.4 for one firing; raising means "retry" (the transaction rolled back)."""
    from triggers.models import Activity
    from triggers.models import Event
    from triggers.models import Trigger

    outbox_id = int(firing["outbox_id"])
    generation = int(firing["generation"])
    row = (
        OutboxRow.objects.filter(pk=outbox_id).values("state", "generation", "firing_uuid").first()
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

    event = Event.objects.filter(pk=firing["event_id"]).first()
    if event is None:
        return FiringResult.skipped("event_deleted")
    trigger = Trigger.objects.filter(pk=firing["trigger_id"]).first()
    if trigger is None:
        return FiringResult.skipped("trigger_deleted")
    if not trigger.is_enabled:
        return FiringResult.skipped("trigger_disabled")
    actions = actions_of(trigger)
    if not actions:
        return FiringResult.skipped("no_actions")
    performed_before = set(
        LedgerEntry.objects.filter(outbox_id=outbox_id).values_list("action_id", flat=True)
    )
    if performed_before and all(action.pk in performed_before for action in actions):
        # A replay of a finished row (or a retry after a crash that came after the commit):
        # everything is done already, whatever the conditions say now.
        return FiringResult(outcome="done", already_performed=[action.pk for action in actions])
    user_pk = firing["user_pk"]
    current = Activity.objects.filter(trigger=trigger, user_id=user_pk).first()
    user, reason = _conditions_hold(trigger, user_pk, current)
    if reason is not None:
        return FiringResult.skipped(reason)

    context = firing_context(firing)
    result = FiringResult(outcome="done")
    try:
        with Activity.lock(user, trigger) as locked:
            # Under the lock, with data committed by whoever held it before (SPEC §3.3).
            user, reason = _conditions_hold(trigger, user_pk, locked)
            if reason is not None:
                raise _SkipUnderLock(reason)
            user_context = event.get_user_context(user, context)
            done = set(
                LedgerEntry.objects.filter(outbox_id=outbox_id).values_list("action_id", flat=True)
            )
            for action in actions:
                if action.pk in done:
                    result.already_performed.append(action.pk)
                    continue
                key = idempotency_key(outbox_id, action.pk)
                try:
                    action.perform(user, {**user_context, IDEMPOTENCY_KEY: key})
                except Activity.Cancel:
                    # dj-triggers semantics: stop the rest, leave the count unchanged; what
                    # earlier actions wrote commits with their ledger entries.
                    result = FiringResult(
                        outcome="skipped",
                        reason="cancelled",
                        performed=result.performed,
                        already_performed=result.already_performed,
                    )
                    raise
                LedgerEntry.objects.create(
                    outbox_id=outbox_id,
                    action_id=action.pk,
                    generation=generation,
                    idempotency_key=key,
                )
                result.performed.append(action.pk)
            if not result.performed:
                # Everything was performed before (a retry after a crash, or a replay):
                # the count must not move again.
                raise Activity.Cancel()
    except _SkipUnderLock as skip:
        return FiringResult.skipped(skip.reason)
    return result


@activity.defn(name=PERFORM_FIRING)
def perform_firing(firing: dict[str, Any]) -> dict[str, Any]:
    """Sync activity on the worker's thread pool, with Django's connection hygiene (SPEC §5.3)."""
    close_old_connections()
    try:
        info = activity.info()
        activity.logger.info(
            "perform firing of outbox row %s (attempt %s)", firing.get("outbox_id"), info.attempt
        )
        return asdict(perform(firing))
    finally:
        # A thread of the pool keeps its connection between tasks; drop it if it is broken
        # or past CONN_MAX_AGE, as Django does at the end of a request.
        close_old_connections()


def firing_context(firing: dict[str, Any]) -> dict[str, Any]:
    """The firing's context, with integers exact.

    The daemon sends it as JSON text (``context_json``): the Rust SDK decodes payloads
    through a JSON value type that rounds integers beyond 64 bits. Inputs recorded before
    carry it as an object (``context``).
    """
    text = firing.get("context_json")
    if text is not None:
        decoded = json.loads(text)
        if not isinstance(decoded, dict):
            raise ValueError(f"context_json is not a JSON object: {text[:80]!r}")
        return decoded
    return dict(firing.get("context") or {})
