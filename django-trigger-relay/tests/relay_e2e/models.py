"""Conditions and actions that make crashes, failures and concurrency observable."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS
from django.db import connection
from django.db import connections
from django.db import models
from django.db import transaction
from triggers.models import Action
from triggers.models import ActionCountCondition
from triggers.models import Condition
from triggers.models import Event
from triggers.models import Trigger

from relay_e2e import journal


class Flag(models.Model):
    """A named switch the test flips while the worker runs (e.g. "the mail server is down")."""

    name = models.CharField(max_length=64, unique=True)
    on = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"{self.name}={'on' if self.on else 'off'}"

    @classmethod
    def is_on(cls, name: str) -> bool:
        return cls.objects.filter(name=name, on=True).exists()

    @classmethod
    def set(cls, name: str, on: bool) -> None:
        cls.objects.update_or_create(name=name, defaults={"on": on})


class FlagCondition(Condition):
    """Satisfied while its flag is on. Only ``is_satisfied`` (no queryset filter), so a false
    one is dj-triggers' "condition false", not "user filtered out"."""

    flag = models.CharField(max_length=64)

    class Meta:
        verbose_name = "flag is on"

    def is_satisfied(self, user: Any) -> bool:
        return Flag.is_on(self.flag)


class ProbeCondition(Condition):
    """Always satisfied; journals when ``is_satisfied`` starts and ends and sleeps in between,
    so a test can see how many firings the worker checks at the same time."""

    sleep_seconds = models.FloatField(default=0.0)

    class Meta:
        verbose_name = "probe"

    def is_satisfied(self, user: Any) -> bool:
        journal.record("condition_enter", condition=self.pk)
        time.sleep(self.sleep_seconds)
        journal.record("condition_exit", condition=self.pk)
        return True


class RecordAction(Action):
    """Writes an ActionWrite row, then (optionally) sleeps inside the action's transaction,
    then (optionally) fails while its flag is on: the write must then roll back."""

    label = models.CharField(max_length=64)
    sleep_seconds = models.FloatField(default=0.0)
    fail_while = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        verbose_name = "record"

    def perform(self, user: Any, context: dict[str, Any]) -> None:
        key = context.get("trigger_relay_idempotency_key", "")
        write = ActionWrite.objects.create(
            action=self, user=user, label=self.label, idempotency_key=key
        )
        journal.record("action_wrote", action=self.pk, key=key, write=write.pk)
        if self.sleep_seconds:
            time.sleep(self.sleep_seconds)
        if self.fail_while and Flag.is_on(self.fail_while):
            journal.record("action_failed", action=self.pk, key=key)
            raise RuntimeError(f"action {self.label!r}: flag {self.fail_while!r} is on")
        journal.record("action_returned", action=self.pk, key=key)


class ActionWrite(models.Model):
    """One committed write of a RecordAction (rolled back with a failed attempt)."""

    action = models.ForeignKey(RecordAction, on_delete=models.CASCADE, related_name="writes")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    label = models.CharField(max_length=64)
    idempotency_key = models.CharField(max_length=200)
    written_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return f"{self.label} ({self.idempotency_key})"


class OutsideEffectAction(Action):
    """An action with an effect outside the database (an email handed to an SMTP server, a
    webhook): it appends one line to a file, then ends as ``then`` says.

    - ``"return"``: returns.
    - ``"raise"``: raises ``ValueError`` (site code failing after its outside effect).
    - ``"drop_connection_once"``: the first time, its database connection is terminated
      from a second connection (``pg_terminate_backend``) before it writes an ActionWrite
      row, so the write meets a dead connection; a later attempt writes and returns.

    ``on_commit``: the line is appended by ``transaction.on_commit`` (the rule for actions
    with outside effects) instead of at once.
    """

    RETURN = "return"
    RAISE = "raise"
    DROP_CONNECTION_ONCE = "drop_connection_once"

    path = models.CharField(max_length=500)
    then = models.CharField(max_length=32, default=RETURN)
    on_commit = models.BooleanField(default=False)

    class Meta:
        verbose_name = "outside effect"

    def perform(self, user: Any, context: dict[str, Any]) -> None:
        key = context.get("trigger_relay_idempotency_key", "")
        line = f"{key} pid={os.getpid()}\n"
        if self.on_commit:
            transaction.on_commit(lambda: self._append(line))
        else:
            self._append(line)
        if self.then == self.RAISE:
            journal.record("action_failed", action=self.pk, key=key)
            raise ValueError(f"mail server refused recipient {user.email}")
        if self.then == self.DROP_CONNECTION_ONCE:
            marker = Path(f"{self.path}.dropped")
            if not marker.exists():
                marker.touch()
                _terminate_own_backend()
                journal.record("connection_dropped", action=self.pk, key=key)
            OutsideEffectWrite.objects.create(action=self, idempotency_key=key)
        journal.record("action_returned", action=self.pk, key=key)

    def _append(self, line: str) -> None:
        # One write() on an O_APPEND file: lines of concurrent attempts never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


class OutsideEffectWrite(models.Model):
    """The database write of an OutsideEffectAction (``drop_connection_once``)."""

    action = models.ForeignKey(OutsideEffectAction, on_delete=models.CASCADE, related_name="writes")
    idempotency_key = models.CharField(max_length=200)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return self.idempotency_key


def _terminate_own_backend() -> None:
    """Terminate this thread's database connection from another one, as a failover, a
    PgBouncer restart or an idle-in-transaction timeout would: the server side is gone, the
    client does not know until its next statement."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    other = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
            (terminated,) = cursor.fetchone()
        assert terminated, f"backend {pid} not terminated"
    finally:
        other.close()


# -- a site's overrides of dj-triggers' methods, called as dj-triggers calls them (guarantees §3.2)


class StaffFreeTrigger(Trigger):
    """A Trigger subclass that never fires for staff users, and whose ``on_event`` journals
    and may decline, as site code does around ``super()``."""

    decline_on_event = models.BooleanField(default=False)

    class Meta:
        verbose_name = "staff-free trigger"

    def filter_user_queryset(self, user_queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
        return super().filter_user_queryset(user_queryset).filter(is_staff=False)

    def on_event(self, user: Any, context: Any) -> None:
        journal.record("on_event_override", trigger=self.pk, user=user.pk)
        if not self.decline_on_event:
            super().on_event(user, context)


class AnnotatedEvent(Event):
    """An Event subclass whose ``handle`` adds to the context before dj-triggers' own."""

    class Meta:
        verbose_name = "annotated event"

    def handle(self, user_pk: Any, **context: Any) -> None:
        context["handled_by"] = "AnnotatedEvent.handle"
        super().handle(user_pk, **context)


class UsernameCountCondition(ActionCountCondition):
    """A cap subclass with a filter of its own (no ``super()``): it keeps out one user by
    name, whatever their count."""

    excluded_username = models.CharField(max_length=150)

    class Meta:
        verbose_name = "count, except one user"

    def filter_user_queryset(self, user_queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
        return user_queryset.exclude(username=self.excluded_username)


class HandoffAction(Action):
    """Hands data on to the firing's next action in the one context dict they share."""

    class Meta:
        verbose_name = "hand-off"

    def perform(self, user: Any, context: dict[str, Any]) -> None:
        context["handed_on_by"] = self.pk
