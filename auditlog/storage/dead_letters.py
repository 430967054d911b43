"""Dead letters: events a streaming destination refused for good, set aside.

A worker's writes are fenced by the destination's lease like its cursor
(storage/streams.py): a worker that lost the lease changes nothing here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from auditlog.model import DeadLetterRow
from auditlog.storage.streams import DestinationKey

_FENCE = """EXISTS (SELECT 1 FROM stream_destinations d
                   WHERE d.workspace_id = $1 AND d.id = $2
                     AND d.lease_owner = $3 AND d.lease_until > now())"""


@dataclass(frozen=True)
class NewDeadLetter:
    event_id: uuid.UUID
    xid: int
    seq: int
    occurred_at: datetime
    status_code: int | None
    error: str


@dataclass(frozen=True)
class QueuedLetter:
    """A dead letter queued for a retry, with its event; payload None when the event
    is no longer there (purged under the retention)."""

    event_id: uuid.UUID
    xid: int
    seq: int
    occurred_at: datetime
    category: str | None
    payload: str | None


async def set_aside(conn: asyncpg.Connection, key: DestinationKey, letter: NewDeadLetter) -> None:
    """Put an event on the list (again, when a cursor moved back over it: the row is renewed)."""
    await conn.execute(
        """INSERT INTO stream_dead_letters AS l
               (workspace_id, destination_id, event_id, event_xid, event_seq, occurred_at,
                status_code, error)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (workspace_id, destination_id, event_id) DO UPDATE SET
               status_code = excluded.status_code, error = excluded.error,
               failed_at = now(), attempts = l.attempts + 1, queued_at = NULL""",
        key.workspace_id,
        key.id,
        letter.event_id,
        letter.xid,
        letter.seq,
        letter.occurred_at,
        letter.status_code,
        letter.error,
    )


async def count_dead_letters(conn: asyncpg.Connection, key: DestinationKey) -> tuple[int, int]:
    """(on the list, set aside since the destination last acknowledged events)."""
    record = await conn.fetchrow(
        """SELECT count(*) AS total,
                  count(*) FILTER (WHERE l.failed_at > coalesce(d.last_delivered_at, '-infinity'))
                      AS in_a_row
           FROM stream_dead_letters l
           JOIN stream_destinations d ON d.workspace_id = l.workspace_id AND d.id = l.destination_id
           WHERE l.workspace_id = $1 AND l.destination_id = $2""",
        key.workspace_id,
        key.id,
    )
    assert record is not None
    return int(record["total"]), int(record["in_a_row"])


async def read_dead_letters(
    conn: asyncpg.Connection, workspace_id: str, destination_id: uuid.UUID, limit: int
) -> list[DeadLetterRow]:
    """The list in ingest order (the order the events would have been delivered in)."""
    records = await conn.fetch(
        """SELECT event_id, status_code, error, failed_at, queued_at IS NOT NULL AS queued,
                  attempts
           FROM stream_dead_letters WHERE workspace_id = $1 AND destination_id = $2
           ORDER BY event_xid, event_seq LIMIT $3""",
        workspace_id,
        destination_id,
        limit,
    )
    return [DeadLetterRow(**dict(r)) for r in records]


async def queue_dead_letters(
    conn: asyncpg.Connection, workspace_id: str, destination_id: uuid.UUID
) -> int:
    """Queue every letter not queued yet for the next delivery round; how many."""
    result: str = await conn.execute(
        """UPDATE stream_dead_letters SET queued_at = now()
           WHERE workspace_id = $1 AND destination_id = $2 AND queued_at IS NULL""",
        workspace_id,
        destination_id,
    )
    return int(result.split()[-1])


async def read_queued(
    conn: asyncpg.Connection,
    key: DestinationKey,
    limit: int,
    retention_start: datetime | None,
) -> list[QueuedLetter]:
    """Queued letters in ingest order with their events (looked up by primary key)."""
    records = await conn.fetch(
        """SELECT l.event_id, l.event_xid, l.event_seq, l.occurred_at, e.category, e.payload
           FROM stream_dead_letters l
           LEFT JOIN audit_events e
             ON e.workspace_id = l.workspace_id AND e.occurred_at = l.occurred_at
            AND e.seq = l.event_seq
            AND ($4::timestamptz IS NULL OR e.occurred_at >= $4)
           WHERE l.workspace_id = $1 AND l.destination_id = $2 AND l.queued_at IS NOT NULL
           ORDER BY l.event_xid, l.event_seq LIMIT $3""",
        key.workspace_id,
        key.id,
        limit,
        retention_start,
    )
    return [
        QueuedLetter(
            r["event_id"],
            r["event_xid"],
            r["event_seq"],
            r["occurred_at"],
            r["category"],
            r["payload"],
        )
        for r in records
    ]


async def remove(
    conn: asyncpg.Connection, worker_id: str, key: DestinationKey, event_ids: list[uuid.UUID]
) -> bool:
    """Take delivered (or no longer deliverable) letters off the list; False when the
    lease is no longer ours."""
    result: str = await conn.execute(
        f"""DELETE FROM stream_dead_letters
            WHERE workspace_id = $1 AND destination_id = $2 AND event_id = ANY($4::uuid[])
              AND {_FENCE}""",
        key.workspace_id,
        key.id,
        worker_id,
        event_ids,
    )
    return not result.endswith(" 0") or await _holds_lease(conn, worker_id, key)


async def refused_again(
    conn: asyncpg.Connection,
    worker_id: str,
    key: DestinationKey,
    event_id: uuid.UUID,
    status_code: int | None,
    error: str,
) -> bool:
    """A retried letter was refused again: it stays, unqueued; False when the lease is
    no longer ours."""
    result: str = await conn.execute(
        f"""UPDATE stream_dead_letters SET
               status_code = $5, error = $6, failed_at = now(), attempts = attempts + 1,
               queued_at = NULL
            WHERE workspace_id = $1 AND destination_id = $2 AND event_id = $4 AND {_FENCE}""",
        key.workspace_id,
        key.id,
        worker_id,
        event_id,
        status_code,
        error,
    )
    return result.endswith(" 1") or await _holds_lease(conn, worker_id, key)


async def _holds_lease(conn: asyncpg.Connection, worker_id: str, key: DestinationKey) -> bool:
    return bool(await conn.fetchval(f"SELECT {_FENCE}", key.workspace_id, key.id, worker_id))
