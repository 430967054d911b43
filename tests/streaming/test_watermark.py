"""The safe watermark holds readers back for writers in this database only."""

from __future__ import annotations

import asyncpg
import orjson

from auditlog.runtime import Services
from auditlog.storage.live import read_live_events
from tests.conftest import WorkspaceKeys, event


async def _ids_after(services: Services, workspace_id: str, after: tuple[int, int]) -> list[str]:
    async with services.pool.acquire() as conn:
        rows = await read_live_events(
            conn, workspace_id, after=after, limit=1000, retention_start=None
        )
    return [orjson.loads(r.payload)["id"] for r in rows]


async def _write_transaction(url: str) -> asyncpg.Connection:
    """A connection with a transaction open that holds a transaction id."""
    conn = await asyncpg.connect(url)
    await conn.execute("BEGIN")
    await conn.fetchval("SELECT pg_current_xact_id()")
    return conn


async def test_write_open_in_this_database_holds_readers_back(
    workspace: WorkspaceKeys, services: Services
) -> None:
    first = (await workspace.ingest([event("file.uploaded")])).json()["ids"][0]
    holder = await _write_transaction(services.database_url)
    try:
        second = (await workspace.ingest([event("file.uploaded")])).json()["ids"][0]
        seen = await _ids_after(services, workspace.id, (0, 0))
        assert first in seen and second not in seen
    finally:
        await holder.execute("COMMIT")
        await holder.close()
    assert second in await _ids_after(services, workspace.id, (0, 0))


async def test_write_open_in_another_database_does_not(
    workspace: WorkspaceKeys, services: Services, server_url: str
) -> None:
    holder = await _write_transaction(server_url)
    try:
        ingested = (await workspace.ingest([event("file.uploaded")])).json()["ids"][0]
        assert ingested in await _ids_after(services, workspace.id, (0, 0))
    finally:
        await holder.execute("ROLLBACK")
        await holder.close()
