"""Reads for the live tail: new events in ingest order with the columns filters use.

Like `read_events_since`, only rows below a safe watermark are returned, so a
reader that resumes after the last row it saw never skips a transaction that
committed late (DESIGN.md, invariant 3). The watermark is
`auditlog_live_horizon()` (migration 020): the oldest xid still in progress in
this database, so a long transaction in another database sharing the server
does not hold the live tail back. The filter columns come along so the
live tail can apply every subscriber's filter in Python without parsing JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from auditlog.storage.events import IPAddress

Position = tuple[int, int]  # (xid, seq): a place in ingest order


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One event as the live tail sees it: positions, filter columns, payload text."""

    workspace_id: str
    occurred_at: datetime
    seq: int
    xid: int
    action: str
    category: str
    actor_id: str | None
    actor_email: str | None
    ip: IPAddress | None
    target_ids: list[str]
    payload: str

    @property
    def position(self) -> Position:
        return (self.xid, self.seq)


async def read_live_events(
    conn: asyncpg.Connection,
    workspace_id: str,
    *,
    after: Position,
    limit: int,
    retention_start: datetime | None,
) -> list[LiveEvent]:
    """Final events of one workspace after `after` in (xid, seq) order."""
    records = await conn.fetch(
        """SELECT workspace_id, occurred_at, seq, xid::text::bigint AS xid, action, category,
                  actor_id, actor_email, ip, target_ids, payload
           FROM audit_events
           WHERE workspace_id = $1
             AND (xid, seq) > ($2::text::xid8, $3)
             AND xid < auditlog_live_horizon()
             AND ($5::timestamptz IS NULL OR occurred_at >= $5)
           ORDER BY xid, seq
           LIMIT $4""",
        workspace_id,
        str(after[0]),
        after[1],
        limit,
        retention_start,
    )
    return [LiveEvent(**dict(r)) for r in records]


async def read_live_position(conn: asyncpg.Connection, workspace_id: str) -> Position:
    """The last final (xid, seq) of this workspace now, or (0, 0): where a tail starts."""
    record = await conn.fetchrow(
        """SELECT xid::text::bigint AS xid, seq FROM audit_events
           WHERE workspace_id = $1 AND xid < auditlog_live_horizon()
           ORDER BY xid DESC, seq DESC LIMIT 1""",
        workspace_id,
    )
    if record is None:
        return (0, 0)
    return (record["xid"], record["seq"])
