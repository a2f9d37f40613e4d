"""docs/migration.md, executed: every command of the guide's shell blocks runs here, in the
guide's order, so the guide cannot drift from the product.

The site starts on Celery, in a virtualenv of its own that has what such a site has
(Django, dj-triggers, Celery; tests_support/site_venv.py) and no add-on: the example site's
triggers, all routed to Celery by default, with delayed firings waiting in the run's own
Redis queue (as in a broker before a worker takes them). The guide's ``pip install`` installs
the built wheels into that venv from a local package index, and every later command runs
from the venv: ``python manage.py`` with its python, ``trigger-relay`` with the binary the
daemon's wheel put on its PATH. The daemon and the Python worker of step 2 (``trigger-relay
run``, ``manage.py trigger_relay_worker``) are started as services, beside the test's
Temporal dev server. Between steps the test fires triggers (in the test process) and checks
what the guide says the step does.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db import transaction
from tests_support.broker import CeleryQueue
from tests_support.factories import make_trigger
from tests_support.harness import EXAMPLE_DIR
from tests_support.harness import REPO_ROOT
from tests_support.harness import TESTS_DIR
from tests_support.harness import Harness
from tests_support.harness import database_url
from tests_support.harness import wait_until
from tests_support.site_venv import SITE_REQUIREMENTS
from tests_support.site_venv import SiteVenv

from trigger_relay.models import OutboxRow

pytestmark = [pytest.mark.e2e, pytest.mark.installed, pytest.mark.django_db(transaction=True)]

GUIDE = REPO_ROOT / "docs" / "migration.md"
SHELL_BLOCK = re.compile(r"```shell\n(.*?)```", re.DOTALL)


@dataclass
class Step:
    number: int
    title: str
    commands: list[str]


def guide_steps() -> list[Step]:
    """The guide's numbered sections (``## N. Title``) and the commands of their shell
    blocks, comments stripped, in order."""
    steps = []
    for section in re.split(r"^## ", GUIDE.read_text(), flags=re.MULTILINE)[1:]:
        title, _, body = section.partition("\n")
        number, _, name = title.partition(". ")
        commands = [
            line.split("  #")[0].strip()
            for block in SHELL_BLOCK.findall(body)
            for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
        steps.append(Step(int(number), name, commands))
    return steps


@pytest.fixture
def site(tmp_path: Any, package_index: Any) -> SiteVenv:
    """The site's venv before the guide: what a site on dj-triggers and Celery has."""
    venv = SiteVenv.create(tmp_path / "site-venv", package_index)
    venv.pip_install(*SITE_REQUIREMENTS)
    return venv


@pytest.fixture
def services(tmp_path: Any, transactional_db: None, site: SiteVenv) -> Iterator[Harness]:
    """The test's Temporal dev server, and the daemon and the Python worker as the guide's
    step 2 starts them: from the site's venv (the binary exists once step 1 installed it)."""
    harness = Harness(tmp_path, run_id=str(settings.RUN_ID))
    harness.daemon.args[0] = str(site.bin("trigger-relay"))
    harness.worker.args[0] = str(site.python)
    try:
        harness.start_temporal()
        yield harness
    finally:
        harness.stop()


def test_the_guide_runs_in_order(
    services: Harness, site: SiteVenv, celery_queue: CeleryQueue, tx_user: Any
) -> None:
    steps = guide_steps()
    assert [step.number for step in steps] == list(range(1, 9)), [s.title for s in steps]
    welcome = make_trigger("Welcome")
    reminder = make_trigger("Reminder", delay=dt.timedelta(days=3))
    users = [tx_user, get_user_model().objects.create(username="lin", email="lin@example.com")]

    def fire(event: Any) -> None:
        with transaction.atomic():
            for user in users:
                event.fire_single(user.pk, task_id=user.pk, task_title="t", task_important=False)

    # The site on Celery: firings wait in the broker (a delayed one for days).
    fire(reminder)
    fire(welcome)
    assert len(celery_queue.tasks()) == 4
    assert not OutboxRow.objects.exists()

    ran: list[str] = []
    for step in steps:
        env: dict[str, str] = {}
        if step.number == 8:
            env["TRIGGER_RELAY_CELERY_FREE"] = "1"  # the guide's setting, as the environment
        for command in step.commands:
            ran.append(command)
            output = _run(command, services, site, env)
            _after_command(step.number, command, output)
        _after_step(step.number, services, fire, welcome, reminder, celery_queue)

    # Every command of the guide ran.
    every = [command for step in steps for command in step.commands]
    assert ran == every


def _run(command: str, services: Harness, site: SiteVenv, env: dict[str, str]) -> str:
    words = shlex.split(command)
    if words[:2] == ["pip", "install"]:
        return site.pip_install(*words[2:])
    if words == ["trigger-relay", "run"]:
        services.start_daemon()
        return ""
    if words == ["python", "manage.py", "trigger_relay_worker"]:
        services.start_worker()
        return ""
    if words[:2] == ["python", "manage.py"]:
        argv = [str(site.python), str(EXAMPLE_DIR / "manage.py"), *words[2:]]
    elif words[0] == "trigger-relay":
        argv = [str(site.bin("trigger-relay")), *words[1:]]
    else:
        raise AssertionError(f"the guide has a command this test cannot run: {command}")
    result = subprocess.run(
        argv,
        cwd=TESTS_DIR,
        env={
            **site.environment(),
            # The test settings' choices (database, broker queue), as the test process has
            # them, for the site's commands to agree with it.
            **{
                name: value
                for name, value in os.environ.items()
                if name.startswith("TRIGGER_RELAY_TEST_")
            },
            "DJANGO_SETTINGS_MODULE": "test_settings",
            "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(EXAMPLE_DIR)]),
            "TRIGGER_RELAY_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
            "TRIGGER_RELAY_DATABASE_URL": database_url(),
            "TRIGGER_RELAY_TEMPORAL_ADDRESS": f"http://{services.temporal.address}",
            "TRIGGER_RELAY_LOG_FORMAT": "text",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{command}\n{output}"
    return output


def _after_command(number: int, command: str, output: str) -> None:
    if command.endswith("trigger_relay_route") and number == 3:
        # The listing, before the flip: Welcome on Celery by default.
        assert re.search(r"celery\s+default\s+Welcome", output), output
    if number == 7:
        assert output.rstrip().endswith(
            "Celery holds nothing for dj-triggers: it can be stopped."
        ), output
    if number == 8:
        assert "W002" not in output, output


def _after_step(
    number: int,
    services: Harness,
    fire: Any,
    welcome: Any,
    reminder: Any,
    queue: CeleryQueue,
) -> None:
    if number == 3:
        # The next firing of the moved trigger is an outbox row; earlier ones stay in Celery.
        before = len(queue.tasks())
        fire(welcome)
        assert len(queue.tasks()) == before
        rows = list(OutboxRow.objects.filter(trigger_id=welcome.trigger_id))
        assert len(rows) == 2
        wait_until(
            lambda: all(
                row.state == "done"
                for row in OutboxRow.objects.filter(trigger_id=welcome.trigger_id)
            ),
            timeout=120,
            what="the moved trigger's firings done",
            services=services.services,
        )
    if number == 5:
        # Welcome's two firings that waited in Celery are adopted (Reminder is not moved yet).
        adopted = OutboxRow.objects.filter(trigger_id=welcome.trigger_id).count()
        assert adopted == 4
    if number == 6:
        # Reminder's firings, due in three days, wait in Temporal now; nothing new to Celery.
        waiting = OutboxRow.objects.filter(trigger_id=reminder.trigger_id)
        assert waiting.count() == 2
        assert {row.due_at.date() for row in waiting} != {dt.date.today()}
        before = len(queue.tasks())
        fire(reminder)
        assert len(queue.tasks()) == before


def test_the_readmes_install_as_the_guide_does() -> None:
    """The install commands of README.md ("Adding it to a Django site") and of the add-on's
    README ("Install") are the guide's, which the test above runs."""

    def pip_commands(text: str) -> list[str]:
        return [
            line.split("  #")[0].strip()
            for block in SHELL_BLOCK.findall(text)
            for line in block.splitlines()
            if line.startswith("pip install")
        ]

    def section(path: Any, heading: str) -> str:
        return path.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]

    guide = [c for step in guide_steps() for c in step.commands if c.startswith("pip install")]
    assert guide == ['pip install "django-trigger-relay[daemon]"']
    assert pip_commands(section(REPO_ROOT / "README.md", "Adding it to a Django site")) == guide
    addon_readme = REPO_ROOT / "django-trigger-relay" / "README.md"
    assert pip_commands(section(addon_readme, "Install")) == guide
