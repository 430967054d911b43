-- Live tail: a safe watermark that only waits for writers of THIS database.
--
-- `pg_snapshot_xmin(pg_current_snapshot())` is cluster-wide: one long
-- transaction in any other database on the same server (a bulk load, a
-- report) would hold every live subscriber back until it ends. Here an xid
-- still in progress in the caller's snapshot is waited for unless
-- pg_stat_activity shows it running in another database. Unknown xids (the
-- transaction ended after the snapshot, a prepared transaction, or no right
-- to see other roles' sessions) are waited for too: never unsafe, at worst
-- as slow as the cluster-wide xmin. STABLE: it runs in the caller's snapshot.
-- SECURITY DEFINER so the runtime role needs no pg_read_all_stats; it returns
-- a single xid8 and exposes nothing about other sessions.
CREATE FUNCTION auditlog_live_horizon() RETURNS xid8
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(min(x), pg_snapshot_xmax(pg_current_snapshot()))
    FROM pg_snapshot_xip(pg_current_snapshot()) AS x
    WHERE NOT EXISTS (
        SELECT 1 FROM pg_stat_activity a
        WHERE a.backend_xid = x::xid
          AND a.datname IS NOT NULL
          AND a.datname <> current_database()
    )
$$;

REVOKE ALL ON FUNCTION auditlog_live_horizon() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auditlog_live_horizon() TO auditlog_runtime;
