-- Export rate limit: a creation reserves its place in the workspace's allowance
-- before it plans (the costly scan), so a burst of requests cannot all scan and
-- be refused afterwards. The row is removed in the transaction that writes the
-- export (which then counts instead), or when planning fails; one left by a
-- process that died stops counting once it is older than the rate window.

CREATE TABLE export_reservations (
    workspace_id text NOT NULL REFERENCES workspaces (id),
    id uuid NOT NULL,                       -- the id the export will have
    reserved_at timestamptz NOT NULL,       -- the export's created_at
    PRIMARY KEY (workspace_id, id)
);

REVOKE ALL ON export_reservations FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON export_reservations TO auditlog_runtime;
