"""Relay-style pages over the newest-first log, keyset both ways.

Newest first: "previous" is newer, "next" is older. `after` bounds a page on
the newer side, `before` on the older side. The side a page is read towards
is known from one extra row; the other side is probed with one indexed
LIMIT 1 read, and only when a cursor bounds it (without one the page starts at
that end of the log). Both flags are therefore exact, also for a cursor taken
under another filter.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from auditlog.model import EventFilter, TimePosition
from auditlog.storage.events import StoredEvent, read_events_page


@dataclass(frozen=True, slots=True)
class PageRequest:
    size: int
    backward: bool  # `last`: the page nearest `before` (or the oldest), not nearest `after`
    after: TimePosition | None = None
    before: TimePosition | None = None


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[StoredEvent]  # newest first
    has_next: bool
    has_previous: bool


def _edge(row: StoredEvent | None, cursor: TimePosition | None, *, newer: bool) -> TimePosition:
    """Where to probe beyond a page's edge: past its edge row or, on an empty
    page, past the cursor including the cursor's own position."""
    if row is not None:
        return TimePosition(row.occurred_at, row.seq)
    assert cursor is not None
    # seq is an integer: (t, seq - 1) < x  <=>  (t, seq) <= x.
    return TimePosition(cursor.occurred_at, cursor.seq + (-1 if newer else 1))


async def read_page(
    conn: asyncpg.Connection,
    workspace_id: str,
    flt: EventFilter,
    request: PageRequest,
) -> Page:
    """One page, bounded by the workspace's retention (on a connection from
    `page_connection`, its statements are planned as `page_plans` says)."""

    async def exists(
        *, older: TimePosition | None = None, newer: TimePosition | None = None
    ) -> bool:
        probe = await read_events_page(
            conn,
            workspace_id,
            flt,
            limit=1,
            older_than=older,
            newer_than=newer,
            oldest_first=newer is not None,
            workspace_retention=True,
        )
        return bool(probe)

    size = request.size
    rows = await read_events_page(
        conn,
        workspace_id,
        flt,
        limit=size + 1,
        older_than=request.after,
        newer_than=request.before,
        oldest_first=request.backward,
        workspace_retention=True,
    )
    has_more = len(rows) > size
    # Backward reads oldest first and returns newest first: the extra row is rows[0].
    rows = rows[has_more:] if request.backward else rows[:size]
    first, last = (rows[0], rows[-1]) if rows else (None, None)
    newer_bounded, older_bounded = request.after is not None, request.before is not None
    if request.backward:
        has_previous = has_more or (
            newer_bounded and await exists(newer=_edge(first, request.after, newer=True))
        )
        has_next = older_bounded and await exists(older=_edge(last, request.before, newer=False))
    else:
        has_next = has_more or (
            older_bounded and await exists(older=_edge(last, request.before, newer=False))
        )
        has_previous = newer_bounded and await exists(newer=_edge(first, request.after, newer=True))
    return Page(rows, has_next=has_next, has_previous=has_previous)
