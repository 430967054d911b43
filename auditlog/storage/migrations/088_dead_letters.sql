-- Dead letters: events a destination refused for good (400, 413 or 422 for that
-- one event, found by splitting the batch), set aside so that its stream goes on.
--
-- One row per (destination, event) while it is on the list: a retry queues it
-- (queued_at), its delivery removes it, a new refusal updates it. This working
-- list may change; the audit trail is the log itself: audit_log.stream.dead_lettered
-- and audit_log.stream.dead_letters_retried events commit with each change.
-- (occurred_at, event_seq) is the event's key in audit_events, to send it again.

CREATE TABLE stream_dead_letters (
    workspace_id text NOT NULL,
    destination_id uuid NOT NULL,
    event_id uuid NOT NULL,
    event_xid bigint NOT NULL,
    event_seq bigint NOT NULL,
    occurred_at timestamptz NOT NULL,
    status_code integer,
    error text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 1,
    queued_at timestamptz,
    PRIMARY KEY (workspace_id, destination_id, event_id),
    FOREIGN KEY (workspace_id, destination_id)
        REFERENCES stream_destinations (workspace_id, id) ON DELETE CASCADE
);

CREATE INDEX stream_dead_letters_order
    ON stream_dead_letters (workspace_id, destination_id, event_xid, event_seq);
-- Every delivery round looks for queued letters: an empty partial index most of the time.
CREATE INDEX stream_dead_letters_queued
    ON stream_dead_letters (workspace_id, destination_id, event_xid, event_seq)
    WHERE queued_at IS NOT NULL;

REVOKE ALL ON stream_dead_letters FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON stream_dead_letters TO auditlog_runtime;
