#!/usr/bin/env bash
# The whole test suite: the daemon's tests (real PostgreSQL, Temporal dev servers, daemon
# processes) and the add-on's tests on both dj-triggers schemas (PyPI 1.0.1 and main).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
scripts/install-debian-packages.sh
scripts/bootstrap.sh

echo "== daemon (cargo nextest)"
cargo nextest run --locked --no-fail-fast

echo "== add-on on dj-triggers 1.0.1 (pytest)"
(cd django-trigger-relay && ../.venv/bin/python -m pytest -q)

echo "== add-on on dj-triggers main schema (pytest)"
(cd django-trigger-relay && DJT_SCHEMA=main ../.venv/bin/python -m pytest -q)
