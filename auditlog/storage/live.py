"""Reads for the live tail: new events in ingest order with the columns filters use.

Through `INGEST_ORDER_AFTER`, only rows below the safe watermark are returned, so
a reader that resumes after the last row it saw never skips a transaction that
committed late (docs/architecture.md, "The event store").
The filter columns come along so the live tail can apply every subscriber's
filter in Python without parsing JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from auditlog.model import IPAddress
from auditlog.storage.events import INGEST_ORDER_AFTER

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
        f"""SELECT workspace_id, occurred_at, seq, xid::text::bigint AS xid, action, category,
                  actor_id, actor_email, ip, target_ids, payload
           {INGEST_ORDER_AFTER}""",
        workspace_id,
        str(after[0]),
        after[1],
        limit,
        retention_start,
    )
    return [LiveEvent(**dict(r)) for r in records]
