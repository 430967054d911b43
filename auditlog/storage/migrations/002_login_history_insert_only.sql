-- Login history becomes insert-only. Updating count and last_seen on every login
-- held a row lock per (actor, value) until the ingest transaction committed, so
-- concurrent batches with the same actors ran one after another. Only "seen
-- before, and since when" is needed for anomalies (actorActivity reads the
-- events themselves), and ON CONFLICT DO NOTHING locks nothing that exists.
ALTER TABLE actor_logins_seen DROP COLUMN last_seen, DROP COLUMN count;
REVOKE UPDATE ON actor_logins_seen FROM auditlog_runtime;
