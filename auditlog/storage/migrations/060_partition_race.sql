-- auditlog_ensure_partition, safe when several sessions ask at once for the
-- partition of a month that has none.
--
-- The first version checked to_regclass again after taking its advisory lock.
-- That second look can miss the table that the lock's holder has just
-- committed: an advisory lock, unlike a lock on a relation, does not make the
-- session process catalog invalidations, so the negative cache entry left by
-- the first look still answers "no such relation". Seven of eight concurrent
-- callers then failed with "relation ... already exists" (the first events of
-- a new month, or late events for an old one, arriving in parallel requests).
-- The creation now treats duplicate_table as "created by someone else": the
-- other session created the table, its trigger and its grants in one
-- transaction, which has committed by the time our CREATE sees its table.
CREATE OR REPLACE FUNCTION auditlog_ensure_partition(p_day date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    month_start date := date_trunc('month', p_day)::date;
    month_end date := (date_trunc('month', p_day) + interval '1 month')::date;
    part text := 'audit_events_' || to_char(month_start, 'YYYY_MM');
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN part;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('auditlog_ensure_partition'));
    BEGIN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
            part, month_start::text || ' 00:00:00+00', month_end::text || ' 00:00:00+00');
        EXECUTE format(
            'CREATE TRIGGER no_truncate BEFORE TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION auditlog_refuse_change()', part);
        EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', part);
    EXCEPTION WHEN duplicate_table THEN
        NULL;  -- another session made it (table, trigger and grants together)
    END;
    RETURN part;
END
$$;
