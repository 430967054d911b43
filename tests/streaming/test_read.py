"""Delivery's own read: the live tail's events with only the columns delivery uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from auditlog.runtime import Services
from auditlog.storage.live import read_live_events
from auditlog.storage.streams import read_stream_events
from tests.conftest import WorkspaceKeys, event


async def test_same_events_positions_and_payloads_as_the_live_read(
    workspace: WorkspaceKeys, services: Services
) -> None:
    old = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    await workspace.ingest(
        [event("file.uploaded"), event("user.login.success"), event("file.deleted", occurredAt=old)]
    )
    await workspace.ingest([event("workspace.user.invited") for _ in range(3)])
    async with services.pool.acquire() as conn:
        for after, limit, retention in (
            ((0, 0), 1000, None),
            ((0, 0), 2, None),
            ((0, 0), 1000, datetime.now(UTC) - timedelta(days=1)),
        ):
            live = await read_live_events(
                conn, workspace.id, after=after, limit=limit, retention_start=retention
            )
            ours = await read_stream_events(
                conn, workspace.id, after=after, limit=limit, retention_start=retention
            )
            assert [(e.xid, e.seq, e.occurred_at, e.category, e.payload) for e in live] == [
                (e.xid, e.seq, e.occurred_at, e.category, e.payload) for e in ours
            ]
            assert ours and len(ours) <= limit
        # After a position: only what follows it.
        every = await read_stream_events(
            conn, workspace.id, after=(0, 0), limit=1000, retention_start=None
        )
        rest = await read_stream_events(
            conn, workspace.id, after=(every[1].xid, every[1].seq), limit=1000, retention_start=None
        )
        assert rest == every[2:]
        # Retention: nothing older than its start.
        kept = await read_stream_events(
            conn,
            workspace.id,
            after=(0, 0),
            limit=1000,
            retention_start=datetime.now(UTC) - timedelta(days=1),
        )
        assert "file.deleted" not in {orjson.loads(e.payload)["action"] for e in kept}
        assert len(kept) == len(every) - 1


async def test_stops_below_a_write_still_open_in_this_database(
    workspace: WorkspaceKeys, services: Services
) -> None:
    first = (await workspace.ingest([event("file.uploaded")])).json()["ids"][0]
    holder = await asyncpg.connect(services.database_url)
    await holder.execute("BEGIN")
    await holder.fetchval("SELECT pg_current_xact_id()")
    try:
        second = (await workspace.ingest([event("file.uploaded")])).json()["ids"][0]
        async with services.pool.acquire() as conn:
            rows = await read_stream_events(
                conn, workspace.id, after=(0, 0), limit=1000, retention_start=None
            )
        seen = {orjson.loads(r.payload)["id"] for r in rows}
        assert first in seen and second not in seen
    finally:
        await holder.execute("COMMIT")
        await holder.close()
    async with services.pool.acquire() as conn:
        rows = await read_stream_events(
            conn, workspace.id, after=(0, 0), limit=1000, retention_start=None
        )
    assert second in {orjson.loads(r.payload)["id"] for r in rows}
