#!/usr/bin/env bash
# Records a representative set of trigger_workflow histories of this build (docs/versioning.md,
# step 3): the example site on its own database, a Temporal dev server, the daemon and the
# Python worker on free ports, firings that end done (with and without delay), skipped,
# failed, cancelled and replayed; then every history is saved as JSON.
#
# Usage: scripts/record-histories.sh <dir>     e.g. scripts/record-histories.sh tests/histories/v3
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:?usage: scripts/record-histories.sh <dir>}
WORK=$(mktemp -d)
DB=trigger_relay_histories
free_port() { "$ROOT/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TEMPORAL_PORT=$(free_port)
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
export TRIGGER_RELAY_DATABASE_URL=$DATABASE_URL
export TRIGGER_RELAY_TEMPORAL_ADDRESS=http://127.0.0.1:$TEMPORAL_PORT
export TRIGGER_RELAY_METRICS_ADDR=127.0.0.1:$(free_port)
export TRIGGER_RELAY_LOG_FORMAT=text
export TRIGGER_RELAY_PERFORM_MAX_ATTEMPTS=2
RELAY=$ROOT/target/debug/trigger-relay
MANAGE=("$ROOT/.venv/bin/python" "$ROOT/example/manage.py")

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
    rm -rf "$WORK"
}
trap cleanup EXIT

psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" \
    -c "CREATE DATABASE $DB"
"${MANAGE[@]}" migrate --verbosity 0
"$ROOT/.venv/bin/temporal" server start-dev --headless --ip 127.0.0.1 --port "$TEMPORAL_PORT" \
    --http-port "$(free_port)" --metrics-port "$(free_port)" --log-level error \
    --search-attribute TriggerRelayOutboxId=Int --search-attribute TriggerId=Int \
    --search-attribute TriggerName=Keyword --search-attribute EventId=Int \
    --search-attribute UserPk=Keyword >"$WORK/temporal.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 120); do (exec 3<>"/dev/tcp/127.0.0.1/$TEMPORAL_PORT") 2>/dev/null && break; sleep 0.5; done
"$RELAY" run >"$WORK/daemon.log" 2>&1 &
PIDS+=($!)
"${MANAGE[@]}" trigger_relay_worker >"$WORK/worker.log" 2>&1 &
PIDS+=($!)

# One trigger per outcome; each fires once for the same user. The `delayed` ones wait 4 s,
# during which `skipped` is disabled and `cancelled` is cancelled.
"${MANAGE[@]}" shell -c "
import datetime as dt
from django.contrib.auth import get_user_model
from triggers.models import Trigger
from tasks.models import SendEmailAction, Task, TaskCompletedEvent
from trigger_relay.firing.routes import set_routes
user = get_user_model().objects.create(username='histories', email='h@example.com')
for name, delay, subject in [
    ('done_no_delay', 0, 'Done: {{ task_title }}'),
    ('done_after_delay', 4, 'Later: {{ task_title }}'),
    ('skipped_trigger_disabled', 4, 'Never'),
    ('cancelled_during_delay', 60, 'Never'),
    # A subject of 280 characters: SentEmail's column takes 200 (DataError, not retried).
    ('failed_activity_error', 0, '{% for c in \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\" %}{{ task_title }}{% endfor %}'),
]:
    trigger = Trigger.objects.create(name=name, is_enabled=True)
    TaskCompletedEvent.objects.create(trigger=trigger, delay=dt.timedelta(seconds=delay))
    SendEmailAction.objects.create(trigger=trigger, subject=subject, body='b')
    set_routes([trigger.pk], 'temporal', changed_by='record-histories')
Task.objects.create(user=user, title='history').complete()
Trigger.objects.filter(name='skipped_trigger_disabled').update(is_enabled=False)
"
row_of() {
    psql -h 127.0.0.1 -U postgres -d "$DB" -tAc \
        "SELECT o.id FROM trigger_relay_outbox o JOIN triggers_trigger t ON t.id = o.trigger_id WHERE t.name = '$1'"
}
"$RELAY" cancel --id "$(row_of cancelled_during_delay)" >/dev/null
open_rows() { psql -h 127.0.0.1 -U postgres -d "$DB" -tAc "SELECT count(*) FROM trigger_relay_outbox WHERE state IN ('pending', 'dispatched')"; }
for _ in $(seq 1 120); do [ "$(open_rows)" = 0 ] && break; sleep 0.5; done
"$RELAY" replay --id "$(row_of done_no_delay)" >/dev/null
sleep 1
for _ in $(seq 1 120); do [ "$(open_rows)" = 0 ] && break; sleep 0.5; done
psql -h 127.0.0.1 -U postgres -d "$DB" -c \
    "SELECT o.id, t.name, o.state, o.skip_reason, o.generation, left(o.last_error, 60) AS error FROM trigger_relay_outbox o JOIN triggers_trigger t ON t.id = o.trigger_id ORDER BY o.id"

mkdir -p "$OUT"
"$RELAY" replay-histories --save-dir "$WORK/histories" >/dev/null
# Name each history after its trigger (and the replay after what it is).
for file in "$WORK"/histories/*.json; do
    id=$(basename "$file" .json | sed -E 's/^[a-z-]+-([0-9]+)-g([0-9]+).*/\1 \2/')
    set -- $id
    name=$(psql -h 127.0.0.1 -U postgres -d "$DB" -tAc \
        "SELECT t.name FROM trigger_relay_outbox o JOIN triggers_trigger t ON t.id = o.trigger_id WHERE o.id = $1")
    [ "$2" = 1 ] && name=replayed_nothing_to_perform
    cp "$file" "$OUT/$name.json"
done
ls -l "$OUT"
