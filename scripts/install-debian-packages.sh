#!/usr/bin/env bash
# Installs the Debian packages the tests need beyond what the machine comes with:
#   pgbouncer  tests/pgbouncer.rs runs its own PgBouncer (transaction mode) in front of the
#              test database.
#   chromium, chromium-driver
#              browser_tests/ (`make test-browser`) drive the Django admin in Debian's
#              headless Chromium through /usr/bin/chromedriver (Selenium never fetches one).
#   prometheus provides /usr/bin/promtool, which scripts/test-alerts.sh uses to check and
#              unit-test the alerting rules (deploy/prometheus/alerts.yml), and
#              /usr/bin/prometheus, which django-trigger-relay/tests/
#              test_dashboard_on_prometheus.py runs on a free port to evaluate the dashboard.
# Idempotent: does nothing (and touches no package list) when everything is there; runs
# `apt-get update` only when something is missing. The tests start their own pgbouncer on a
# free port as the `postgres` user; the package's own service (port 6432) is stopped and
# kept from starting at boot so that it cannot get in the way. The same goes for the
# Prometheus server the prometheus package may start (port 9090): the tests start their own.
set -euo pipefail

missing=()
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
{ [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; } || missing+=(prometheus)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]}; run this script as root (it uses apt-get)" >&2
    exit 1
fi

echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

for package in "${missing[@]}"; do
    if [ "$package" = pgbouncer ] || [ "$package" = prometheus ]; then
        # The package may have started its own instance (on machines with an init system);
        # the tests never use it.
        if [ -x "/etc/init.d/$package" ]; then
            "/etc/init.d/$package" stop >/dev/null 2>&1 || true
        fi
        if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
            systemctl disable --now "$package" >/dev/null 2>&1 || true
        fi
    fi
done
