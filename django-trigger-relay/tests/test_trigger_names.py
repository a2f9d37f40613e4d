"""The daemon reads trigger names from dj-triggers' own table (guarantees §6.6): its
``sql/queries/trigger_names.sql``, run here on the real ``triggers_trigger`` of the installed
dj-triggers (1.0.1 or main, see scripts/test.sh), gives each trigger's name for the
workflow's memo and search attributes; a deleted trigger is simply absent."""

from __future__ import annotations

import pytest
from django.db import connection
from triggers.models import Trigger

from trigger_relay import queries

pytestmark = pytest.mark.django_db


def test_the_daemon_reads_names_from_dj_triggers_table() -> None:
    quoted = Trigger.objects.create(name='Rappel « urgent » "vite" l\'été 🚀')
    longest = Trigger.objects.create(name="ü" * 64)
    deleted = Trigger.objects.create(name="deleted meanwhile")
    deleted_pk = deleted.pk
    deleted.delete()
    with connection.cursor() as cursor:
        cursor.execute(
            queries.statement("trigger_names"),
            queries.parameters([[quoted.pk, longest.pk, deleted_pk]]),
        )
        names = dict(cursor.fetchall())
    assert names == {quoted.pk: quoted.name, longest.pk: longest.name}
