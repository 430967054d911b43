-- Integrity: each workspace's RFC 9162 tree, its signed checkpoints and the
-- verifier keys that signed them. Every table only grows: the runtime role may
-- INSERT and SELECT, and a trigger refuses UPDATE, DELETE and TRUNCATE for
-- every role, the retention purge included (retention never touches the tree).

CREATE FUNCTION auditlog_refuse_tree_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the integrity tree is append-only: % refused on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Leaves, in runs that never cross a 256-leaf tile: leaf start_index + i has
-- hash hashes[32i:32i+32] and is the event seqs[i] (ids[i], occurred[i]).
-- first/last give the run's ingest positions (xid, seq): the newest run is
-- where the next seal resumes, and an event's run is found by its position.
CREATE TABLE integrity_leaves (
    workspace_id text NOT NULL,
    start_index bigint NOT NULL CHECK (start_index >= 0),
    first_xid xid8 NOT NULL,
    first_seq bigint NOT NULL,
    last_xid xid8 NOT NULL,
    last_seq bigint NOT NULL,
    hashes bytea NOT NULL CHECK (length(hashes) BETWEEN 32 AND 8192 AND length(hashes) % 32 = 0),
    seqs bigint[] NOT NULL,
    ids uuid[] NOT NULL,
    occurred timestamptz[] NOT NULL,
    PRIMARY KEY (workspace_id, start_index)
);
ALTER TABLE integrity_leaves ALTER COLUMN hashes SET STORAGE EXTERNAL;
CREATE INDEX integrity_leaves_position ON integrity_leaves (workspace_id, first_xid, first_seq);

-- Roots of complete subtrees of 256**level leaves (level >= 1), in runs that
-- never cross a 256-node tile: node start_index + i is hashes[32i:32i+32].
CREATE TABLE integrity_nodes (
    workspace_id text NOT NULL,
    level smallint NOT NULL CHECK (level >= 1),
    start_index bigint NOT NULL CHECK (start_index >= 0),
    hashes bytea NOT NULL CHECK (length(hashes) BETWEEN 32 AND 8192 AND length(hashes) % 32 = 0),
    PRIMARY KEY (workspace_id, level, start_index)
);

CREATE TABLE integrity_checkpoints (
    workspace_id text NOT NULL,
    tree_size bigint NOT NULL CHECK (tree_size > 0),
    root_hash bytea NOT NULL CHECK (length(root_hash) = 32),
    signed_note text NOT NULL,
    verifier_key text NOT NULL,
    sealed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, tree_size)
);

CREATE TABLE integrity_verifier_keys (
    verifier_key text PRIMARY KEY,
    first_used_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['integrity_leaves', 'integrity_nodes', 'integrity_checkpoints',
                             'integrity_verifier_keys'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION auditlog_refuse_tree_change()',
                       t || '_append_only', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION auditlog_refuse_tree_change()',
                       t || '_no_truncate', t);
        EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', t);
        EXECUTE format('GRANT SELECT, INSERT ON %I TO auditlog_runtime', t);
    END LOOP;
END
$$;
