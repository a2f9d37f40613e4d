#!/usr/bin/env bash
# Benchmark (guarantees §1.1): does the outbox's wake-up notification serialize the site's commits?
#
# pgbench runs the same transaction — one outbox INSERT, committed — from N concurrent
# clients against three copies of the schema, in one invocation:
#   baseline   no notification trigger at all
#   debounced  sql/schema as shipped (deferred trigger, advisory try-lock, once per commit)
#   naive      a plain `NOTIFY` in every inserting transaction
# and prints commits/s with each ratio to the baseline. A notifying transaction holds the
# notification queue lock through its commit's WAL flush, so with synchronous_commit on (the
# default, and what sites run) notifying commits queue behind each other; SYNC_COMMIT=off
# shows the trigger's own CPU cost instead.
#
# Usage: [SYNC_COMMIT=on|off] bench/notify_commit_throughput.sh [clients=16] [seconds=10]
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-16}
SECONDS_EACH=${2:-10}
PG="-h 127.0.0.1 -U postgres"
DB=trigger_relay_bench

psql $PG -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
trap 'psql $PG -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"' EXIT
for f in sql/schema/*.sql; do psql $PG -d $DB -q -v ON_ERROR_STOP=1 -f "$f" >/dev/null; done
psql $PG -d $DB -qc "ALTER DATABASE $DB SET synchronous_commit = ${SYNC_COMMIT:-on}"

script=$(mktemp)
cat >"$script" <<'SQL'
BEGIN;
INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, due_at) VALUES (1, 1, '1', now());
COMMIT;
SQL
naive=$(mktemp)
cat >"$naive" <<'SQL'
BEGIN;
INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, due_at) VALUES (1, 1, '1', now());
NOTIFY trigger_relay_outbox;
COMMIT;
SQL

# Keep a LISTEN session open for the whole run, as the relay would: without a listener
# PostgreSQL skips the queue work.
coproc LISTENER { psql $PG -d $DB -qc "LISTEN trigger_relay_outbox" -c "SELECT pg_sleep(3600)" >/dev/null 2>&1; }

run() {
    local label=$1 file=$2
    psql $PG -d $DB -qc "TRUNCATE trigger_relay_outbox CASCADE" >/dev/null
    pgbench $PG -n -c "$CLIENTS" -j 2 -T "$SECONDS_EACH" -f "$file" "$DB" 2>/dev/null \
        | awk -v l="$label" '/^tps/ {printf "%s %s\n", l, $3}'
}

psql $PG -d $DB -qc "ALTER TABLE trigger_relay_outbox DISABLE TRIGGER trigger_relay_outbox_notify"
base=$(run baseline "$script")
psql $PG -d $DB -qc "ALTER TABLE trigger_relay_outbox ENABLE TRIGGER trigger_relay_outbox_notify"
deb=$(run debounced "$script")
psql $PG -d $DB -qc "ALTER TABLE trigger_relay_outbox DISABLE TRIGGER trigger_relay_outbox_notify"
nai=$(run naive "$naive")
kill "$LISTENER_PID" 2>/dev/null || true
rm -f "$script" "$naive"

b=$(echo "$base" | awk '{print $2}')
printf '%-10s %12s %8s   (%s clients, %ss each, pgbench)\n' mode "commits/s" ratio "$CLIENTS" "$SECONDS_EACH"
for line in "$base" "$deb" "$nai"; do
    echo "$line" | awk -v b="$b" '{printf "%-10s %12.0f %8.2f\n", $1, $2, $2 / b}'
done
