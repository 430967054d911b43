-- Retention cuts wait for a grace period, and legal holds stop every purge.
--
-- The runtime role may UPDATE workspaces (the CLI's set-plan does), so the
-- purge no longer trusts workspaces.retention_days: it keeps whatever the
-- LONGEST retention in force at any time during the grace window (now - grace
-- .. now) kept, read from the append-only workspace_plan_history, which only
-- the trigger (running as the owner) writes. A legal hold in force at any time
-- during that window stops every purge of the workspace. Everything here is
-- the owner's alone, like the rest of the purge (050_retention.sql).

-- When maintenance first saw each plan change. A change is stamped by its
-- trigger when the UPDATE runs, not when it commits: a transaction left open
-- for longer than the grace period would otherwise commit a cut that is
-- already "old". A change counts from the later of the two times; one no pass
-- has seen yet counts as made now.
CREATE TABLE workspace_plan_history_seen (
    workspace_id text NOT NULL,
    changed_at timestamptz NOT NULL,
    plan text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workspace_id, changed_at, plan)
);

-- Rows already committed now are seen now at the latest; their own time is
-- the best known (the grace did not exist when they were made).
INSERT INTO workspace_plan_history_seen (workspace_id, changed_at, plan, seen_at)
SELECT workspace_id, changed_at, plan, changed_at FROM workspace_plan_history;

CREATE TRIGGER workspace_plan_history_seen_append_only BEFORE UPDATE OR DELETE
    ON workspace_plan_history_seen FOR EACH ROW EXECUTE FUNCTION auditlog_refuse_change();
CREATE TRIGGER workspace_plan_history_seen_no_truncate BEFORE TRUNCATE
    ON workspace_plan_history_seen FOR EACH STATEMENT EXECUTE FUNCTION auditlog_refuse_change();

-- Legal holds: one row per placement or release, never rewritten. A workspace
-- is held while its latest row is a placement.
CREATE TABLE retention_holds (
    id bigserial PRIMARY KEY,
    workspace_id text NOT NULL REFERENCES workspaces (id),
    action text NOT NULL CHECK (action IN ('placed', 'released')),
    reason text CHECK (char_length(reason) BETWEEN 1 AND 500),
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    by text NOT NULL DEFAULT session_user,
    CHECK (action = 'released' OR reason IS NOT NULL)
);
CREATE INDEX retention_holds_workspace ON retention_holds (workspace_id, id);

-- Placements and releases alternate, one writer at a time per workspace: a
-- second placement (or a release of nothing) is refused whoever writes it.
CREATE FUNCTION auditlog_check_hold_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    latest text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('auditlog_retention_hold'), hashtext(NEW.workspace_id));
    SELECT action INTO latest FROM retention_holds
    WHERE workspace_id = NEW.workspace_id ORDER BY id DESC LIMIT 1;
    IF NEW.action = 'placed' AND latest = 'placed' THEN
        RAISE EXCEPTION 'workspace % is already under a legal hold', NEW.workspace_id
            USING ERRCODE = 'unique_violation';
    END IF;
    IF NEW.action = 'released' AND latest IS DISTINCT FROM 'placed' THEN
        RAISE EXCEPTION 'workspace % is not under a legal hold', NEW.workspace_id
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION auditlog_check_hold_change() FROM PUBLIC;

CREATE TRIGGER retention_holds_alternate BEFORE INSERT ON retention_holds
    FOR EACH ROW EXECUTE FUNCTION auditlog_check_hold_change();
CREATE TRIGGER retention_holds_append_only BEFORE UPDATE OR DELETE ON retention_holds
    FOR EACH ROW EXECUTE FUNCTION auditlog_refuse_change();
CREATE TRIGGER retention_holds_no_truncate BEFORE TRUNCATE ON retention_holds
    FOR EACH STATEMENT EXECUTE FUNCTION auditlog_refuse_change();

-- The grace period, from the session setting auditlog.retention_grace_days
-- that maintenance sets on its own (owner) connection: 7 days when unset,
-- clamped to 0..36500. The runtime role cannot reach the owner's session.
CREATE FUNCTION auditlog_retention_grace() RETURNS interval
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
DECLARE
    raw text := nullif(btrim(current_setting('auditlog.retention_grace_days', true)), '');
BEGIN
    IF raw IS NULL THEN
        RETURN make_interval(days => 7);
    END IF;
    IF raw !~ '^[+-]?[0-9]{1,9}$' THEN
        RAISE EXCEPTION 'auditlog.retention_grace_days must be a whole number of days, not %', raw
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN make_interval(days => least(greatest(raw::integer, 0), 36500));
END
$$;

-- Record every plan change no pass has seen yet as seen now.
CREATE FUNCTION auditlog_observe_plan_history() RETURNS bigint
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    added bigint;
BEGIN
    INSERT INTO workspace_plan_history_seen (workspace_id, changed_at, plan)
    SELECT h.workspace_id, h.changed_at, h.plan FROM workspace_plan_history h
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    RETURN added;
END
$$;

-- Whether a legal hold was in force at any time during the grace window.
CREATE FUNCTION auditlog_retention_held(p_workspace text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT coalesce((SELECT action = 'placed' FROM retention_holds
                     WHERE workspace_id = p_workspace AND at <= now() - auditlog_retention_grace()
                     ORDER BY id DESC LIMIT 1), false)
        OR EXISTS (SELECT 1 FROM retention_holds
                   WHERE workspace_id = p_workspace AND at > now() - auditlog_retention_grace())
$$;

-- The retention the purge may apply to a workspace: the longest in force at any
-- time during the grace window, i.e. the change in force at the window's start
-- and every change after it (the current row too, which can only lengthen it).
-- NULL when nothing may be purged: unlimited at some time in the window, held,
-- unknown, or without any recorded history.
CREATE FUNCTION auditlog_purge_retention_days(p_workspace text) RETURNS integer
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
DECLARE
    window_start timestamptz := now() - auditlog_retention_grace();
    current_days integer;
    changes bigint;
    unlimited boolean;
    longest integer;
BEGIN
    SELECT w.retention_days INTO current_days FROM workspaces w WHERE w.id = p_workspace;
    IF NOT FOUND OR current_days IS NULL OR auditlog_retention_held(p_workspace) THEN
        RETURN NULL;
    END IF;
    WITH h AS (
        SELECT h.changed_at, h.retention_days,
               CASE WHEN s.seen_at IS NULL THEN 'infinity'
                    ELSE greatest(h.changed_at, s.seen_at) END AS effective_at
        FROM workspace_plan_history h
        LEFT JOIN workspace_plan_history_seen s USING (workspace_id, changed_at, plan)
        WHERE h.workspace_id = p_workspace
    )
    SELECT count(*), bool_or(h.retention_days IS NULL), max(h.retention_days)
    INTO changes, unlimited, longest
    FROM h
    WHERE h.effective_at > window_start
       OR h.changed_at >= (SELECT max(e.changed_at) FROM h e WHERE e.effective_at <= window_start);
    IF changes = 0 OR unlimited THEN
        RETURN NULL;
    END IF;
    RETURN greatest(longest, current_days);
END
$$;

-- The purge bound of a workspace: never later than the retention in force
-- throughout the grace window allows. NULL when nothing may be purged.
CREATE OR REPLACE FUNCTION auditlog_purge_bound(p_workspace text, p_before timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT least(p_before, now() - make_interval(days => r.days))
    FROM auditlog_purge_retention_days(p_workspace) AS r(days)
    WHERE r.days IS NOT NULL
$$;

-- True when the partition lies wholly in the past and every workspace with
-- rows in it has expired them all under the same rule (held, unknown or
-- unlimited at any time in the window: not expired).
CREATE OR REPLACE FUNCTION auditlog_partition_expired(p_partition text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT p.range_to <= now() AND NOT EXISTS (
        SELECT 1
        FROM auditlog_partition_workspaces(p_partition) AS pw(workspace_id)
        CROSS JOIN LATERAL auditlog_purge_retention_days(pw.workspace_id) AS r(days)
        WHERE r.days IS NULL OR p.range_to > now() - make_interval(days => r.days))
    FROM auditlog_partitions() p
    WHERE p.partition_name = p_partition
$$;

REVOKE ALL ON FUNCTION auditlog_retention_grace() FROM PUBLIC;
REVOKE ALL ON FUNCTION auditlog_observe_plan_history() FROM PUBLIC;
REVOKE ALL ON FUNCTION auditlog_retention_held(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION auditlog_purge_retention_days(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION auditlog_purge_bound(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION auditlog_partition_expired(text) FROM PUBLIC;
REVOKE ALL ON workspace_plan_history_seen, retention_holds FROM PUBLIC;
REVOKE ALL ON SEQUENCE retention_holds_id_seq FROM PUBLIC;
