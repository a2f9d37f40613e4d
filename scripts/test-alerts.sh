#!/usr/bin/env bash
# Checks the Prometheus alerting rules and runs their unit tests with promtool (Debian's
# `prometheus` package, installed by scripts/install-debian-packages.sh): every alert of
# deploy/prometheus/alerts.yml has a firing and a not-firing case in alerts_test.yml.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool not found: install Debian's prometheus package" \
        "(run scripts/install-debian-packages.sh as root)" >&2
    exit 1
fi

promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml
