"""Daily against monthly partitions of audit_events, side by side (not a test).

Two fresh databases on DATABASE_URL's server get the same EVENTS events (ten
workspaces, occurred_at uniform over DAYS days): one partitioned by month as
the service does, one by day. The service's own read functions then run the
same reads on both, interleaved, as the runtime role with the service's
connection settings; the median and p95 of REPEAT runs are printed.

Usage: DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python -m bench.partitioning
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, date, datetime, timedelta

import asyncpg

from auditlog.model import TimePosition
from auditlog.storage import events as store
from auditlog.storage.database import create_pool
from bench.common import fresh_database, read_events_since
from bench.datagen import ensure_months, generate_events

WORKSPACES = [f"ws-{i}" for i in range(10)]

Read = Callable[[asyncpg.Connection], Awaitable[object]]


async def create_daily_partitions(conn: asyncpg.Connection, first: date, last: date) -> None:
    day = first
    while day <= last:
        nxt = day + timedelta(days=1)
        await conn.execute(
            f"CREATE TABLE audit_events_{day:%Y_%m_%d} PARTITION OF audit_events "
            f"FOR VALUES FROM ('{day} 00:00:00+00') TO ('{nxt} 00:00:00+00')"
        )
        day = nxt


async def prepare(url: str, daily: bool, events: int, days: int, now: datetime) -> float:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO workspaces (id, plan) SELECT w, 'ENTERPRISE' FROM unnest($1::text[]) w",
            WORKSPACES,
        )
        if daily:
            await create_daily_partitions(
                conn, (now - timedelta(days=days + 1)).date(), (now + timedelta(days=1)).date()
            )
        else:
            await ensure_months(conn, now, days + 1)
        started = time.perf_counter()
        for ws in WORKSPACES:
            await generate_events(conn, ws, events // len(WORKSPACES), now, days)
        elapsed = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE audit_events")
        await conn.execute("VACUUM ANALYZE audit_event_ids")
        return elapsed
    finally:
        await conn.close()


def reads(now: datetime, event_id: uuid.UUID, days: int) -> dict[str, Read]:
    ws = WORKSPACES[3]
    deep = TimePosition(now - timedelta(days=days - 30), 2**62)
    return {
        "newest page (50)": lambda c: store.read_events_page(c, ws, store.EventFilter(), limit=51),
        "actor email page": lambda c: store.read_events_page(
            c, ws, store.EventFilter(actor_email="user7@acme.io"), limit=51
        ),
        "7-day window page": lambda c: store.read_events_page(
            c,
            ws,
            store.EventFilter(
                occurred_from=now - timedelta(days=37), occurred_to=now - timedelta(days=30)
            ),
            limit=51,
        ),
        "action, 90-day retention": lambda c: store.read_events_page(
            c,
            ws,
            store.EventFilter(actions=["mailbox.created"]),
            limit=51,
            retention_start=now - timedelta(days=90),
        ),
        "deep page (cursor)": lambda c: store.read_events_page(
            c, ws, store.EventFilter(), limit=51, older_than=deep
        ),
        "ingest order replay (500)": lambda c: read_events_since(
            c, ws, after_xid=0, after_seq=0, limit=500
        ),
        "event by id": lambda c: store.read_event_by_id(c, ws, event_id),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    now = datetime.now(UTC)
    async with AsyncExitStack() as stack:
        pools = {}
        for kind in ("monthly", "daily"):
            url = await stack.enter_async_context(fresh_database(f"auditlog_bench_{kind}"))
            took = await prepare(url, kind == "daily", args.events, args.days, now)
            pools[kind] = await create_pool(url, min_size=1, max_size=1)
            stack.push_async_callback(pools[kind].close)
            async with pools[kind].acquire() as conn:
                parts = await conn.fetchval(
                    "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_events'::regclass"
                )
            print(f"{kind}: {args.events:,} events over {args.days} days in {parts} partitions, "
                  f"loaded in {took:.0f} s", flush=True)  # fmt: skip
        async with pools["monthly"].acquire() as conn:
            event_id = await conn.fetchval(
                "SELECT id FROM audit_event_ids WHERE workspace_id = $1 "
                "ORDER BY occurred_at LIMIT 1 OFFSET 5000",
                WORKSPACES[3],
            )
        print(f"\n{'read':<28}{'monthly ms':>12}{'daily ms':>12}{'daily/monthly':>15}")
        for label, read in reads(now, event_id, args.days).items():
            timings: dict[str, list[float]] = {"monthly": [], "daily": []}
            for _ in range(args.repeat):
                for kind, pool in pools.items():
                    async with pool.acquire() as conn:
                        started = time.perf_counter()
                        await read(conn)
                        timings[kind].append((time.perf_counter() - started) * 1000)
            med = {k: statistics.median(v) for k, v in timings.items()}
            print(f"{label:<28}{med['monthly']:>12.2f}{med['daily']:>12.2f}"
                  f"{med['daily'] / med['monthly']:>14.1f}x")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
