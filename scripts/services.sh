#!/usr/bin/env bash
# Checks the machine's services the project needs (PostgreSQL, Redis) and starts any that is
# down with the command this kind of machine documents. Temporal is not a service: the demo
# and the tests start their own dev servers.
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! pg_up; then
    echo "PostgreSQL is down; starting it" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
if ! redis_up; then
    echo "Redis is down; starting it" >&2
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
for _ in $(seq 1 30); do
    if pg_up && redis_up; then
        exit 0
    fi
    sleep 1
done
pg_up || echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2
redis_up || echo "Redis did not come up on 127.0.0.1:6379" >&2
exit 1
