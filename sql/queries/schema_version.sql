-- The outbox schema version the database holds (NULL if the table is empty).
SELECT max(version) FROM trigger_relay_schema_version
