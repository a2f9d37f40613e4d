"""Settings of the add-on's tests: the example site's ``tasks`` app on a throwaway database.

Environment:
- ``DJT_SCHEMA``: ``pypi`` (default, the installed dj-triggers 1.0.1) or ``main`` (the
  stand-in for dj-triggers' main branch in ``djtriggers_main/``, put first on sys.path).
- ``TRIGGER_RELAY_TEST_DB``: base name of the database; pytest-django creates and drops
  ``test_<name>``. Unique per run by default.
- ``TRIGGER_RELAY_TEST_DB_NAME``: connect to this existing database as is (set for the
  Celery worker that the tests start, so that it uses the test database).
- ``TRIGGER_RELAY_TEST_REDIS_URL`` / ``TRIGGER_RELAY_TEST_CELERY_QUEUE``: Celery broker and
  queue, unique per run by default.

Values chosen here are exported to the environment, so that subprocesses started by the
tests (the Celery worker) agree with the test process.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
RUN_ID = os.environ.setdefault("TRIGGER_RELAY_TEST_RUN_ID", uuid.uuid4().hex[:10])

DJT_SCHEMA = os.environ.get("DJT_SCHEMA", "pypi")
if DJT_SCHEMA == "main":
    if "triggers" in sys.modules:
        raise RuntimeError("DJT_SCHEMA=main: dj-triggers was imported before the settings")
    sys.path.insert(0, str(TESTS_DIR / "djtriggers_main"))
elif DJT_SCHEMA != "pypi":
    raise RuntimeError(f"DJT_SCHEMA must be 'pypi' or 'main', not {DJT_SCHEMA!r}")

SECRET_KEY = "trigger-relay-tests"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "polymorphic",
    "triggers",
    "trigger_relay",
    "tasks",
    # Test-only conditions and actions of the end-to-end workflow tests.
    "relay_e2e",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "example_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_DB_BASE_NAME = os.environ.setdefault(
    "TRIGGER_RELAY_TEST_DB", f"trigger_relay_{DJT_SCHEMA}_{RUN_ID}"
)
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("TRIGGER_RELAY_TEST_DB_NAME", _DB_BASE_NAME),
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
    },
    # Never migrated: only for the check that the outbox database is PostgreSQL.
    "sqlite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
DEFAULT_FROM_EMAIL = "triggers@example.com"

CELERY_BROKER_URL = os.environ.setdefault(
    "TRIGGER_RELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/11"
)
CELERY_TASK_DEFAULT_QUEUE = os.environ.setdefault(
    "TRIGGER_RELAY_TEST_CELERY_QUEUE", f"trigger-relay-test-{RUN_ID}"
)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_ENABLE_REMOTE_CONTROL = False  # no pidbox keys left in Redis
# Publishing fails fast instead of retrying for minutes if Redis is down.
CELERY_BROKER_CONNECTION_TIMEOUT = 5
CELERY_TASK_PUBLISH_RETRY = False

TRIGGER_RELAY_DEFAULT_ROUTE = "celery"
TRIGGER_RELAY_ROUTES: dict[str | int, str] = {}
