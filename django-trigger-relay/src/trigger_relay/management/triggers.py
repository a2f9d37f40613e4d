"""What the management commands share: choosing triggers by ``--trigger NAME|PK``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.management.base import CommandError


def select_triggers(selectors: Iterable[str], *, refused: str = "") -> list[Any]:
    """The triggers that ``selectors`` name, each by exact name or by pk, once each and in pk
    order (dj-triggers' ``Trigger`` rows, without their polymorphic subclasses).

    Raises :class:`CommandError` for a selector that names no trigger, or that is the name
    of one trigger and the pk of another; ``refused`` ends its message (``"; nothing was
    changed"``).
    """
    from triggers.models import Trigger

    chosen: dict[int, Any] = {}
    for selector in selectors:
        by_name = Trigger.objects.non_polymorphic().filter(name=selector).first()
        by_pk = (
            Trigger.objects.non_polymorphic().filter(pk=int(selector)).first()
            if selector.isdigit()
            else None
        )
        if by_name is not None and by_pk is not None and by_name.pk != by_pk.pk:
            raise CommandError(
                f"--trigger {selector!r} is both the name of trigger {by_name.pk} and the "
                f"pk of trigger {by_pk.pk} ({by_pk.name!r}){refused}."
            )
        trigger = by_name or by_pk
        if trigger is None:
            raise CommandError(f"No trigger has the name or pk {selector!r}{refused}.")
        chosen[trigger.pk] = trigger
    return sorted(chosen.values(), key=lambda trigger: trigger.pk)
