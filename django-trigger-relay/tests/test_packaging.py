"""The add-on's wheel and sdist ship every file the add-on reads at run time.

What the code reads is found in the code itself: the only modules that open files next to
themselves are ``queries.py`` (``sql/queries/``, the statements of
``trigger_relay.queries.STATEMENTS``) and ``schema.py`` (``sql/schema/``), and every call of
``queries.statement`` names a listed statement. The artifacts are built here from the
checkout with pypa/build, as scripts/build-wheels.sh builds them (the wheel from the sdist),
so a file left out of either fails this test, not a site's first firing.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests_support.harness import REPO_ROOT

from trigger_relay import queries

pytestmark = pytest.mark.installed

ADDON_DIR = REPO_ROOT / "django-trigger-relay"
PACKAGE_DIR = ADDON_DIR / "src" / "trigger_relay"
#: The modules that read files of the package, and the folder each reads.
FILE_READERS = {"queries.py": "sql/queries", "schema.py": "sql/schema"}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        yield str(path.relative_to(PACKAGE_DIR)), ast.parse(path.read_text(), str(path))


def _statement_calls(tree: ast.Module) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == "statement":
                yield node


def _files_the_code_reads() -> set[str]:
    """Paths inside the package of every file the add-on reads at run time."""
    schema = {f"sql/schema/{path.name}" for path in (REPO_ROOT / "sql" / "schema").glob("*.sql")}
    statements = {f"sql/queries/{name}.sql" for name in queries.STATEMENTS}
    return schema | statements


@dataclass(frozen=True)
class Artifacts:
    wheel: Path
    sdist: Path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    out = tmp_path_factory.mktemp("addon-dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ADDON_DIR)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Artifacts(wheel, sdist)


def test_every_statement_the_code_runs_is_listed() -> None:
    """A new ``queries.statement("x")`` must be added to ``STATEMENTS``, the list that this
    test checks the artifacts against; a statement no longer run is taken off it."""
    named: set[str] = set()
    for module, tree in _modules():
        for call in _statement_calls(tree):
            argument = call.args[0] if call.args else None
            where = f"{module}:{call.lineno}"
            literal = "queries.statement() takes a literal name, so that its files can be listed"
            assert isinstance(argument, ast.Constant), f"{where}: {literal}"
            assert isinstance(argument.value, str), f"{where}: {literal}"
            named.add(argument.value)
    assert named == set(queries.STATEMENTS)


def test_only_the_sql_modules_read_files_of_the_package() -> None:
    readers = {
        module
        for module, tree in _modules()
        if any(isinstance(node, ast.Name) and node.id == "__file__" for node in ast.walk(tree))
    }
    assert readers == set(FILE_READERS), (
        "a module that reads a file next to itself needs its files listed here and shipped"
    )


def test_the_wheel_and_the_sdist_ship_every_file_the_code_reads(artifacts: Artifacts) -> None:
    wanted = _files_the_code_reads() | {"py.typed"}
    wanted |= {module for module, _ in _modules()}
    wheel = set(zipfile.ZipFile(artifacts.wheel).namelist())
    missing_from_wheel = {path for path in wanted if f"trigger_relay/{path}" not in wheel}
    sdist_root = artifacts.sdist.name.removesuffix(".tar.gz")
    with tarfile.open(artifacts.sdist) as archive:
        sdist = set(archive.getnames())
    missing_from_sdist = {
        path for path in wanted if f"{sdist_root}/src/trigger_relay/{path}" not in sdist
    }
    assert (missing_from_wheel, missing_from_sdist) == (set(), set())


def test_the_unpacked_wheel_reads_its_own_files(artifacts: Artifacts, tmp_path: Path) -> None:
    """Imported from the unpacked wheel (ahead of the checkout on sys.path), the add-on
    reads every listed statement and schema file from there."""
    zipfile.ZipFile(artifacts.wheel).extractall(tmp_path)
    script = (
        "import trigger_relay.queries as q, trigger_relay.schema as s\n"
        f"assert q.__file__.startswith({str(tmp_path)!r}), q.__file__\n"
        "for name in q.STATEMENTS:\n"
        "    assert q.statement(name).strip(), name\n"
        "print(len(s.schema_files()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(list((REPO_ROOT / "sql" / "schema").glob("*.sql")))
