-- Exports: a filtered view of the log fixed at creation, split into parts of at
-- most 10,000 rows. Rows are never copied: a part is a keyset range re-read on
-- download, bounded by the snapshot taken at creation (pg_visible_in_snapshot on
-- each event's xid), so events committed later never appear.

CREATE TABLE exports (
    workspace_id text NOT NULL REFERENCES workspaces (id),
    id uuid NOT NULL,                       -- UUIDv7: newest first is id DESC
    format text NOT NULL CHECK (format IN ('CSV', 'JSON', 'NDJSON')),
    filter jsonb NOT NULL,                  -- the filter as the caller gave it (shown back)
    criteria jsonb NOT NULL,                -- the validated filter that is applied
    snapshot pg_snapshot NOT NULL,          -- the log as it stood at creation
    retention_start timestamptz,            -- the workspace's retention bound at creation
    row_count bigint NOT NULL CHECK (row_count >= 0),
    part_size integer NOT NULL CHECK (part_size > 0),
    -- Keyset position (occurred_at, seq) of the last row of each full part,
    -- newest-first order: part N reads (part N-1's end, part N's end].
    part_ends_at timestamptz[] NOT NULL,
    part_ends_seq bigint[] NOT NULL,
    created_by jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, id),
    CHECK (cardinality(part_ends_at) = cardinality(part_ends_seq))
);

REVOKE ALL ON exports FROM PUBLIC;
GRANT SELECT, INSERT ON exports TO auditlog_runtime;
