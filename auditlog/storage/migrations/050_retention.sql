-- Retention and immutability: the only way past the append-only guard, whole
-- partition drops, a purge log and a plan history nobody can rewrite.
--
-- Every function here is owned by the migrating owner and executable by the
-- owner alone: maintenance connects as the owner (DATABASE_URL), never as the
-- runtime role, which can neither delete rows nor call anything that does.

-- Make sure nobody but the owner can create objects in the schema (PostgreSQL
-- 15 no longer grants CREATE to PUBLIC; older clusters upgraded in place may).
DO $$
BEGIN
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    EXECUTE format('REVOKE CREATE ON SCHEMA public FROM %I', 'auditlog_runtime');
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'not the owner of schema public: CREATE on it left as it is';
END
$$;

-- Ledger rows by age: purging a workspace's expired ids without a scan.
CREATE INDEX audit_event_ids_age ON audit_event_ids (workspace_id, occurred_at);

-- What retention removed, when and as whom: one row per workspace per pass
-- (row purge) and one per dropped partition. Append-only like the events.
CREATE TABLE retention_purge_log (
    id bigserial PRIMARY KEY,
    ran_at timestamptz NOT NULL DEFAULT now(),
    run_by text NOT NULL DEFAULT session_user,
    method text NOT NULL CHECK (method IN ('rows', 'partition')),
    workspace_ids text[] NOT NULL,
    partition_name text,
    purged_before timestamptz NOT NULL,
    events_deleted bigint NOT NULL,
    ids_deleted bigint NOT NULL
);

-- Every plan or retention change, written by a trigger whatever changed it.
CREATE TABLE workspace_plan_history (
    workspace_id text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    changed_by text NOT NULL DEFAULT session_user,
    plan text NOT NULL,
    retention_days integer,
    PRIMARY KEY (workspace_id, changed_at, plan)
);

CREATE FUNCTION auditlog_record_plan_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.plan IS DISTINCT FROM OLD.plan
            OR NEW.retention_days IS DISTINCT FROM OLD.retention_days THEN
        INSERT INTO workspace_plan_history (workspace_id, changed_at, plan, retention_days)
        VALUES (NEW.id, clock_timestamp(), NEW.plan, NEW.retention_days);
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION auditlog_record_plan_change() FROM PUBLIC;

CREATE TRIGGER workspaces_plan_history AFTER INSERT OR UPDATE OF plan, retention_days
    ON workspaces FOR EACH ROW EXECUTE FUNCTION auditlog_record_plan_change();

INSERT INTO workspace_plan_history (workspace_id, changed_at, plan, retention_days)
SELECT id, updated_at, plan, retention_days FROM workspaces;

CREATE TRIGGER retention_purge_log_append_only BEFORE UPDATE OR DELETE ON retention_purge_log
    FOR EACH ROW EXECUTE FUNCTION auditlog_refuse_change();
CREATE TRIGGER retention_purge_log_no_truncate BEFORE TRUNCATE ON retention_purge_log
    FOR EACH STATEMENT EXECUTE FUNCTION auditlog_refuse_change();
CREATE TRIGGER workspace_plan_history_append_only BEFORE UPDATE OR DELETE
    ON workspace_plan_history FOR EACH ROW EXECUTE FUNCTION auditlog_refuse_change();
CREATE TRIGGER workspace_plan_history_no_truncate BEFORE TRUNCATE ON workspace_plan_history
    FOR EACH STATEMENT EXECUTE FUNCTION auditlog_refuse_change();

-- The purge bound of a workspace: never later than its retention allows.
-- NULL when nothing may be purged (unlimited retention, unknown workspace).
CREATE FUNCTION auditlog_purge_bound(p_workspace text, p_before timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT least(p_before, now() - make_interval(days => w.retention_days))
    FROM workspaces w
    WHERE w.id = p_workspace AND w.retention_days IS NOT NULL
$$;

-- The bound of one purge batch, after checking its size.
CREATE FUNCTION auditlog_purge_batch_bound(p_workspace text, p_before timestamptz, p_batch integer)
RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
BEGIN
    IF p_batch IS NULL OR p_batch NOT BETWEEN 1 AND 50000 THEN
        RAISE EXCEPTION 'batch must be between 1 and 50000, not %', p_batch
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN auditlog_purge_bound(p_workspace, p_before);
END
$$;

-- THE way past the append-only guard: one bounded batch of one workspace's
-- events older than its retention (and older than p_before), with their ids in
-- the ledger. auditlog.purge is on only while this function runs. The batch is
-- a range of the primary key, (workspace_id, occurred_at, seq) up to the
-- p_batch-th expired row, so it is found and deleted by index, whatever the
-- size of the table.
CREATE FUNCTION auditlog_purge_events(p_workspace text, p_before timestamptz, p_batch integer)
RETURNS TABLE (events_deleted bigint, ids_deleted bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET plan_cache_mode = force_custom_plan
SET auditlog.purge = 'on'
AS $$
DECLARE
    bound timestamptz := auditlog_purge_batch_bound(p_workspace, p_before, p_batch);
    last_at timestamptz;
    last_seq bigint;
    gone_ids uuid[];
BEGIN
    events_deleted := 0;
    ids_deleted := 0;
    IF bound IS NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT occurred_at, seq INTO last_at, last_seq FROM audit_events
    WHERE workspace_id = p_workspace AND occurred_at < bound
    ORDER BY occurred_at, seq
    OFFSET p_batch - 1 LIMIT 1;
    IF last_at IS NULL THEN  -- fewer than a batch left: all of them
        last_at := bound;
        last_seq := 0;
    END IF;
    WITH gone AS (
        DELETE FROM audit_events
        WHERE workspace_id = p_workspace AND occurred_at < bound AND occurred_at <= last_at
          AND (occurred_at, seq) <= (last_at, last_seq)
        RETURNING id
    )
    SELECT coalesce(array_agg(id), '{}') INTO gone_ids FROM gone;
    events_deleted := cardinality(gone_ids);
    -- An array, not a join: the ledger's primary key serves it at any size.
    DELETE FROM audit_event_ids WHERE workspace_id = p_workspace AND id = ANY (gone_ids);
    GET DIAGNOSTICS ids_deleted = ROW_COUNT;
    RETURN NEXT;
END
$$;

-- Ledger rows only, for a partition about to be dropped whole: one bounded
-- batch of one workspace's ids older than its retention and p_before.
CREATE FUNCTION auditlog_purge_event_ids(p_workspace text, p_before timestamptz, p_batch integer)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET plan_cache_mode = force_custom_plan
SET auditlog.purge = 'on'
AS $$
DECLARE
    bound timestamptz := auditlog_purge_batch_bound(p_workspace, p_before, p_batch);
    deleted bigint;
BEGIN
    IF bound IS NULL THEN
        RETURN 0;
    END IF;
    -- By tuple id: a join on id would scan every expired id of the workspace.
    DELETE FROM audit_event_ids
    WHERE workspace_id = p_workspace AND occurred_at < bound
      AND ctid = ANY (ARRAY(
          SELECT ctid FROM audit_event_ids
          WHERE workspace_id = p_workspace AND occurred_at < bound
          ORDER BY occurred_at
          LIMIT p_batch));
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$;

-- Partitions of audit_events with their bounds.
CREATE FUNCTION auditlog_partitions()
RETURNS TABLE (partition_name text, range_from timestamptz, range_to timestamptz)
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT c.relname::text,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'audit_events'::regclass
    ORDER BY 2
$$;

-- The workspaces with rows in one partition (a skip scan of its primary key).
CREATE FUNCTION auditlog_partition_workspaces(p_partition text)
RETURNS SETOF text
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'WITH RECURSIVE w AS ('
        '  (SELECT workspace_id FROM %1$I ORDER BY workspace_id LIMIT 1)'
        '  UNION ALL'
        '  SELECT (SELECT p.workspace_id FROM %1$I p WHERE p.workspace_id > w.workspace_id'
        '          ORDER BY p.workspace_id LIMIT 1)'
        '  FROM w WHERE w.workspace_id IS NOT NULL)'
        'SELECT workspace_id FROM w WHERE workspace_id IS NOT NULL',
        p_partition);
END
$$;

-- Rows in one partition (for the purge log, counted before the drop).
CREATE FUNCTION auditlog_partition_rows(p_partition text) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %I', p_partition) INTO n;
    RETURN n;
END
$$;

-- True when the partition lies wholly in the past and every workspace with
-- rows in it (an unknown one counts as unlimited) has expired them all.
CREATE FUNCTION auditlog_partition_expired(p_partition text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT p.range_to <= now() AND NOT EXISTS (
        SELECT 1
        FROM auditlog_partition_workspaces(p_partition) AS pw(workspace_id)
        LEFT JOIN workspaces w ON w.id = pw.workspace_id
        WHERE w.retention_days IS NULL
           OR p.range_to > now() - make_interval(days => w.retention_days))
    FROM auditlog_partitions() p
    WHERE p.partition_name = p_partition
$$;

-- Detach and drop one expired partition. The parent lock is taken NOWAIT (the
-- caller retries): waiting for it would queue every ingest and read behind us.
-- Under that lock nothing can be inserted into the partition, so the check is
-- made again there and is final.
CREATE FUNCTION auditlog_drop_expired_partition(p_partition text) RETURNS boolean
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    LOCK TABLE ONLY audit_events IN ACCESS EXCLUSIVE MODE NOWAIT;
    IF NOT coalesce(auditlog_partition_expired(p_partition), false) THEN
        RETURN false;
    END IF;
    EXECUTE format('ALTER TABLE audit_events DETACH PARTITION %I', p_partition);
    EXECUTE format('DROP TABLE %I', p_partition);
    RETURN true;
END
$$;

REVOKE ALL ON FUNCTION auditlog_purge_bound(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION auditlog_purge_batch_bound(text, timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION auditlog_purge_events(text, timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION auditlog_purge_event_ids(text, timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION auditlog_partitions() FROM PUBLIC;
REVOKE ALL ON FUNCTION auditlog_partition_workspaces(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION auditlog_partition_rows(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION auditlog_partition_expired(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION auditlog_drop_expired_partition(text) FROM PUBLIC;
REVOKE ALL ON retention_purge_log, workspace_plan_history FROM PUBLIC;
