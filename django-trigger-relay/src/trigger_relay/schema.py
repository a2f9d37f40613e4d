"""The canonical SQL schema files (``sql/schema/``) and how the migrations apply them.

``trigger_relay/sql`` is a link to the repository's ``sql/`` folder: the package ships the
files that the daemon checks its schema version against and that operators apply with psql.

The migrations do not read these files: each carries a frozen copy of the files of its
version (string constants in the migration module), so that a migration applies forever
what it applied when it was released, whatever happens to the files afterwards.
``tests/test_schema.py`` checks that every frozen copy equals its file, so a released file
cannot be edited either: a change to the schema is a new ``NNNN_*.sql`` file and a new
migration carrying it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations import RunSQL

SCHEMA_DIR = Path(__file__).resolve().parent / "sql" / "schema"

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_[a-z0-9_]+\.sql$")

# Where the README explains how a site whose own tests use SQLite tests with the add-on.
SQLITE_TESTS_DOC = 'django-trigger-relay README, "Testing a site that uses SQLite"'


def schema_files() -> list[Path]:
    """All schema files, in the order they are applied (by their 4-digit prefix)."""
    files = sorted(path for path in SCHEMA_DIR.glob("*.sql"))
    for path in files:
        if not _FILE_NAME.match(path.name):
            raise ValueError(f"{path}: schema files are named NNNN_description.sql")
    if not files:
        raise FileNotFoundError(
            f"No schema files in {SCHEMA_DIR}: the package was built without its sql/ folder."
        )
    return files


def version_of(path: Path) -> int:
    match = _FILE_NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path}: schema files are named NNNN_description.sql")
    return int(match["version"])


def files_for_version(version: int) -> list[Path]:
    """The schema files that one migration carries: those numbered ``version``, in order."""
    return [path for path in schema_files() if version_of(path) == version]


def not_postgresql(alias: str, vendor: str) -> tuple[str, str]:
    """Message and hint of ``trigger_relay.E006`` (the outbox database is not PostgreSQL),
    shared by the system check and the migrations, which refuse such a database."""
    return (
        f"The outbox database {alias!r} is {vendor}, not PostgreSQL.",
        "trigger_relay's outbox (sql/schema/) and the relay daemon need "
        "PostgreSQL: LISTEN/NOTIFY, jsonb, FOR UPDATE SKIP LOCKED.",
    )


class NotPostgreSQL(ImproperlyConfigured):
    """A trigger_relay migration was run on a database that is not PostgreSQL."""


def require_postgresql(connection: BaseDatabaseWrapper) -> None:
    """Refuse, by name, a database the schema cannot be applied to.

    Without this, SQLite (a site whose tests run on it, under pytest-django) would fail on
    the first PostgreSQL-only word of the SQL with a bare syntax error.
    """
    if connection.vendor == "postgresql":
        return
    message, hint = not_postgresql(connection.alias, connection.vendor)
    raise NotPostgreSQL(
        f"trigger_relay.E006: {message} {hint} Migrate trigger_relay on PostgreSQL only; "
        f"a site whose tests run on SQLite: see {SQLITE_TESTS_DOC}."
    )


class RunSchemaSQL(RunSQL):
    """``RunSQL`` of one frozen schema file, which refuses any database but PostgreSQL
    (where the router lets the migration run at all) before executing anything."""

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        self._require_postgresql(app_label, schema_editor)
        super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        self._require_postgresql(app_label, schema_editor)
        super().database_backwards(app_label, schema_editor, from_state, to_state)

    def _require_postgresql(self, app_label: str, schema_editor: Any) -> None:
        if router.allow_migrate(schema_editor.connection.alias, app_label, **self.hints):
            require_postgresql(schema_editor.connection)


def run_sql_operations(frozen_files: Iterable[str], *, reverse_sql: str) -> list[RunSQL]:
    """Operations applying the frozen copies of one version's files, in order, verbatim.

    Each file is one ``execute()`` without parameters, as ``psql -f`` runs it (no statement
    splitting, comments and dollar-quoted bodies untouched). ``reverse_sql`` undoes all of
    them; it runs when the first file's operation is reversed, which Django does last.
    """
    files = list(frozen_files)
    if not files:
        raise ValueError("a schema migration applies at least one file")
    return [
        RunSchemaSQL(
            sql=[sql],
            reverse_sql=[reverse_sql] if index == 0 else RunSQL.noop,
        )
        for index, sql in enumerate(files)
    ]
