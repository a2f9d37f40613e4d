#!/usr/bin/env bash
# Installs everything the demo and the tests need, from the project's own locks:
# the Python virtualenv (.venv) from requirements.lock, the add-on in editable mode, and the
# daemon (cargo build, Cargo.lock). Idempotent; fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    --no-deps --no-build-isolation -e django-trigger-relay
cargo build --locked --quiet
