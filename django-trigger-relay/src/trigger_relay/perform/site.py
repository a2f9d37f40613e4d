"""The site identity, and the refusal of another site's tasks (docs/contract.md, "Site
identity").

Two sites may share a Temporal namespace; with the same task queue names, one site's
worker could take the other's ``perform_firing`` task and look the row up in its own
database. The daemon writes its site's identity into every workflow input (``site``), and
the activity refuses a task of another site before it touches the database. The identity is
``TRIGGER_RELAY_SITE`` if set (for the daemon and this worker alike), else the id the
outbox's database holds (``trigger_relay_site``, schema version 7), read once per database.
"""

from __future__ import annotations

from functools import cache

from django.db import connections
from django.db import router

from trigger_relay import conf
from trigger_relay import queries
from trigger_relay.models import OutboxRow
from trigger_relay.perform.workflow_input import WorkflowInput


class ForeignSite(Exception):
    """A task of another site: retried (Temporal may hand it to that site's worker), never
    performed here."""


class SiteUnknown(Exception):
    """The database holds no site identity (its ``trigger_relay_site`` row was deleted):
    tasks are retried until it is restored or ``TRIGGER_RELAY_SITE`` is set."""


def own_site() -> str:
    """This worker's site identity."""
    configured = conf.site_setting()
    if configured is not None:
        return configured
    alias = router.db_for_write(OutboxRow)
    return _database_site(alias, str(connections[alias].settings_dict.get("NAME")))


@cache
def _database_site(alias: str, name: str) -> str:
    """The id in ``trigger_relay_site`` of database ``name`` (the cache key: a test run that
    switches databases reads each once)."""
    with connections[alias].cursor() as cursor:
        cursor.execute(queries.statement("site_id"))
        rows = cursor.fetchall()
    if len(rows) != 1:
        raise SiteUnknown(
            f"trigger_relay_site of database {name!r} holds {len(rows)} rows, not one: restore "
            "its row (schema version 7 creates it) or set TRIGGER_RELAY_SITE"
        )
    return str(rows[0][0])


def check_site(firing: WorkflowInput) -> None:
    """Raise :class:`ForeignSite` for a workflow input of another site. An input without
    ``site`` (a row dispatched before schema version 7) is this site's."""
    theirs = firing.get("site")
    if theirs is None:
        return
    ours = own_site()
    if str(theirs) != ours:
        raise ForeignSite(
            f"outbox row {firing.get('outbox_id')} belongs to site {theirs}, but this worker "
            f"serves site {ours}: each site needs task queues (or a namespace) of its own "
            '(docs/contract.md, "Site identity")'
        )
