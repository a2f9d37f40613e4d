-- trigger-relay outbox schema, version 7: the site identity.
--
-- Two sites may share a Temporal namespace, and with the default task queue names their
-- workers would take each other's tasks and look the row up in the wrong database. The
-- daemon writes this id into every workflow input (`site`), and the Python worker and the
-- daemon's own activities refuse a task of another site (docs/contract.md, "Site
-- identity"). It is generated here, once per database: a restore of this database keeps
-- it (the same site), a clone copies it (give a clone that shares a namespace with its
-- origin an id of its own: `UPDATE trigger_relay_site SET id = gen_random_uuid()`, or set
-- TRIGGER_RELAY_SITE for its daemon and workers).
CREATE TABLE trigger_relay_site (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- At most one row.
    singleton  boolean     NOT NULL DEFAULT true UNIQUE,
    CONSTRAINT trigger_relay_site_singleton CHECK (singleton)
);
INSERT INTO trigger_relay_site DEFAULT VALUES;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'trigger_relay_daemon') THEN
        GRANT SELECT ON trigger_relay_site TO trigger_relay_daemon;
    END IF;
END;
$$;

INSERT INTO trigger_relay_schema_version (version) VALUES (7);
