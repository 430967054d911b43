-- Streaming checkpoints: each destination also receives the workspace's newest
-- signed checkpoint, at most once per interval. `checkpoint_size` is the tree
-- size of the last checkpoint the sink acknowledged (0: none yet) and moves,
-- like the event cursor, only under the destination's lease;
-- `checkpoint_delivered_at` spaces the deliveries, for whichever worker holds it.
-- The runtime role's table-wide UPDATE on stream_destinations covers both.

ALTER TABLE stream_destinations
    ADD COLUMN checkpoint_size bigint NOT NULL DEFAULT 0 CHECK (checkpoint_size >= 0),
    ADD COLUMN checkpoint_delivered_at timestamptz;
