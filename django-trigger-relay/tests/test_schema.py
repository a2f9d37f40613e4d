"""The Django migrations apply the canonical SQL files, nothing more or less (guarantees §1.1).

Each migration applies frozen copies of its version's files, equal to the files. The schema
that ``migrate`` creates is compared with the schema that ``psql -f`` creates from
``sql/schema/*.sql`` in a fresh database of its own, through ``pg_dump --schema-only``
(restricted to the trigger_relay objects, comments and dump-specific lines removed). And
the files' role and grants work for parallel test databases and non-public schemas.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations import RunSQL
from django.db.migrations.operations import SeparateDatabaseAndState

import trigger_relay.migrations
import trigger_relay.schema
from trigger_relay.schema import files_for_version
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


def of_django_managed_tables(obj: DumpedObject) -> bool:
    """Whether an object belongs to a table of the add-on that Django owns (a managed model,
    such as the routes), not sql/schema/: only ``migrate`` creates those."""
    from django.apps import apps

    tables = [
        model._meta.db_table
        for model in apps.get_app_config("trigger_relay").get_models()
        if model._meta.managed
    ]
    # Constraints are named "<table> <constraint>"; Django's indexes and constraints start
    # with their table's name.
    return any(obj.name.split(" ", 1)[0].startswith(table) for table in tables)


def assert_same_schema(django_db: str, reference_db: str) -> None:
    migrated = [o for o in dump_trigger_relay_objects(django_db) if not of_django_managed_tables(o)]
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
    """guarantees §1.1: the add-on applies the repository's own files (trigger_relay/sql links
    sql/)."""
    files = schema_files()
    assert [path.resolve() for path in files] == sorted(
        REPO_SQL_DIR.joinpath("schema").resolve().glob("*.sql")
    )
    assert files[0].name == "0001_outbox.sql"


def schema_migrations() -> dict[int, Any]:
    """The add-on's migrations by number."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return {
        int(name[:4]): migration
        for (app, name), migration in loader.disk_migrations.items()
        if app == "trigger_relay"
    }


def applied_sql(migration: Any) -> list[str]:
    """The SQL that a migration's database operations execute, in order."""
    return [
        operation.sql[0]
        for wrapper in migration.operations
        if isinstance(wrapper, SeparateDatabaseAndState)
        for operation in wrapper.database_operations
        if isinstance(operation, RunSQL)
    ]


def test_every_schema_file_is_frozen_in_the_migration_of_its_number() -> None:
    """guarantees §1.1: migration NNNN carries a copy of each sql/schema/NNNN_*.sql, equal to the
    file, and applies exactly those copies, in the files' order. A released file can
    therefore not be edited (its frozen copy would differ): changes go into a new file."""
    migrations = schema_migrations()
    versions = sorted({version_of(path) for path in schema_files()})
    for version in versions:
        migration = migrations.get(version)
        assert migration is not None, f"no trigger_relay migration {version:04d}_* for its files"
        module = sys.modules[type(migration).__module__]
        files = files_for_version(version)
        frozen: dict[str, str] = getattr(module, "SCHEMA_FILES", {})
        assert list(frozen) == [path.name for path in files], (
            f"{module.__name__}.SCHEMA_FILES must freeze exactly sql/schema/{version:04d}_*.sql"
        )
        for path in files:
            assert frozen[path.name] == path.read_text(encoding="utf-8"), (
                f"sql/schema/{path.name} differs from its copy in {module.__name__}: released "
                "schema files are never edited; put the change into a new NNNN_*.sql file "
                "and a new migration"
            )
        assert applied_sql(migration) == list(frozen.values())
    # And no migration carries SQL of its own beyond the files (a schema change the daemon
    # and psql would never see).
    for number, migration in migrations.items():
        if number not in versions:
            assert applied_sql(migration) == [], f"migration {number:04d} runs SQL of no file"


def test_migrations_never_read_the_schema_files(tmp_path: Path, monkeypatch: Any) -> None:
    """A migration applies what it was released with: loading it with other (edited,
    missing) schema files changes nothing."""
    released = {
        version: [path.read_text(encoding="utf-8") for path in files_for_version(version)]
        for version in sorted({version_of(path) for path in schema_files()})
    }
    edited = tmp_path / "schema"
    edited.mkdir()
    edited.joinpath("0001_outbox.sql").write_text("SELECT 'edited';\n", encoding="utf-8")
    monkeypatch.setattr(trigger_relay.schema, "SCHEMA_DIR", edited)
    migrations_dir = Path(trigger_relay.migrations.__file__).parent
    for version, texts in released.items():
        (path,) = migrations_dir.glob(f"{version:04d}_*.py")
        # A fresh module object, not the one in sys.modules: importing runs the module again.
        spec = importlib.util.spec_from_file_location(f"_frozen_check_{path.stem}", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert applied_sql(module.Migration("x", "trigger_relay")) == texts


@pytest.mark.django_db
def test_migrated_schema_equals_psql_applied_schema(psql_reference: str) -> None:
    """guarantees §1.1: `migrate` and `psql -f sql/schema/*.sql` give the same objects."""
    assert_same_schema(connection.settings_dict["NAME"], psql_reference)


@pytest.mark.django_db(transaction=True)
def test_migration_reverses_and_reapplies(psql_reference: str) -> None:
    """guarantees §1.1: unapplying drops what the SQL created; reapplying gives the same schema."""
    name = connection.settings_dict["NAME"]
    call_command("migrate", "trigger_relay", "zero", verbosity=0)
    try:
        assert dump_trigger_relay_objects(name) == []
    finally:
        call_command("migrate", "trigger_relay", verbosity=0)
    assert_same_schema(name, psql_reference)


@pytest.mark.django_db
def test_no_missing_migrations() -> None:
    """guarantees §2.1: the add-on, the example app and dj-triggers' models match their
    migrations."""
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_schema_3_leaves_existing_rows_without_a_firing_uuid() -> None:
    """guarantees §4.3: rows recorded before schema 3 keep firing_uuid NULL (a relay of the
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


def connect_to(dbname: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    db = settings.DATABASES["default"]
    return psycopg.connect(
        dbname=dbname, user=db["USER"], host=db["HOST"], port=db["PORT"], autocommit=autocommit
    )


@pytest.fixture
def scratch_databases() -> Iterator[Any]:
    """A factory of empty databases, all dropped afterwards."""
    names: list[str] = []

    def create() -> str:
        name = f"trigger_relay_scratch_{settings.RUN_ID}_{len(names)}"
        with connect_to("postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return name

    yield create
    with connect_to("postgres", autocommit=True) as admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def own_daemon_role(scratch_databases: Any) -> Iterator[str]:
    """A name for the daemon's role that no other test (or test run) on this server uses,
    so that the role can be created and dropped here. Dropped after the databases."""
    role = f"trigger_relay_daemon_test_{settings.RUN_ID}_{settings.DJT_SCHEMA}"
    with connect_to("postgres", autocommit=True) as admin:
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')
    yield role
    # scratch_databases' teardown runs after this one, so drop its databases first.
    with connect_to("postgres", autocommit=True) as admin:
        for (name,) in admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s",
            [f"trigger_relay_scratch_{settings.RUN_ID}_%"],
        ).fetchall():
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_parallel_test_databases_each_create_and_grant_the_role(
    scratch_databases: Any, own_daemon_role: str
) -> None:
    """guarantees §1.1: schema 1 applied to two new databases at once (pytest-xdist's test
    databases, parallel CI jobs on one server), where the daemon's role does not exist yet:
    both succeed and both grant the role, although only one may create it (the other's
    CREATE ROLE waits for the first transaction, then finds the name taken)."""
    (path,) = files_for_version(1)
    sql = path.read_text(encoding="utf-8").replace("trigger_relay_daemon", own_daemon_role)
    first_db, second_db = scratch_databases(), scratch_databases()
    errors: list[BaseException] = []
    with connect_to(first_db) as first, connect_to(second_db) as second:
        first.execute(sql)  # creates the role, not committed yet
        second_pid = second.info.backend_pid

        def apply_second() -> None:
            try:
                second.execute(sql)
                second.commit()
            except BaseException as error:  # reported by the main thread
                errors.append(error)

        thread = threading.Thread(target=apply_second)
        thread.start()
        with connect_to("postgres", autocommit=True) as observer:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                (waiting,) = observer.execute(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                    [second_pid],
                ).fetchone() or (False,)
                if waiting:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the second database's CREATE ROLE never waited for the first")
        first.commit()
        thread.join(20)
    assert not thread.is_alive()
    assert errors == []
    for dbname in (first_db, second_db):
        with connect_to(dbname) as conn:
            (granted,) = conn.execute(
                "SELECT has_table_privilege(%s, 'trigger_relay_outbox', 'SELECT, UPDATE, DELETE')",
                [own_daemon_role],
            ).fetchone()
        assert granted, dbname


def test_the_daemon_role_reaches_tables_in_a_schema_other_than_public(
    scratch_databases: Any,
) -> None:
    """guarantees §1.1: a site whose tables live in another schema (search_path) gets the role's
    USAGE on that schema too; without it every query of the daemon fails with
    "permission denied for schema"."""
    name = scratch_databases()
    with connect_to(name, autocommit=True) as owner:
        owner.execute("CREATE SCHEMA site")
    psql = ["psql", *server_args(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", name]
    for path in schema_files():
        subprocess.run(
            [*psql, "-f", str(path)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PGOPTIONS": "-c search_path=site"},
        )
    with connect_to(name) as conn:
        (tables_schema,) = conn.execute(
            "SELECT relnamespace::regnamespace::text FROM pg_class "
            "WHERE relname = 'trigger_relay_outbox'"
        ).fetchone()
        assert tables_schema == "site"
        # What the daemon does, with the daemon's privileges only.
        conn.execute("SET ROLE trigger_relay_daemon")
        conn.execute("SELECT max(version) FROM site.trigger_relay_schema_version")
        conn.execute("UPDATE site.trigger_relay_outbox SET attempts = attempts + 1")
        conn.execute("DELETE FROM site.trigger_relay_outbox WHERE false")
        conn.execute("SELECT id FROM site.trigger_relay_site")


@pytest.mark.django_db
def test_the_orm_leaves_columns_with_sql_defaults_to_the_database() -> None:
    """On every supported Django (db_default from 5.0, the DEFAULT keyword before): an
    insert through the models gets sql/schema/'s defaults, a firing_uuid above all (an
    explicit NULL would make the row look older than schema 3), and record_firing returns
    the row as stored (on Django 4.2 the ORM itself reads back only the id)."""
    from trigger_relay.firing.outbox import record_firing
    from trigger_relay.models import LedgerEntry
    from trigger_relay.models import OutboxRow

    event = SimpleNamespace(pk=7, trigger_id=8, delay=dt.timedelta(minutes=5))
    recorded = record_firing(event, 9, {"a": 1})  # type: ignore[arg-type]
    plain = OutboxRow.objects.create(event_id=1, trigger_id=2, user_pk="3", due_at=recorded.due_at)
    entry = LedgerEntry.objects.create(
        outbox_id=plain.pk, action_id=4, generation=0, idempotency_key="trigger-relay:x:4"
    )

    stored = OutboxRow.objects.get(pk=recorded.pk)
    for field in OutboxRow._meta.concrete_fields:
        assert getattr(recorded, field.attname) == getattr(stored, field.attname), field.name
    for row in (recorded, plain):
        stored = OutboxRow.objects.get(pk=row.pk)
        assert (stored.state, stored.attempts, stored.generation) == ("pending", 0, 0)
        assert isinstance(stored.firing_uuid, uuid.UUID)
        assert isinstance(stored.created_at, dt.datetime)
    assert OutboxRow.objects.get(pk=plain.pk).context == {}
    assert recorded.due_at - recorded.created_at == dt.timedelta(minutes=5)
    (performed_at,) = LedgerEntry.objects.filter(outbox_id=plain.pk).values_list(
        "performed_at", flat=True
    )
    assert isinstance(performed_at, dt.datetime)
    assert str(entry) == f"outbox row {plain.pk}, action 4"
