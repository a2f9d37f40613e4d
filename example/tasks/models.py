"""A to-do app whose events drive dj-triggers (guarantees §0)."""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import models
from django.db import transaction
from django.template import Context
from django.template import Template
from django.utils import timezone
from triggers.models import Action
from triggers.models import Condition
from triggers.models import Event


class Task(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tasks"
    )
    title = models.CharField(max_length=200)
    important = models.BooleanField(default=False)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return self.title

    def complete(self) -> None:
        """Mark the task done and fire ``TaskCompletedEvent``, in one transaction.

        Fired triggers routed to Temporal are written to the outbox inside this
        transaction (guarantees §2.2): if saving fails, no firing is recorded.
        """
        with transaction.atomic():
            self.completed_at = timezone.now()
            self.save(update_fields=["completed_at"])
            events = TaskCompletedEvent.objects.filter(trigger__is_enabled=True)
            for event in events.select_related("trigger").order_by("id"):
                # The context is JSON values only: ids and strings, not model instances.
                event.fire_single(
                    self.user_id,
                    task_id=self.pk,
                    task_title=self.title,
                    task_important=self.important,
                )


class TaskCompletedEvent(Event):
    important_only = models.BooleanField(default=False)

    class Meta:
        verbose_name = "task completed"

    def should_be_fired(self, **kwargs: Any) -> bool:
        return not self.important_only or bool(kwargs.get("task_important"))


class HourlyClockEvent(Event):
    """Fired every hour by ``manage.py fire_clock`` (e.g. from cron) for all active users."""

    class Meta:
        verbose_name = "hourly clock"

    @classmethod
    def fire_all(cls, now: dt.datetime | None = None) -> int:
        now = now or timezone.now()
        users = get_user_model().objects.filter(is_active=True)
        count = 0
        with transaction.atomic():
            events = cls.objects.filter(trigger__is_enabled=True)
            for event in events.select_related("trigger").order_by("id"):
                event.fire(users, fired_at=now.isoformat(timespec="seconds"))
                count += 1
        return count


class HasUncompletedTaskCondition(Condition):
    class Meta:
        verbose_name = "has uncompleted task"

    def is_satisfied(self, user: Any) -> bool:
        return Task.objects.filter(user=user, completed_at__isnull=True).exists()

    def filter_user_queryset(self, user_queryset: models.QuerySet) -> models.QuerySet:
        open_tasks = Task.objects.filter(user=models.OuterRef("pk"), completed_at__isnull=True)
        return super().filter_user_queryset(user_queryset).filter(models.Exists(open_tasks))


class SendEmailAction(Action):
    """Sends an email whose subject and body are Django templates rendered with the
    user context (``user`` plus the event's context), and records it as a SentEmail.

    An action with an effect outside the database: the mail is handed to the mail server
    with ``transaction.on_commit``, once the firing's transaction has committed (see
    "Actions with outside effects" in django-trigger-relay/README.md). Sent at once, it
    would go out although the transaction then fails (this action's own write, with a
    rendered subject over 200 characters; a later action), and again on a replay.
    """

    subject = models.CharField(max_length=200)
    body = models.TextField()

    class Meta:
        verbose_name = "send email"

    def perform(self, user: Any, context: dict[str, Any]) -> None:
        template_context = Context(context)
        subject = " ".join(Template(self.subject).render(template_context).split())
        body = Template(self.body).render(template_context)
        SentEmail.objects.create(
            user=user,
            action=self,
            trigger_name=self.trigger.name,
            subject=subject,
            body=body,
            context={key: value for key, value in context.items() if key != "user"},
        )
        # After the commit: never for a firing that rolled back. At most once: a crash
        # between the commit and the send loses the mail (the ledger says the action ran).
        transaction.on_commit(partial(send_mail, subject, body, None, [user.email]))


class SentEmail(models.Model):
    """What SendEmailAction sent: lets tests and operators see that an action ran."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sent_emails"
    )
    action = models.ForeignKey(SendEmailAction, null=True, on_delete=models.SET_NULL)
    trigger_name = models.CharField(max_length=64)
    subject = models.CharField(max_length=200)
    body = models.TextField()
    context = models.JSONField(default=dict)
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return self.subject
