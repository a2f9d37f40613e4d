from __future__ import annotations

from typing import Any

from celery import shared_task
from django.dispatch import Signal
from django.dispatch import receiver

from triggers.models import Event


@receiver(Event.fired)
def on_event_fired(
    sender: type[Event], signal: Signal, event: Event, user_pk: Any, **kwargs: Any
) -> None:
    handle_event.apply_async(
        args=(event.pk, user_pk), kwargs=kwargs, countdown=event.delay.total_seconds()
    )


@shared_task
def handle_event(event_pk: int, user_pk: Any, **context: Any) -> None:
    Event.objects.get(pk=event_pk).handle(user_pk, **context)
