"""Conditions and actions that make crashes, failures and concurrency observable."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import models
from triggers.models import Action
from triggers.models import Condition

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
        key = context.get("idempotency_key", "")
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
