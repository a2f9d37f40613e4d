#!/usr/bin/env bash
# Installs the Debian packages the tests need beyond what the machine comes with:
#   pgbouncer  tests/pgbouncer.rs runs its own PgBouncer (transaction mode) in front of the
#              test database.
#   chromium, chromium-driver
#              browser_tests/ (`make test-browser`) drive the Django admin in Debian's
#              headless Chromium through /usr/bin/chromedriver (Selenium never fetches one).
# Idempotent: does nothing (and touches no package list) when everything is there; runs
# `apt-get update` only when something is missing. The tests start their own pgbouncer on a
# free port as the `postgres` user; the package's own service (port 6432) is stopped and
# kept from starting at boot so that it cannot get in the way.
set -euo pipefail

missing=()
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)

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
    if [ "$package" = pgbouncer ]; then
        # The package may have started its own instance (on machines with an init system);
        # the tests never use it.
        if [ -x /etc/init.d/pgbouncer ]; then
            /etc/init.d/pgbouncer stop >/dev/null 2>&1 || true
        fi
        if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
            systemctl disable --now pgbouncer >/dev/null 2>&1 || true
        fi
    fi
done
