-- Event formats: a streaming destination and an export choose the form their
-- events leave in, NATIVE (the stored payload, byte for byte) or OCSF (built
-- from it on the way out, auditlog/ocsf.py). The stored payload never changes.
-- OCSF exports are JSON or NDJSON files: a CSV has columns of its own.
-- The runtime role's table-wide grants on both tables cover the new columns.

ALTER TABLE stream_destinations
    ADD COLUMN format text NOT NULL DEFAULT 'NATIVE' CHECK (format IN ('NATIVE', 'OCSF'));

ALTER TABLE exports
    ADD COLUMN event_format text NOT NULL DEFAULT 'NATIVE'
        CHECK (event_format IN ('NATIVE', 'OCSF')),
    ADD CONSTRAINT exports_ocsf_files CHECK (event_format = 'NATIVE' OR format <> 'CSV');
