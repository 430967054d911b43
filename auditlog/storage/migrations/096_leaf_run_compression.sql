-- Leaf runs' id, sequence and time arrays are compressed with lz4 rather than
-- pglz: about 15% less CPU per sealed leaf for the same storage
-- (docs/benchmarks.md#integrity). A server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE integrity_leaves
        ALTER COLUMN seqs SET COMPRESSION lz4,
        ALTER COLUMN ids SET COMPRESSION lz4,
        ALTER COLUMN occurred SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this PostgreSQL has no lz4: leaf runs stay compressed with pglz';
END
$$;
