"""The canonical SQL schema files (``sql/schema/``), shipped inside the package.

``trigger_relay/sql`` is a link to the repository's ``sql/`` folder, so the add-on applies
the very files that the daemon checks against and that operators apply with psql.
"""

from __future__ import annotations

import re
from pathlib import Path

from django.db.migrations import RunSQL

SCHEMA_DIR = Path(__file__).resolve().parent / "sql" / "schema"

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_[a-z0-9_]+\.sql$")


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
    """The schema files that one Django migration applies: those numbered ``version``."""
    return [path for path in schema_files() if version_of(path) == version]


def run_sql_operations(version: int, *, reverse_sql: str) -> list[RunSQL]:
    """``RunSQL`` operations applying the files of ``version`` verbatim.

    Each file is one ``execute()`` without parameters, as ``psql -f`` runs it (no statement
    splitting, comments and dollar-quoted bodies untouched). ``reverse_sql`` undoes all of
    them; it runs when the first file's operation is reversed, which Django does last.
    """
    files = files_for_version(version)
    if not files:
        raise FileNotFoundError(f"No schema file {version:04d}_*.sql in {SCHEMA_DIR}")
    return [
        RunSQL(
            sql=[path.read_text(encoding="utf-8")],
            reverse_sql=[reverse_sql] if index == 0 else RunSQL.noop,
        )
        for index, path in enumerate(files)
    ]
