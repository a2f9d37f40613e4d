-- The site identity (schema version 7, sql/schema/0007_site.sql): written into every
-- workflow input, and checked by the activities of both workers against their own.
SELECT id::text AS id FROM trigger_relay_site
