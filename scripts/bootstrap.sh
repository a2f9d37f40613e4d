#!/usr/bin/env bash
# Installs everything the demo and the tests need, from the project's own locks:
# the Python virtualenv (.venv) from requirements.lock, the add-on in editable mode (the demo
# and most tests read the checkout; the tests marked `installed` install the built wheels
# into venvs of their own), the packaging tools of requirements-build.lock, the type checker
# of requirements-lint.lock (.venv only: its django-stubs describe Django 5.2), and the daemon
# (cargo build, Cargo.lock); and .venv-django42 from requirements-django42.lock, in which the
# tests run the add-on's suite on Django 4.2 LTS too. Idempotent; fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# The two locks pin the same packages at the same versions, Django apart: a bump made in
# one file only would test the add-on on 4.2 with other dependencies than on 5.2.
requirements_but_django() { grep -Ev '^(#|$|Django==)' "$1"; }
if ! diff -u --label requirements.lock --label requirements-django42.lock \
    <(requirements_but_django requirements.lock) \
    <(requirements_but_django requirements-django42.lock) >&2; then
    echo "bootstrap: requirements-django42.lock must pin what requirements.lock pins," \
        "Django apart (differences above); change both files together." >&2
    exit 1
fi

install_venv() { # <venv> <lock>
    if [ ! -x "$1/bin/python" ]; then
        python3 -m venv "$1"
    fi
    # A virtualenv that git ignores wherever it is (as Python 3.13's venv writes it).
    [ -f "$1/.gitignore" ] || printf '*\n' >"$1/.gitignore"
    "$1/bin/python" -m pip install --quiet --disable-pip-version-check -r "$2"
    "$1/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-deps --no-build-isolation -e django-trigger-relay
}
install_venv .venv requirements.lock
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-build.lock
# The type checker of `make lint`, with requirements.lock in the same run: pip refuses a pin of
# a package they share (pathspec, typing_extensions) that differs between the two.
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -r requirements.lock -r requirements-lint.lock
install_venv .venv-django42 requirements-django42.lock
cargo build --locked --quiet
