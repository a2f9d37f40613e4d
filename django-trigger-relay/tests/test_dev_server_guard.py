"""A test that starts a Temporal dev server must be marked e2e (conftest.py): the guard
refuses the start in an unmarked test, before any process exists."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import starts_a_dev_server


def test_an_unmarked_test_cannot_start_a_dev_server() -> None:
    with pytest.raises(RuntimeError, match=r"test_an_unmarked_test.*not marked @pytest.mark.e2e"):
        subprocess.Popen(["temporal", "server", "start-dev", "--headless"])


def test_other_processes_start_as_usual() -> None:
    done = subprocess.run([sys.executable, "-c", "print('start-dev'[:5])"], check=True)
    assert done.returncode == 0


def test_the_guard_knows_a_dev_server_command() -> None:
    assert starts_a_dev_server(["/x/temporal", "server", "start-dev"])
    assert starts_a_dev_server("temporal server start-dev --port 1")
    assert not starts_a_dev_server(["temporal", "workflow", "list"])
