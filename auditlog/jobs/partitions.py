"""Partitions created ahead of time.

Policy: audit_events has one partition per UTC month (monthly was measured
against daily, docs/retention.md). Each pass makes sure the current month and
the next MONTHS_AHEAD months exist, so ingest crossing a month boundary never
waits on DDL. Late events inside retention for an older month get their
partition on demand at ingest (auditlog_ensure_partition), so this job never
looks back; dropping old partitions is the retention job's.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import asyncpg

from auditlog.storage import retention as store

MONTHS_AHEAD = 2


def months_from(first: date, count: int) -> list[date]:
    """The first day of `first`'s month and of the `count` months after it."""
    months: list[date] = []
    year, month = first.year, first.month
    for _ in range(count + 1):
        months.append(date(year, month, 1))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


async def run_once(
    conn: asyncpg.Connection, *, today: date | None = None, months_ahead: int = MONTHS_AHEAD
) -> list[str]:
    """Create the missing partitions from this month on; return the names created."""
    today = today or datetime.now(UTC).date()
    existing = {p.name for p in await store.read_partitions(conn)}
    created: list[str] = []
    for month in months_from(today, months_ahead):
        name = await store.ensure_month_partition(conn, month)
        if name not in existing:
            created.append(name)
    return created
