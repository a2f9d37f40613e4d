-- trigger-relay outbox schema, version 2: the action ledger (guarantees §3.4).
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
