"""The daemon's SQL files (``sql/queries/``), run by the add-on through Django's cursor.

The files use PostgreSQL's ``$n`` placeholders, as tokio-postgres does; psycopg wants
``%(name)s``. Each statement is translated once per process and run with parameters named
``p1``, ``p2``, ... so the very file the daemon runs, not a copy, is what the add-on runs.

The files are package data (``trigger_relay/sql`` links the repository's ``sql/``, and the
wheel ships all of it). :data:`Statement` is the one list of the statements the add-on
reads at run time; ``tests/test_packaging.py`` checks that every call names one of them and
that the built wheel and sdist contain each file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any
from typing import Literal
from typing import get_args

#: The statements of ``sql/queries/`` that the add-on runs (the daemon runs them all).
Statement = Literal["record_firing", "record_outcome", "outcome_held", "site_id"]
STATEMENTS: tuple[Statement, ...] = get_args(Statement)

QUERY_DIR = Path(__file__).resolve().parent / "sql" / "queries"

_PLACEHOLDER = re.compile(r"\$(\d+)")


@cache
def statement(name: Statement) -> str:
    """``sql/queries/<name>.sql`` without its comment lines, placeholders as ``%(pn)s``."""
    sql = (QUERY_DIR / f"{name}.sql").read_text()
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return _PLACEHOLDER.sub(r"%(p\1)s", body.replace("%", "%%"))


def parameters(values: Sequence[Any]) -> dict[str, Any]:
    """``$1``, ``$2``, ... of a statement, in order."""
    return {f"p{number}": value for number, value in enumerate(values, start=1)}
