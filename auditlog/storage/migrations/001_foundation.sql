-- Foundation: workspaces, API keys, the append-only event store and its guards.
--
-- Migrations run as the owner (the DATABASE_URL user). The service itself runs
-- as auditlog_runtime, which may only INSERT and SELECT events.

DO $$
BEGIN
    CREATE ROLE auditlog_runtime NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT auditlog_runtime TO %I', current_user);
EXCEPTION WHEN OTHERS THEN
    NULL;  -- a superuser needs no membership; a role that cannot grant it is told at connect time
END
$$;

CREATE TABLE workspaces (
    id text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    plan text NOT NULL CHECK (plan IN ('EARLY_ACCESS', 'PROFESSIONAL', 'ENTERPRISE')),
    retention_days integer CHECK (retention_days IS NULL OR retention_days > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id text PRIMARY KEY,
    workspace_id text REFERENCES workspaces (id),   -- NULL: a platform ingest key
    role text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'ingest')),
    name text,
    secret_hash bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CHECK (workspace_id IS NOT NULL OR role = 'ingest')
);

-- The ingest sequence: unique and increasing, handed out before commit. Readers
-- that resume use (xid, seq) below the safe watermark, never seq alone.
CREATE SEQUENCE audit_events_seq;

CREATE TABLE audit_events (
    workspace_id text NOT NULL,
    occurred_at timestamptz NOT NULL,
    seq bigint NOT NULL DEFAULT nextval('audit_events_seq'),
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    id uuid NOT NULL,
    received_at timestamptz NOT NULL,
    action text NOT NULL,
    category text NOT NULL,
    actor_type text NOT NULL,
    actor_id text,
    actor_email text,            -- lower-cased for case-insensitive match
    ip inet,
    target_ids text[] NOT NULL DEFAULT '{}',
    payload text NOT NULL,       -- canonical JSON (sorted keys, no spaces): byte for byte what was stored
    PRIMARY KEY (workspace_id, occurred_at, seq)
) PARTITION BY RANGE (occurred_at);

CREATE INDEX audit_events_actor_email ON audit_events (workspace_id, actor_email, occurred_at, seq);
CREATE INDEX audit_events_actor_id ON audit_events (workspace_id, actor_id, occurred_at, seq);
CREATE INDEX audit_events_action ON audit_events (workspace_id, action, occurred_at, seq);
CREATE INDEX audit_events_category ON audit_events (workspace_id, category, occurred_at, seq);
CREATE INDEX audit_events_ip ON audit_events (workspace_id, ip, occurred_at, seq);
CREATE INDEX audit_events_targets ON audit_events USING gin (target_ids);
CREATE INDEX audit_events_ingest_order ON audit_events (workspace_id, xid, seq);

-- Idempotency ledger: a unique (workspace_id, id) that holds across partitions,
-- which a partitioned unique index cannot (it must contain occurred_at).
CREATE TABLE audit_event_ids (
    workspace_id text NOT NULL,
    id uuid NOT NULL,
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, id)
);

-- Successful logins per actor: what "seen before" means for login anomalies.
CREATE TABLE actor_logins_seen (
    workspace_id text NOT NULL,
    actor_key text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('ip', 'country', 'device')),
    value text NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (workspace_id, actor_key, kind, value)
);

-- The append-only guard. UPDATE and TRUNCATE are always refused; DELETE only
-- inside the retention purge, which sets auditlog.purge in its own transaction
-- and runs as the owner (the runtime role has no DELETE privilege at all).
CREATE FUNCTION auditlog_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('auditlog.purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: % refused on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION auditlog_refuse_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION auditlog_refuse_change();
CREATE TRIGGER audit_event_ids_append_only BEFORE UPDATE OR DELETE ON audit_event_ids
    FOR EACH ROW EXECUTE FUNCTION auditlog_refuse_change();
CREATE TRIGGER audit_event_ids_no_truncate BEFORE TRUNCATE ON audit_event_ids
    FOR EACH STATEMENT EXECUTE FUNCTION auditlog_refuse_change();

-- Monthly partitions, created by the owner on behalf of the runtime role.
-- Bounds are UTC months whatever the session's TimeZone.
CREATE FUNCTION auditlog_ensure_partition(p_day date) RETURNS text
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
    IF to_regclass(part) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
            part, month_start::text || ' 00:00:00+00', month_end::text || ' 00:00:00+00');
        EXECUTE format(
            'CREATE TRIGGER no_truncate BEFORE TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION auditlog_refuse_change()', part);
        EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', part);
    END IF;
    RETURN part;
END
$$;

REVOKE ALL ON FUNCTION auditlog_ensure_partition(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auditlog_ensure_partition(date) TO auditlog_runtime;

REVOKE ALL ON audit_events, audit_event_ids FROM PUBLIC;
GRANT SELECT, INSERT ON audit_events, audit_event_ids TO auditlog_runtime;
GRANT USAGE ON SEQUENCE audit_events_seq TO auditlog_runtime;
GRANT SELECT, INSERT, UPDATE ON workspaces, api_keys, actor_logins_seen TO auditlog_runtime;
GRANT SELECT ON schema_migrations TO auditlog_runtime;
