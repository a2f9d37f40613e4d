"""Settings of the example site: dj-triggers with the trigger_relay add-on.

Environment: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/trigger_relay_example),
CELERY_BROKER_URL (default redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-site-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "polymorphic",
    "triggers",
    # After "triggers": takes over Event.fired from dj-triggers (check trigger_relay.E001).
    "trigger_relay",
    "tasks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

WSGI_APPLICATION = "example_site.wsgi.application"


def database_from_url(url: str) -> dict[str, object]:
    """A DATABASES entry from postgres://user:password@host:port/name."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ValueError(f"DATABASE_URL must be a postgres:// URL, not {parts.scheme}://")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


DATABASES = {
    "default": database_from_url(
        os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/trigger_relay_example")
    ),
}

# dj-triggers' migrations use BigAutoField but its AppConfig sets no default: without this,
# makemigrations would want a migration for "triggers".
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = "triggers@example.com"

# Celery (dj-triggers' original path, for triggers routed to "celery").
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]

# trigger_relay: which triggers go to Temporal (the outbox) and which stay on Celery.
# Keys are trigger names (str) or pks (int); unlisted triggers take the default.
TRIGGER_RELAY_ROUTES = {
    "Important task completed: congratulate once": "temporal",
    "Remind users with open tasks, at most daily": "temporal",
    "Any task completed: delayed note": "temporal",
    "Any task completed: Celery as before": "celery",
}
TRIGGER_RELAY_DEFAULT_ROUTE = "celery"
# The outbox admin and `manage.py trigger_relay_status` link each row to its workflow here.
TRIGGER_RELAY_TEMPORAL_UI_URL = os.environ.get(
    "TRIGGER_RELAY_TEMPORAL_UI_URL", "http://127.0.0.1:8233"
)
