"""Fixtures of the add-on's tests.

Real services only: PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth) and Redis at
127.0.0.1:6379. The test database has a unique name per run (see test_settings.py).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The example site's Celery app must exist before dj-triggers' shared task is used, so that
# Celery-routed firings go to the test broker and queue, not to Celery's defaults.
import example_site  # noqa: F401  (after the settings: DJANGO_SETTINGS_MODULE is set)
import pytest


def pytest_report_header(config: pytest.Config) -> list[str]:
    import triggers
    from django.conf import settings

    return [
        f"dj-triggers schema: {settings.DJT_SCHEMA} ({triggers.__file__})",
        f"test database: test_{settings.DATABASES['default']['NAME']}",
        f"celery: {settings.CELERY_BROKER_URL} queue {settings.CELERY_TASK_DEFAULT_QUEUE}",
    ]


# -- a Temporal dev server only in tests marked e2e --------------------------------------------
# `make test-fast` leaves the e2e tests out (CONTRIBUTING.md, "The loops"); a test that starts
# a dev server without the mark would make that loop slow, or fail where no server can start.
# Every way a test starts one goes through subprocess.Popen, fixtures of any scope included,
# so the guard sits there and knows which test is running.

_running: list[pytest.Item] = []
_popen_init = subprocess.Popen.__init__


def starts_a_dev_server(args: Any) -> bool:
    """``temporal server start-dev ...``, as a list of words or one command line."""
    if isinstance(args, bytes):
        args = args.decode(errors="replace")
    words = args.split() if isinstance(args, str) else [str(word) for word in args]
    return "start-dev" in words


def _guarded_popen_init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
    if _running and starts_a_dev_server(args):
        item = _running[-1]
        if item.get_closest_marker("e2e") is None:
            raise RuntimeError(
                f"{item.nodeid} starts a Temporal dev server but is not marked "
                "@pytest.mark.e2e (make test-fast leaves e2e tests out; conftest.py)"
            )
    _popen_init(self, args, *rest, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    subprocess.Popen.__init__ = _guarded_popen_init  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.pop()


def _is_transactional(request: pytest.FixtureRequest) -> bool:
    marker = request.node.get_closest_marker("django_db")
    if marker is not None and (
        marker.kwargs.get("transaction") or (marker.args and marker.args[0])
    ):
        return True
    return "transactional_db" in request.fixturenames


@pytest.fixture(autouse=True)
def _truncate_outbox(request: pytest.FixtureRequest) -> Iterator[None]:
    """Empty the outbox after transactional tests.

    Django's flush between transactional tests skips unmanaged models' tables, and the
    outbox table is owned by sql/schema/, so rows would otherwise leak between tests.
    """
    yield
    if _is_transactional(request):
        from django.db import connection

        django_db_blocker = request.getfixturevalue("django_db_blocker")
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute("TRUNCATE trigger_relay_outbox CASCADE")


@pytest.fixture(scope="module")
def route_everything_to_temporal() -> Iterator[None]:
    """Every trigger on Temporal, for a whole module (``pytest.mark.usefixtures``): the module
    of a harness (tests_support/harness.py) whose firings must reach its daemon."""
    from django.test import override_settings

    with override_settings(TRIGGER_RELAY_DEFAULT_ROUTE="temporal", TRIGGER_RELAY_ROUTES={}):
        yield


@pytest.fixture
def celery_queue() -> Iterator[Any]:
    """The test run's own Celery queue in Redis, emptied before and after the test."""
    from tests_support.broker import CeleryQueue

    queue = CeleryQueue.from_settings()
    queue.purge()
    yield queue
    queue.purge()


@pytest.fixture
def user(db: None) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create(username="ada", email="ada@example.com")


@pytest.fixture
def tx_user(transactional_db: None) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create(username="grace", email="grace@example.com")


@pytest.fixture(scope="session", autouse=True)
def _remove_celery_queue_keys() -> Iterator[None]:
    """Leave nothing of this run's queue in Redis."""
    yield
    from tests_support.broker import CeleryQueue

    CeleryQueue.from_settings().purge()


@pytest.fixture(scope="session")
def wheels() -> Any:
    """The built wheels of both packages (scripts/build-wheels.sh)."""
    from tests_support.site_venv import wheelhouse

    return wheelhouse()


@pytest.fixture(scope="session")
def package_index(tmp_path_factory: pytest.TempPathFactory, wheels: Any) -> Path:
    """A local package index with the built wheels and the lock's pins (site_venv.py)."""
    from tests_support.site_venv import package_index

    return package_index(tmp_path_factory.mktemp("index"), wheels)
