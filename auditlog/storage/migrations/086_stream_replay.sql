-- Replaying a destination moves its cursor back while a worker may hold the
-- lease mid-batch. `cursor_epoch` counts those moves: a worker's cursor advance
-- names the epoch it read, and one from before the last replay moves nothing,
-- so it can never carry the cursor past the replayed position.

ALTER TABLE stream_destinations
    ADD COLUMN cursor_epoch bigint NOT NULL DEFAULT 0;
