"""Settings of the browser test: the add-on's test settings (test_settings.py, the example
site's ``tasks`` app on a throwaway database) as the example site serves its admin.

- ``django.contrib.staticfiles``: the admin's CSS and JavaScript (django-polymorphic's inline
  menus need it), served by pytest-django's live server;
- without the test-only ``relay_e2e`` app: the admin offers the example site's event,
  condition and action types and dj-triggers' own, as on the site;
- ``TRIGGER_RELAY_BROWSER_MAIL_DIR``: when set (for the Python worker the test starts), mail
  is written there as files (Django's file-based backend), where the test reads it.
"""

from __future__ import annotations

import os

from test_settings import *  # noqa: F403
from test_settings import INSTALLED_APPS

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "relay_e2e"]
INSTALLED_APPS.insert(INSTALLED_APPS.index("polymorphic"), "django.contrib.staticfiles")

STATIC_URL = "static/"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

if os.environ.get("TRIGGER_RELAY_BROWSER_MAIL_DIR"):
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = os.environ["TRIGGER_RELAY_BROWSER_MAIL_DIR"]
