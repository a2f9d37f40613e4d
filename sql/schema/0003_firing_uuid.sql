-- trigger-relay outbox schema, version 3: a firing identity that survives restores (this
-- file), and indexes for the reconciler and retention (the two 0003_index_*.sql files).
--
-- firing_uuid identifies one firing for good. Row ids are reused after a point-in-time
-- restore, `TRUNCATE ... RESTART IDENTITY`, or a staging database cloned from production,
-- and two sites can share a namespace: a workflow id built from the row id alone then
-- names another firing's workflow. The workflow id now contains the uuid
-- (`{prefix}-{id}-g{generation}-{firing_uuid}`), and every write of a workflow's outcome
-- is guarded by it.
--
-- Rows that exist when this runs keep firing_uuid NULL and their old workflow id
-- (`{prefix}-{id}-g{generation}`): a relay of the previous release may have started them
-- under that id already, and a new id would start them twice. A replay gives such a row
-- its uuid. Adding the column without a default and setting the default afterwards keeps
-- this migration from rewriting the table.
ALTER TABLE trigger_relay_outbox ADD COLUMN firing_uuid uuid;
ALTER TABLE trigger_relay_outbox ALTER COLUMN firing_uuid SET DEFAULT gen_random_uuid();

-- The indexes of this version are built CONCURRENTLY, one per file
-- (0003_index_dispatched.sql, 0003_index_finished.sql): a plain CREATE INDEX would block
-- every insert into the outbox, i.e. every firing of the site, while it reads the table.

INSERT INTO trigger_relay_schema_version (version) VALUES (3);
