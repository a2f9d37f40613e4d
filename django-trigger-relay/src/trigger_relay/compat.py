"""What differs between the Django versions the add-on supports (4.2 LTS to 5.2).

Two features of newer Django map the tables that ``sql/schema/`` owns most directly:
``db_default`` (5.0: a column the database fills in on insert) and ``CompositePrimaryKey``
(5.2: the ledger's key). Older versions get the same behaviour another way, here, so that
the models and the migrations' state say the same thing on every version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

import django
from django.db.models import Expression

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models.sql.compiler import SQLCompiler

# Django 5.0: Field(db_default=...), inserted as DEFAULT and read back by RETURNING.
HAS_DB_DEFAULT = django.VERSION >= (5, 0)
# Django 5.2: models.CompositePrimaryKey.
HAS_COMPOSITE_PRIMARY_KEY = django.VERSION >= (5, 2)


class DatabaseDefault(Expression):
    """The SQL keyword ``DEFAULT`` as a value of an INSERT: the column's own default from
    ``sql/schema/``, which Django 4.2 cannot express (Django 5.0's ``db_default`` inserts
    the same keyword on PostgreSQL). Used as a field's ``default`` (the class itself, so a
    model instance gets an instance of it until it is saved)."""

    def as_sql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper
    ) -> tuple[str, tuple[()]]:
        return "DEFAULT", ()


def database_default(value: Any) -> dict[str, Any]:
    """Field keyword arguments for a column whose value the database supplies on insert.

    ``value`` mirrors the column's SQL default: Django >= 5.0 gets ``db_default=value``.
    Django 4.2 gets ``default=DatabaseDefault``, which leaves the column to the same SQL
    default, but the ORM does not read the value back after the insert (the attribute
    still holds the ``DatabaseDefault``): reload the row if it is needed.
    """
    if HAS_DB_DEFAULT:
        return {"db_default": value}
    return {"default": DatabaseDefault}
