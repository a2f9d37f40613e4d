#!/usr/bin/env bash
# The whole product on this machine: the example Django site (admin on :8000), a Temporal
# dev server (UI on :8233), the trigger-relay daemon (relay + workflow worker, /metrics on
# :9187) and the Python activity worker (/metrics on :9465, or a free port); it seeds example triggers, fires them, waits for
# every firing to finish and prints the emails they sent.
#
# Stays up until Ctrl-C when run from a terminal; DEMO_EXIT=1 (or no terminal) stops after
# printing. Logs and the dev server's SQLite file are in .run/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUN=$ROOT/.run
mkdir -p "$RUN"

DB=${DEMO_DB:-trigger_relay_example}
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
export TRIGGER_RELAY_DATABASE_URL=$DATABASE_URL
export TRIGGER_RELAY_TEMPORAL_ADDRESS=http://127.0.0.1:7233
export TRIGGER_RELAY_METRICS_ADDR=127.0.0.1:9187
export TRIGGER_RELAY_LOG_FORMAT=text
PY=$ROOT/.venv/bin/python
RELAY=$ROOT/target/debug/trigger-relay
MANAGE=("$PY" "$ROOT/example/manage.py")

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

for port in 7233 8233 9187 8000; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is already in use (an earlier demo still running?); stop it first"
    fi
done

say "Installing (requirements.lock, Cargo.lock)"
scripts/services.sh
scripts/bootstrap.sh

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
    for _ in $(seq 1 120); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.5
    done
    die "$2 did not open port $1; see $3"
}

say "Database $DB: migrate and seed example triggers"
psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'" \
    | grep -q 1 || createdb -h 127.0.0.1 -U postgres "$DB"
"${MANAGE[@]}" migrate --verbosity 0
"${MANAGE[@]}" seed_demo
"${MANAGE[@]}" shell -c "
from django.contrib.auth import get_user_model
User = get_user_model()
if not User.objects.filter(username='admin').exists():
    User.objects.create_superuser('admin', 'admin@example.com', 'admin')
" 2>/dev/null

say "Starting the Temporal dev server (UI http://127.0.0.1:8233)"
# SQLite in WAL mode: about twice the starts/s of the default journal (measured: docs/performance.md).
# history.transferProcessorMaxPollRPS: at its default (20) the server's transfer queue held
# each workflow and activity task 30-40 ms before handing it to matching; 1000 removes that
# (docs/performance.md, "The 39 ms are the server's transfer queue, not the Python worker").
"$ROOT/.venv/bin/temporal" server start-dev --ip 127.0.0.1 --port 7233 --ui-port 8233 \
    --db-filename "$RUN/temporal.db" --sqlite-pragma journal_mode=wal \
    --sqlite-pragma synchronous=normal --log-level warn \
    --dynamic-config-value history.transferProcessorMaxPollRPS=1000 \
    --search-attribute TriggerRelayOutboxId=Int --search-attribute TriggerId=Int \
    --search-attribute TriggerName=Keyword --search-attribute EventId=Int \
    --search-attribute UserPk=Keyword >"$RUN/temporal.log" 2>&1 &
PIDS+=($!)
wait_port 7233 "the Temporal dev server" "$RUN/temporal.log"
# The flags above register the search attributes in a new database file only; a
# .run/temporal.db kept from an earlier demo gets them here (adding one that exists is a no-op).
for attempt in $(seq 1 20); do
    "$ROOT/.venv/bin/temporal" operator search-attribute create --address 127.0.0.1:7233 \
        --namespace default --name TriggerRelayOutboxId --type Int --name TriggerId --type Int \
        --name TriggerName --type Keyword --name EventId --type Int --name UserPk --type Keyword \
        >>"$RUN/temporal.log" 2>&1 && break
    [ "$attempt" = 20 ] && die "cannot register the search attributes; see $RUN/temporal.log"
    sleep 0.5
done

# The Python worker's metrics (TRIGGER_RELAY_WORKER_METRICS_ADDR): on 9465 when it is free,
# else on a port the system picks; "Look around" says which.
WORKER_METRICS_PORT=9465
if (exec 3<>"/dev/tcp/127.0.0.1/$WORKER_METRICS_PORT") 2>/dev/null; then
    WORKER_METRICS_PORT=$("$PY" -c \
        'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
WORKER_METRICS_ADDR=127.0.0.1:$WORKER_METRICS_PORT

say "Starting trigger-relay (relay + workflow worker), the Python worker and the site"
"$RELAY" run >"$RUN/trigger-relay.log" 2>&1 &
PIDS+=($!)
TRIGGER_RELAY_WORKER_METRICS_ADDR=$WORKER_METRICS_ADDR "${MANAGE[@]}" trigger_relay_worker \
    >"$RUN/worker.log" 2>&1 &
PIDS+=($!)
"${MANAGE[@]}" runserver 127.0.0.1:8000 --noreload >"$RUN/django.log" 2>&1 &
PIDS+=($!)
wait_port 9187 "trigger-relay" "$RUN/trigger-relay.log"
wait_port 8000 "the Django site" "$RUN/django.log"
wait_port "$WORKER_METRICS_PORT" "the Python worker's metrics" "$RUN/worker.log"

say "Firing example events"
"${MANAGE[@]}" fire_demo

say "Waiting for every firing to finish (one trigger has a 30 s delay: watch its timer in the Temporal UI)"
for _ in $(seq 1 120); do
    open=$("$RELAY" status --json | "$PY" -c \
        'import json,sys; d=json.load(sys.stdin); print(sum(s["rows"] for s in d["states"] if s["state"] in ("pending","dispatched")))')
    [ "$open" = "0" ] && break
    printf '  %s firing(s) still pending or waiting\n' "$open"
    sleep 5
done

say "Outbox"
"$RELAY" status

say "Emails sent by the actions (console backend; also in .run/worker.log)"
"${MANAGE[@]}" shell -c "
from tasks.models import SentEmail
for mail in SentEmail.objects.select_related('user'):
    print(f'--- to {mail.user.email} at {mail.sent_at:%H:%M:%S} by trigger {mail.trigger_name!r}')
    print(f'Subject: {mail.subject}')
    print(mail.body.rstrip())
" 2>/dev/null

say "Look around"
cat <<TXT
  Django admin (admin / admin):  http://127.0.0.1:8000/admin/
  Temporal UI:                   http://127.0.0.1:8233/namespaces/default/workflows
  A trigger's or a user's firings in the UI's search box (or temporal workflow list --query):
                                 TriggerName = 'Any task completed: delayed note'   or   UserPk = "1"
  Relay metrics:                 http://127.0.0.1:9187/metrics   (and /readyz, /healthz)
  Python worker metrics:         http://$WORKER_METRICS_ADDR/metrics   (slots, schedule-to-start, firings)
  Fire again:                    .venv/bin/python example/manage.py fire_demo
  Logs:                          .run/*.log
TXT

if [ -z "${DEMO_EXIT:-}" ] && [ -t 0 ]; then
    say "Running; Ctrl-C stops everything"
    wait
fi
