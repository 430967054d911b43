-- Log streaming: destinations with their delivery cursor and lease, and the
-- workers that share them.
--
-- A destination's cursor (cursor_xid, cursor_seq) is a position in ingest order
-- (docs/architecture.md, the safe watermark); it only moves after the sink acknowledged. The lease
-- (lease_owner, lease_until) lets one worker at a time deliver a destination;
-- a dead worker's lease simply expires. Credentials live in `secrets`,
-- encrypted with AUDITLOG_SECRET_KEY; `config` holds only what may be shown.

CREATE TABLE stream_destinations (
    workspace_id text NOT NULL REFERENCES workspaces (id),
    id uuid NOT NULL,
    name text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('S3', 'DATADOG', 'SPLUNK_HEC', 'WEBHOOK')),
    categories text[] NOT NULL,
    config jsonb NOT NULL,
    secrets bytea NOT NULL,
    status text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'PAUSED', 'FAILING')),
    generation bigint NOT NULL DEFAULT 1,
    cursor_xid bigint NOT NULL,
    cursor_seq bigint NOT NULL,
    last_delivered_at timestamptz,
    last_error text,
    attempts integer NOT NULL DEFAULT 0,
    retry_at timestamptz,
    lease_owner text,
    lease_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id)
);

CREATE INDEX stream_destinations_claimable ON stream_destinations (lease_until)
    WHERE status <> 'PAUSED';

-- Live workers: a heartbeat each, so every worker can compute its fair share.
CREATE TABLE stream_workers (
    id text PRIMARY KEY,
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

REVOKE ALL ON stream_destinations, stream_workers FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON stream_destinations, stream_workers TO auditlog_runtime;
