"""One release number for the crate, the daemon's package and the add-on (README,
"Releasing"): a site that installs ``django-trigger-relay[daemon]`` gets the daemon of the
same release, whose schema version the add-on's migrations provide."""

from __future__ import annotations

import re

import tomllib
from tests_support.harness import REPO_ROOT


def _toml(path: str) -> dict[str, object]:
    return tomllib.loads((REPO_ROOT / path).read_text())


def test_the_crate_and_both_packages_have_one_version() -> None:
    crate = _toml("Cargo.toml")["package"]["version"]  # type: ignore[index]
    daemon = _toml("pyproject.toml")["project"]
    addon = _toml("django-trigger-relay/pyproject.toml")["project"]
    # maturin takes the daemon package's version from the crate.
    assert "version" in daemon["dynamic"]  # type: ignore[index,operator]
    assert "version" not in daemon
    assert addon["version"] == crate  # type: ignore[index]
    assert addon["optional-dependencies"]["daemon"] == [f"trigger-relay=={crate}"]  # type: ignore[index]


def test_the_changelog_has_a_section_for_the_version() -> None:
    crate = _toml("Cargo.toml")["package"]["version"]  # type: ignore[index]
    changelog = (REPO_ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\]", changelog, flags=re.MULTILINE)
    assert headings[:1] == ["Unreleased"], headings
    assert crate in headings, f"CHANGELOG.md has no section for {crate}: {headings}"
