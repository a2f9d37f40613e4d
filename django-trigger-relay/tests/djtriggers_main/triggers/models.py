from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.validators import MinValueValidator
from django.db import models
from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone
from polymorphic.models import PolymorphicModel

User = get_user_model()


class Trigger(PolymorphicModel):
    name = models.CharField("name", max_length=64, unique=True)
    is_enabled = models.BooleanField("enabled", default=False)

    class Meta:
        verbose_name = "trigger"
        verbose_name_plural = "triggers"

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.is_enabled and self.actions.exists()

    def filter_user_queryset(self, user_queryset: models.QuerySet) -> models.QuerySet:
        if not self.is_active:
            return user_queryset.none()
        for condition in self.conditions.all():
            user_queryset = condition.filter_user_queryset(user_queryset)
        return user_queryset

    def on_event(self, user: Any, context: Mapping[str, Any]) -> None:
        if user and all(condition.is_satisfied(user) for condition in self.conditions.all()):
            with Activity.lock(user, self):
                for action in self.actions.order_by("id"):
                    action.perform(user, context)


class Activity(PolymorphicModel):
    trigger = models.ForeignKey(
        Trigger,
        on_delete=models.CASCADE,
        related_name="activities",
        related_query_name="activity",
        verbose_name="trigger",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="trigger_activities",
        related_query_name="trigger_activity",
        verbose_name="user",
    )
    last_action_datetime = models.DateTimeField("last action", blank=True, null=True)
    action_count = models.PositiveIntegerField("actions", default=0)

    class Meta:
        verbose_name = "activity"
        verbose_name_plural = "activities"
        unique_together = (("trigger", "user"),)

    class Cancel(Exception):
        pass

    def __str__(self) -> str:
        return f"{self.trigger} - {self.user}"

    @classmethod
    @contextmanager
    def lock(cls, user: Any, trigger: Trigger) -> Iterator[Activity]:
        activity, _ = trigger.activities.get_or_create(user=user)
        with transaction.atomic():
            activity = Activity.objects.select_for_update().get(id=activity.id)
            try:
                yield activity
            except cls.Cancel:
                pass
            else:
                activity.action_count += 1
                activity.last_action_datetime = timezone.now()
                activity.save()


class Action(PolymorphicModel):
    trigger = models.ForeignKey(
        Trigger,
        on_delete=models.CASCADE,
        related_name="actions",
        related_query_name="action",
        verbose_name="trigger",
    )

    class Meta:
        verbose_name = "action"
        verbose_name_plural = "actions"

    def __str__(self) -> str:
        return str(type(self)._meta.verbose_name)

    def perform(self, user: Any, context: dict[str, Any]) -> None:
        raise NotImplementedError


class Event(PolymorphicModel):
    trigger = models.ForeignKey(
        Trigger,
        on_delete=models.CASCADE,
        related_name="events",
        related_query_name="event",
        verbose_name="trigger",
    )
    delay = models.DurationField(
        "delay",
        default=dt.timedelta(),
        blank=True,
        help_text=(
            "Delay from the moment when the event actually happened until it should be handled."
        ),
    )
    fired = Signal()

    class Meta:
        verbose_name = "event"
        verbose_name_plural = "events"

    def __str__(self) -> str:
        return str(type(self)._meta.verbose_name)

    def should_be_fired(self, **kwargs: Any) -> bool:
        return True

    def get_user_context(self, user: Any, context: Mapping[str, Any]) -> dict[str, Any]:
        return {"user": user, **context}

    def fire(self, user_queryset: models.QuerySet, **kwargs: Any) -> None:
        if not self.should_be_fired(**kwargs):
            return
        users = self.trigger.filter_user_queryset(user_queryset)
        for user_pk in users.values_list("pk", flat=True).iterator():
            self.fired.send(type(self), event=self, user_pk=user_pk, **kwargs)

    def fire_single(self, user_pk: Any, **kwargs: Any) -> None:
        self.fire(User.objects.filter(pk=user_pk), **kwargs)

    def handle(self, user_pk: Any, **context: Any) -> None:
        user = self.trigger.filter_user_queryset(User.objects.filter(pk=user_pk)).first()
        if user:
            self.trigger.on_event(user, self.get_user_context(user, context))


class Condition(PolymorphicModel):
    trigger = models.ForeignKey(
        Trigger,
        on_delete=models.CASCADE,
        related_name="conditions",
        related_query_name="condition",
        verbose_name="trigger",
    )

    class Meta:
        verbose_name = "condition"
        verbose_name_plural = "conditions"

    def __str__(self) -> str:
        return str(type(self)._meta.verbose_name)

    def is_satisfied(self, user: Any) -> bool:
        return True

    def filter_user_queryset(self, user_queryset: models.QuerySet) -> models.QuerySet:
        return user_queryset


class ActionCountCondition(Condition):
    limit = models.PositiveIntegerField(
        "action count limit",
        default=1,
        validators=[MinValueValidator(1)],
        help_text="Maximal number of actions that can be triggered for the user.",
    )

    class Meta:
        verbose_name = "action count"
        verbose_name_plural = "action count"

    def filter_user_queryset(self, user_queryset: models.QuerySet) -> models.QuerySet:
        return (
            super()
            .filter_user_queryset(user_queryset)
            .exclude(
                trigger_activity__trigger=self.trigger,
                trigger_activity__action_count__gte=self.limit,
            )
        )


class ActionFrequencyCondition(Condition):
    limit = models.DurationField(
        "action frequency limit",
        default=dt.timedelta(days=30),
        help_text=(
            "Minimal period of time that should run out before the next action can be triggered."
        ),
    )

    class Meta:
        verbose_name = "action frequency"
        verbose_name_plural = "action frequency"

    def filter_user_queryset(self, user_queryset: models.QuerySet) -> models.QuerySet:
        return (
            super()
            .filter_user_queryset(user_queryset)
            .exclude(
                trigger_activity__trigger=self.trigger,
                trigger_activity__last_action_datetime__gt=timezone.now() - self.limit,
            )
        )
