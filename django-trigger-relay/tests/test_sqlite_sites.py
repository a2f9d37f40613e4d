"""A site whose tests run on SQLite (as dj-triggers' own do): ``migrate``, which
pytest-django runs to create the test database, stops at the add-on's first migration with
the add-on's own message (trigger_relay.E006), not a raw SQL syntax error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings

from trigger_relay.checks import database_problems
from trigger_relay.schema import not_postgresql
from trigger_relay.schema import schema_files
from trigger_relay.schema import version_of

TESTS_DIR = Path(__file__).resolve().parent

SQLITE_SITE_SETTINGS = """
SECRET_KEY = "sqlite-site"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "polymorphic",
    "triggers",
    "trigger_relay",
]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {name!r}}}}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
"""


def test_migrate_on_sqlite_fails_with_the_add_ons_message(tmp_path: Path) -> None:
    tmp_path.joinpath("sqlite_site_settings.py").write_text(
        SQLITE_SITE_SETTINGS.format(name=str(tmp_path / "site.sqlite3")), encoding="utf-8"
    )
    # The same dj-triggers as this test run (DJT_SCHEMA=main puts a stand-in first).
    path = [str(tmp_path)]
    if settings.DJT_SCHEMA == "main":
        path.append(str(TESTS_DIR / "djtriggers_main"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sqlite_site_settings",
        "PYTHONPATH": os.pathsep.join(path),
    }

    # pytest-django creates the test database with call_command("migrate"), which runs no
    # system checks (so trigger_relay.E006 as a check never shows): --skip-checks does the same.
    result = subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput", "--skip-checks"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode != 0, result.stdout
    # Other apps' migrations ran; the add-on's first one refused the database.
    assert "Applying auth.0001_initial... OK" in result.stdout
    assert result.stdout.rstrip().endswith("Applying trigger_relay.0001_initial...")
    message, hint = not_postgresql("default", "sqlite")
    last_line = result.stderr.strip().splitlines()[-1]
    assert "trigger_relay.E006" in last_line
    assert message in last_line
    assert hint in last_line
    assert "SQLite" in last_line  # where such a site reads how to test
    assert "syntax error" not in result.stderr
    assert "OperationalError" not in result.stderr


@pytest.mark.django_db
def test_migrated_on_postgresql() -> None:
    """The check that refuses other databases lets PostgreSQL through: the test database
    itself was migrated by the same operations."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT max(version) FROM trigger_relay_schema_version")
        assert cursor.fetchone() == (max(version_of(path) for path in schema_files()),)


class OutboxToSqlite:
    def db_for_write(self, model: type, **hints: object) -> str | None:
        return "sqlite" if model._meta.app_label == "trigger_relay" else None


def test_the_migration_and_the_system_check_say_the_same() -> None:
    """The system check (``manage.py check``) and the migration describe the problem alike."""
    with override_settings(DATABASE_ROUTERS=[f"{__name__}.OutboxToSqlite"]):
        (error,) = database_problems()

    assert error.id == "trigger_relay.E006"
    assert (error.msg, error.hint) == not_postgresql("sqlite", "sqlite")
