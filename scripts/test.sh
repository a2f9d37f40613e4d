#!/usr/bin/env bash
# The whole test suite: the daemon's tests (real PostgreSQL, Temporal dev servers, daemon
# processes) and the add-on's tests: on Django 5.2 with both dj-triggers schemas (PyPI 1.0.1
# and main), and on Django 4.2 LTS, the oldest Django the add-on supports, with dj-triggers
# 1.0.1 (what 1.0.1 and django-polymorphic 3.1 were built for; main's stand-in differs from
# 1.0.1 in the schema only, which 5.2 covers). Then what a site installs: both packages are
# built (scripts/build-wheels.sh) and the tests marked `installed` install them into fresh
# venvs, once (those venvs take requirements.lock's pins, whatever the leg).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
scripts/install-debian-packages.sh
scripts/bootstrap.sh

echo "== alerting rules (promtool check rules, promtool test rules)"
scripts/test-alerts.sh

echo "== the packages a site installs (scripts/build-wheels.sh)"
scripts/build-wheels.sh

echo "== daemon (cargo nextest)"
cargo nextest run --locked --no-fail-fast

echo "== add-on on dj-triggers 1.0.1, Django 5.2 (pytest)"
(cd django-trigger-relay && ../.venv/bin/python -m pytest -q -m "not installed")

echo "== add-on on dj-triggers main schema, Django 5.2 (pytest)"
(cd django-trigger-relay && DJT_SCHEMA=main ../.venv/bin/python -m pytest -q -m "not installed")

echo "== add-on on dj-triggers 1.0.1, Django 4.2 LTS (pytest)"
(cd django-trigger-relay && ../.venv-django42/bin/python -m pytest -q -m "not installed")

echo "== what a site installs: the built wheels in fresh venvs (pytest -m installed)"
(cd django-trigger-relay && ../.venv/bin/python -m pytest -q -m installed)
