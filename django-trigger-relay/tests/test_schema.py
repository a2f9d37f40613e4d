"""The Django migration applies the canonical SQL files, nothing more or less (SPEC §1.1).

The schema that ``migrate`` creates is compared with the schema that ``psql -f`` creates from
``sql/schema/*.sql`` in a fresh database of its own, through ``pg_dump --schema-only``
(restricted to the trigger_relay objects, comments and dump-specific lines removed).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations import RunSQL
from django.db.migrations.operations import SeparateDatabaseAndState

from trigger_relay.schema import schema_files
from trigger_relay.schema import version_of

REPO_SQL_DIR = Path(__file__).resolve().parents[2] / "sql"

_HEADER = re.compile(
    r"^-- Name: (?P<name>.*); Type: (?P<type>.*); Schema: (?P<schema>.*); Owner: (?P<owner>.*)$",
    re.MULTILINE,
)


@dataclass(frozen=True)
class DumpedObject:
    type: str
    name: str
    schema: str
    owner: str
    sql: str


def server_args() -> list[str]:
    db = settings.DATABASES["default"]
    return ["-h", db["HOST"], "-p", str(db["PORT"]), "-U", db["USER"], "--no-password"]


def dump_trigger_relay_objects(dbname: str) -> list[DumpedObject]:
    """The trigger_relay objects of ``pg_dump --schema-only``, normalized."""
    dump = subprocess.run(
        ["pg_dump", *server_args(), "--schema-only", dbname],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    headers = list(_HEADER.finditer(dump))
    objects = []
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        body = dump[header.end() : following.start() if following else len(dump)]
        lines = [
            line.rstrip()
            for line in body.splitlines()
            if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict"))
        ]
        if "trigger_relay" in header["name"]:
            objects.append(
                DumpedObject(
                    header["type"],
                    header["name"],
                    header["schema"],
                    header["owner"],
                    "\n".join(lines),
                )
            )
    return objects


def schema_version_rows(dbname: str) -> list[tuple[int]]:
    db = settings.DATABASES["default"]
    with psycopg.connect(dbname=dbname, user=db["USER"], host=db["HOST"], port=db["PORT"]) as conn:
        query = "SELECT version FROM trigger_relay_schema_version ORDER BY version"
        return conn.execute(query).fetchall()


@pytest.fixture(scope="module")
def psql_reference() -> Iterator[str]:
    """A fresh database with sql/schema/*.sql applied by psql, dropped afterwards."""
    db = settings.DATABASES["default"]
    name = f"trigger_relay_sqlref_{settings.RUN_ID}"
    admin = psycopg.connect(
        dbname="postgres", user=db["USER"], host=db["HOST"], port=db["PORT"], autocommit=True
    )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            for path in sorted(REPO_SQL_DIR.joinpath("schema").glob("*.sql")):
                psql = ["psql", *server_args(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", name]
                subprocess.run([*psql, "-f", str(path)], check=True, capture_output=True, text=True)
            yield name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def assert_same_schema(django_db: str, reference_db: str) -> None:
    migrated = dump_trigger_relay_objects(django_db)
    expected = dump_trigger_relay_objects(reference_db)
    assert {(o.type, o.name) for o in expected} >= {
        ("TABLE", "trigger_relay_outbox"),
        ("TABLE", "trigger_relay_schema_version"),
        ("FUNCTION", "trigger_relay_outbox_notify()"),
        ("TRIGGER", "trigger_relay_outbox trigger_relay_outbox_notify"),
        ("INDEX", "trigger_relay_outbox_pending_idx"),
    }
    assert migrated == expected
    # One row per version, however many files it has (version 3 builds its indexes in
    # files of their own).
    versions = sorted({(version_of(path),) for path in schema_files()})
    assert schema_version_rows(django_db) == schema_version_rows(reference_db) == versions


def test_package_ships_the_canonical_sql_files() -> None:
    """SPEC §1.1: the add-on applies the repository's own files (trigger_relay/sql links sql/)."""
    files = schema_files()
    assert [path.resolve() for path in files] == sorted(
        REPO_SQL_DIR.joinpath("schema").resolve().glob("*.sql")
    )
    assert files[0].name == "0001_outbox.sql"


def test_every_schema_file_is_applied_by_a_migration_of_its_number() -> None:
    """SPEC §1.1: each sql/schema/NNNN_*.sql is applied verbatim by migration NNNN_*."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    migrations = {
        name[:4]: migration
        for (app, name), migration in loader.disk_migrations.items()
        if app == "trigger_relay"
    }
    for path in schema_files():
        migration = migrations.get(f"{version_of(path):04d}")
        assert migration is not None, (
            f"no trigger_relay migration {version_of(path):04d}_* applies {path.name}"
        )
        run_sql = [
            operation
            for wrapper in migration.operations
            if isinstance(wrapper, SeparateDatabaseAndState)
            for operation in wrapper.database_operations
            if isinstance(operation, RunSQL)
        ]
        assert path.read_text(encoding="utf-8") in [op.sql[0] for op in run_sql]


@pytest.mark.django_db
def test_migrated_schema_equals_psql_applied_schema(psql_reference: str) -> None:
    """SPEC §1.1: `migrate` and `psql -f sql/schema/*.sql` give the same objects."""
    assert_same_schema(connection.settings_dict["NAME"], psql_reference)


@pytest.mark.django_db(transaction=True)
def test_migration_reverses_and_reapplies(psql_reference: str) -> None:
    """SPEC §1.1: unapplying drops what the SQL created; reapplying gives the same schema."""
    name = connection.settings_dict["NAME"]
    call_command("migrate", "trigger_relay", "zero", verbosity=0)
    try:
        assert dump_trigger_relay_objects(name) == []
    finally:
        call_command("migrate", "trigger_relay", verbosity=0)
    assert_same_schema(name, psql_reference)


@pytest.mark.django_db
def test_no_missing_migrations() -> None:
    """SPEC §2.1: the add-on, the example app and dj-triggers' models match their migrations."""
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_schema_3_leaves_existing_rows_without_a_firing_uuid() -> None:
    """SPEC §4.3: rows recorded before schema 3 keep firing_uuid NULL (a relay of the
    previous release may have started them under their old workflow id); rows recorded
    after it get a uuid of their own from the database."""
    insert = (
        "INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, due_at) "
        "VALUES (1, 1, %s, now()) RETURNING id"
    )
    call_command("migrate", "trigger_relay", "0002", verbosity=0)
    try:
        with connection.cursor() as cursor:
            cursor.execute(insert, ["before"])
            (before,) = cursor.fetchone()
        call_command("migrate", "trigger_relay", "0003", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute(insert, ["after"])
            (after,) = cursor.fetchone()
            cursor.execute(
                "SELECT id, firing_uuid FROM trigger_relay_outbox WHERE id IN (%s, %s) ORDER BY id",
                [before, after],
            )
            rows = dict(cursor.fetchall())
            cursor.execute("SELECT max(version) FROM trigger_relay_schema_version")
            (version,) = cursor.fetchone()
    finally:
        call_command("migrate", "trigger_relay", verbosity=0)
    assert rows[before] is None
    assert rows[after] is not None
    assert version == 3


@pytest.mark.django_db
def test_migration_state_of_the_unmanaged_models_matches_the_models() -> None:
    """``makemigrations --check`` ignores fields of unmanaged models, so a column added to
    ``OutboxRow`` without its state operation would go unnoticed: compare them here."""
    from django.apps import apps

    state = MigrationLoader(connection).project_state()
    for name in ("outboxrow", "ledgerentry"):
        migrated = state.models["trigger_relay", name]
        model = apps.get_model("trigger_relay", name)
        expected = {field.name: field.deconstruct()[1:] for field in model._meta.local_fields}
        if model._meta.pk.name not in expected:  # a composite primary key is no local field
            expected[model._meta.pk.name] = model._meta.pk.deconstruct()[1:]
        actual = {
            field_name: field.deconstruct()[1:] for field_name, field in migrated.fields.items()
        }
        assert actual.keys() == expected.keys(), name
        for field_name, deconstructed in expected.items():
            assert actual[field_name] == deconstructed, f"{name}.{field_name}"
