-- Runs once, when the compose postgres volume is first initialised
-- (/docker-entrypoint-initdb.d). Local use only: the passwords are not secrets.
--
-- The site's own role (POSTGRES_USER=site) owns the database and runs the Django
-- migrations, which apply sql/schema/0001_outbox.sql and grant the outbox privileges to
-- trigger_relay_daemon. The relay logs in as `relay`, which holds only that role
-- (least privilege, guarantees §1.1): created here so the migration finds it.
CREATE ROLE trigger_relay_daemon NOLOGIN;
CREATE ROLE relay LOGIN PASSWORD 'relay' IN ROLE trigger_relay_daemon;
