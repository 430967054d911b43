-- Purge totals for /metrics. The purge log stays the owner's (050_retention.sql):
-- the runtime role may read these sums, never the log's rows.
CREATE FUNCTION auditlog_purge_totals()
RETURNS TABLE (method text, records bigint, events bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT p.method, count(*), coalesce(sum(p.events_deleted), 0)::bigint
    FROM retention_purge_log p GROUP BY p.method
$$;
REVOKE ALL ON FUNCTION auditlog_purge_totals() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auditlog_purge_totals() TO auditlog_runtime;
