"""What a site installs, tried as a new site would: a fresh virtualenv with nothing but the
built wheels (``scripts/build-wheels.sh``) and the pins of requirements.lock, installed
without an editable checkout, and then, from that venv only, the example site migrated, one
Temporal-routed and one Celery-routed trigger fired, and both performed: the Temporal one by
the installed ``trigger-relay run`` and ``manage.py trigger_relay_worker``, the Celery one by
a Celery worker.

The pytest process only watches: the database through its own connection, the daemon's
``/metrics``. Every command of the site runs in the venv's environment (no PYTHONPATH, no
setting of the test process).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from tasks.management.commands import seed_demo
from tests_support.harness import EXAMPLE_DIR
from tests_support.harness import HarnessError
from tests_support.harness import Service
from tests_support.harness import TemporalServer
from tests_support.harness import wait_until
from tests_support.processes import free_port
from tests_support.site_venv import SiteVenv
from tests_support.site_venv import Wheelhouse
from tests_support.site_venv import run

from trigger_relay.schema import schema_files
from trigger_relay.schema import version_of

pytestmark = [pytest.mark.e2e, pytest.mark.installed]

#: A Redis database of its own (the add-on's tests use 11, the bench 12).
BROKER_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, package_index: Path) -> SiteVenv:
    """A site's venv: what a site on Celery has, then the add-on with its daemon extra, as
    the README says (``pip install "django-trigger-relay[daemon]"``)."""
    from tests_support.site_venv import SITE_REQUIREMENTS

    venv = SiteVenv.create(tmp_path_factory.mktemp("site") / "venv", package_index)
    venv.pip_install(*SITE_REQUIREMENTS)
    venv.pip_install("django-trigger-relay[daemon]")
    return venv


@dataclass
class Site:
    venv: SiteVenv
    database_url: str
    workdir: Path

    def environment(self, **variables: str) -> dict[str, str]:
        return self.venv.environment(
            DATABASE_URL=self.database_url, CELERY_BROKER_URL=BROKER_URL, **variables
        )

    def manage(self, *args: str) -> str:
        return run(
            [self.venv.python, EXAMPLE_DIR / "manage.py", *args],
            cwd=EXAMPLE_DIR,
            env=self.environment(),
        )

    def service(self, name: str, args: list[str | Path], **variables: str) -> Service:
        return Service(
            name=name,
            args=[str(arg) for arg in args],
            log=self.workdir / f"{name}.log",
            cwd=EXAMPLE_DIR,
            env=self.environment(**variables),
            inherit_env=False,
        )

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            return connection.execute(sql).fetchall()  # type: ignore[arg-type]


@pytest.fixture
def example_site(site: SiteVenv, tmp_path: Path) -> Iterator[Site]:
    """The example site on a database of its own, and a Redis database of its own."""
    name = f"trigger_relay_installed_{tmp_path.name[-12:].lower()}".replace("-", "_")
    admin = "postgres://postgres@127.0.0.1:5432/postgres"
    broker = redis.Redis.from_url(BROKER_URL)
    broker.flushdb()
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
        connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    try:
        yield Site(site, f"postgres://postgres@127.0.0.1:5432/{name}", tmp_path)
    finally:
        broker.flushdb()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def test_the_installed_packages_are_the_wheels(site: SiteVenv, wheels: Wheelhouse) -> None:
    """The add-on is imported from site-packages, at the wheels' version, and the daemon's
    binary is the wheel's, on the venv's PATH, saying the same version."""
    report = json.loads(
        run(
            [
                site.python,
                "-c",
                "import importlib.metadata as m, json, trigger_relay; print(json.dumps("
                "[trigger_relay.__file__, m.version('django-trigger-relay'),"
                " m.version('trigger-relay')]))",
            ],
            env=site.environment(),
            cwd=site.root,
        )
    )
    module, addon_version, daemon_version = report
    assert Path(module).is_relative_to(site.root / "lib"), module
    assert addon_version == daemon_version == wheels.version
    assert (
        run([site.bin("trigger-relay"), "--version"], env=site.environment()).strip()
        == f"trigger-relay {wheels.version}"
    )


def test_a_firing_on_each_route_is_performed_from_the_installed_packages(
    example_site: Site, wheels: Wheelhouse
) -> None:
    site = example_site
    site.manage("migrate", "--verbosity", "0")
    site.manage("check", "--database", "default", "--fail-level", "ERROR")
    site.manage("seed_demo", "--delay", "2")

    temporal = TemporalServer.create(site.workdir)
    metrics = f"127.0.0.1:{free_port()}"
    daemon = site.service(
        "trigger-relay",
        [site.venv.bin("trigger-relay"), "run"],
        TRIGGER_RELAY_DATABASE_URL=site.database_url,
        TRIGGER_RELAY_TEMPORAL_ADDRESS=f"http://{temporal.address}",
        TRIGGER_RELAY_METRICS_ADDR=metrics,
        TRIGGER_RELAY_WORKFLOW_ID_PREFIX=f"installed-{site.workdir.name}",
        TRIGGER_RELAY_POLL_INTERVAL="1s",
        TRIGGER_RELAY_LOG_FORMAT="text",
    )
    worker = site.service(
        "trigger_relay_worker",
        [site.venv.python, EXAMPLE_DIR / "manage.py", "trigger_relay_worker"],
        TRIGGER_RELAY_TEMPORAL_ADDRESS=f"http://{temporal.address}",
        TRIGGER_RELAY_WORKER_SHUTDOWN_SECONDS="5",
    )
    celery = site.service(
        "celery",
        [site.venv.bin("celery"), "-A", "example_site", "worker", "--pool=solo", "-l", "info"],
    )
    services = [temporal, daemon, worker, celery]
    try:
        temporal.start()
        temporal.wait_ready()
        for service in services[1:]:
            service.start()
        wait_until(
            lambda: _get(f"http://{metrics}/readyz")[0] == 200,
            timeout=90,
            what="the installed daemon's /readyz",
            services=services,
        )

        fired = site.manage("fire_demo")
        assert "Outbox rows written: 5" in fired, fired

        def finished() -> bool:
            states = site.query(
                "SELECT t.name, o.state FROM trigger_relay_outbox o "
                "JOIN triggers_trigger t ON t.id = o.trigger_id ORDER BY o.id"
            )
            return all(state in {"done", "skipped", "failed"} for _, state in states) and len(
                site.query(
                    f"SELECT 1 FROM tasks_sentemail WHERE trigger_name = '{seed_demo.CELERY_NOTE}'"
                )
            ) == len(seed_demo.DEMO_TASKS)

        wait_until(finished, timeout=120, what="every firing performed", services=services)
        states = site.query(
            "SELECT t.name, o.state, o.last_error FROM trigger_relay_outbox o "
            "JOIN triggers_trigger t ON t.id = o.trigger_id ORDER BY o.id"
        )
        by_trigger = {name: [s for n, s, _ in states if n == name] for name, _, _ in states}
        assert by_trigger[seed_demo.IMPORTANT_ONCE] == ["done"], states
        assert by_trigger[seed_demo.DELAYED_NOTE] == ["done"] * 3, states
        # The reminder's condition (an open task) is read when it is performed.
        assert by_trigger[seed_demo.DAILY_REMINDER] in (["done"], ["skipped"]), states
        sent = site.query("SELECT trigger_name, subject FROM tasks_sentemail ORDER BY id")
        assert (seed_demo.IMPORTANT_ONCE, "Well done, demo!") in sent, sent
        assert len([row for row in sent if row[0] == seed_demo.CELERY_NOTE]) == 3, sent

        status, body = _get(f"http://{metrics}/metrics")
        assert status == 200
        schema = max(version_of(path) for path in schema_files())
        build_info = f'schema_version="{schema}",version="{wheels.version}"'
        assert f"trigger_relay_build_info{{{build_info}}} 1" in body, body
        outbox = json.loads(
            run(
                [site.venv.bin("trigger-relay"), "status", "--json"],
                env=site.environment(TRIGGER_RELAY_DATABASE_URL=site.database_url),
            )
        )
        assert sum(state["rows"] for state in outbox["states"]) == 5, outbox
    except HarnessError:
        raise
    except AssertionError as error:
        logs = "\n".join(service.tail() for service in services)
        raise AssertionError(f"{error}\n{logs}") from error
    finally:
        for service in reversed(services):
            service.terminate()


def _get(url: str) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), ""
    except OSError:
        time.sleep(0.1)
        return None, ""
