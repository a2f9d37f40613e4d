"""Schema version 2: applies ``sql/schema/0002_*.sql`` verbatim (the action ledger,
guarantees §3.4), from the copy frozen below.

The ledger's key is (outbox_id, action_id): Django 5.2 maps it as a ``CompositePrimaryKey``,
older versions with ``idempotency_key`` standing in (see ``trigger_relay.models.LedgerEntry``).

Reversing drops the ledger and forgets schema version 2.
"""

from __future__ import annotations

import django.db.models.deletion
import django.db.models.functions.datetime
from django.db import migrations
from django.db import models

from trigger_relay.compat import HAS_COMPOSITE_PRIMARY_KEY
from trigger_relay.compat import database_default
from trigger_relay.schema import run_sql_operations

# Frozen copies of sql/schema/0002_*.sql, as released with this migration: applied
# verbatim, never edited (tests/test_schema.py checks that they equal the files, so the
# released files cannot change either; a schema change is a new file and migration).
SCHEMA_FILES: dict[str, str] = {
    "0002_action_ledger.sql": r"""-- trigger-relay outbox schema, version 2: the action ledger (guarantees §3.4).
--
-- One row per (outbox row, action) that completed. The Python worker inserts it in the same
-- transaction as the action's own database writes, under Activity.lock, so an action whose
-- transaction rolled back leaves no entry and one that committed is never performed again:
-- not by an activity retry, a worker crash, a duplicate start nor a replay by hand (the key
-- is the outbox row, not its generation).
CREATE TABLE trigger_relay_action_ledger (
    outbox_id       bigint      NOT NULL
        REFERENCES trigger_relay_outbox (id) ON DELETE CASCADE,
    action_id       bigint      NOT NULL,
    -- Generation of the outbox row whose workflow performed the action.
    generation      integer     NOT NULL,
    -- Stable key handed to the action in its context, for external systems' deduplication.
    idempotency_key text        NOT NULL,
    performed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (outbox_id, action_id)
);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'trigger_relay_daemon') THEN
        -- The daemon only reads the ledger (status); the site's role writes it.
        GRANT SELECT ON trigger_relay_action_ledger TO trigger_relay_daemon;
    END IF;
END;
$$;

INSERT INTO trigger_relay_schema_version (version) VALUES (2);
""",
}

REVERSE_SQL = """
DROP TABLE IF EXISTS trigger_relay_action_ledger;
DELETE FROM trigger_relay_schema_version WHERE version = 2;
"""


class Migration(migrations.Migration):
    dependencies = [("trigger_relay", "0001_initial")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=run_sql_operations(SCHEMA_FILES.values(), reverse_sql=REVERSE_SQL),
            state_operations=[
                migrations.CreateModel(
                    name="LedgerEntry",
                    fields=[
                        *(
                            [
                                (
                                    "pk",
                                    models.CompositePrimaryKey(
                                        "outbox_id",
                                        "action_id",
                                        blank=True,
                                        editable=False,
                                        primary_key=True,
                                        serialize=False,
                                    ),
                                )
                            ]
                            if HAS_COMPOSITE_PRIMARY_KEY
                            else []
                        ),
                        (
                            "outbox",
                            models.ForeignKey(
                                db_column="outbox_id",
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="ledger_entries",
                                to="trigger_relay.outboxrow",
                            ),
                        ),
                        ("action_id", models.BigIntegerField(verbose_name="action id")),
                        ("generation", models.IntegerField(verbose_name="generation")),
                        (
                            "idempotency_key",
                            models.TextField(
                                verbose_name="idempotency key",
                                **(
                                    {}
                                    if HAS_COMPOSITE_PRIMARY_KEY
                                    else {"primary_key": True, "serialize": False}
                                ),
                            ),
                        ),
                        (
                            "performed_at",
                            models.DateTimeField(
                                verbose_name="performed at",
                                **database_default(django.db.models.functions.datetime.Now()),
                            ),
                        ),
                    ],
                    options={
                        "verbose_name": "ledger entry",
                        "verbose_name_plural": "ledger entries",
                        "db_table": "trigger_relay_action_ledger",
                        "managed": False,
                    },
                ),
            ],
        ),
    ]
