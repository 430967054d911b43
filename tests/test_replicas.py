"""Read replicas (DATABASE_READ_URL) against a real hot standby of the test's own.

What `pg_current_snapshot()` gives on a standby (checked here, PostgreSQL 15):
the replayed state, with xmin the oldest transaction the standby has not seen
end, but no running transaction in its list (xip); the primary's watermark
formula would then pass a write still open on the primary. The watermark takes
xmin there, and a reader on a standby never passes what it has replayed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from auditlog.config import Settings
from auditlog.errors import ConfigError
from auditlog.model import ExportRow
from auditlog.runtime import Services, migrate
from auditlog.services import exports as export_service
from auditlog.storage.events import read_safe_watermark
from auditlog.storage.live import LiveEvent, read_live_events
from tests.conftest import (
    RunningService,
    WorkspaceKeys,
    create_workspace_keys,
    event,
    make_settings,
    start_service,
    stop_service,
)
from tests.exports_support import ONE, create_export, download
from tests.live_client import live_client
from tests.replica_servers import ReplicatedPostgres, replica_unavailable_reason, wait_replayed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

FILTER = {"actions": ["file.uploaded"]}
PAGE = """query ($filter: AuditEventFilter) {
  auditEvents(filter: $filter, first: 500) { edges { cursor node { id } } }
}"""


@dataclass
class Replicated:
    servers: ReplicatedPostgres
    primary_url: str
    standby_url: str
    running: RunningService
    http: httpx.AsyncClient

    @property
    def services(self) -> Services:
        return self.running.services

    async def replayed(self) -> None:
        await wait_replayed(self.primary_url, self.standby_url)


@pytest.fixture(scope="module")
async def replicated(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Replicated]:
    reason = replica_unavailable_reason()
    if reason is not None:
        pytest.skip(f"no hot standby of our own can run here: {reason}")
    servers = ReplicatedPostgres()
    try:
        servers.start()
        admin = await asyncpg.connect(servers.url(servers.primary))
        try:
            await admin.execute("CREATE DATABASE auditlog")
        finally:
            await admin.close()
        primary_url = servers.url(servers.primary, "auditlog")
        standby_url = servers.url(servers.standby, "auditlog")
        await migrate(primary_url)
        await wait_replayed(servers.url(servers.primary), servers.url(servers.standby))
        settings = make_settings(
            primary_url,
            Path(tmp_path_factory.mktemp("replicas")),
            database_read_urls=(standby_url,),
            live_poll_seconds=0.5,
        )
        running = await start_service(settings)
        try:
            async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as http:
                yield Replicated(servers, primary_url, standby_url, running, http)
        finally:
            await stop_service(running)
    finally:
        servers.cleanup()


async def ingest(workspace: WorkspaceKeys, count: int) -> list[str]:
    response = await workspace.ingest([event("file.uploaded") for _ in range(count)])
    assert response.status_code == 202, response.text
    ids: list[str] = response.json()["ids"]
    return ids


async def ids_since(conn: asyncpg.Connection, workspace_id: str) -> list[str]:
    """The workspace's file.uploaded events a resuming reader gets, in ingest order."""
    rows = await resumed(conn, workspace_id)
    return [orjson.loads(r.payload)["id"] for r in rows if r.action == "file.uploaded"]


async def resumed(conn: asyncpg.Connection, workspace_id: str) -> list[LiveEvent]:
    """What a reader resuming from the start reads on `conn`: final events, in order."""
    return await read_live_events(
        conn, workspace_id, after=(0, 0), limit=1000, retention_start=None
    )


async def shown_on_standby(services: Services, row: ExportRow) -> bool:
    """The fence of an export's downloads, asked of the standby's pool."""
    replica = services.read_pool()
    assert replica is not services.pool
    async with replica.acquire() as conn:
        return await export_service._shows_export(row)(conn)


async def page_ids(workspace: WorkspaceKeys) -> list[str]:
    body = await workspace.gql(PAGE, {"filter": FILTER})
    assert "errors" not in body, body
    return [e["node"]["id"] for e in reversed(body["data"]["auditEvents"]["edges"])]


async def test_standby_snapshot_lists_no_running_write_and_the_watermark_holds_readers(
    replicated: Replicated,
) -> None:
    r = replicated
    workspace = await create_workspace_keys(r.services, r.http)
    # A write open on the primary that has taken an xid but written nothing yet:
    # the standby learns of it only from the later xids it replays.
    holder = await asyncpg.connect(r.primary_url)
    standby = await asyncpg.connect(r.standby_url)
    try:
        await holder.execute("BEGIN")
        held = int(await holder.fetchval("SELECT pg_current_xact_id()::text::bigint"))
        later = await ingest(workspace, 3)  # committed after `held` began
        await r.replayed()

        assert await standby.fetchval("SELECT pg_is_in_recovery()")
        assert (
            await standby.fetchval("SELECT count(*) FROM pg_snapshot_xip(pg_current_snapshot())")
            == 0
        )
        xmin = int(await standby.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))
        assert xmin <= held, "the standby's snapshot must still count the open write as running"
        primary_formula = await standby.fetchval(
            """SELECT coalesce((SELECT min(x) FROM pg_snapshot_xip(pg_current_snapshot()) x),
                               pg_snapshot_xmax(pg_current_snapshot()))::text::bigint"""
        )
        assert primary_formula > held, "the primary's formula would pass the open write here"

        assert await read_safe_watermark(standby) <= (held, 0)
        # Committed and replayed, so a query shows them; a resuming reader does not yet.
        assert set(later) <= set(await page_ids(workspace))
        assert not set(later) & set(await ids_since(standby, workspace.id))
    finally:
        await holder.execute("COMMIT")
        await holder.close()
    try:
        await r.replayed()
        assert await ids_since(standby, workspace.id) == later
    finally:
        await standby.close()


async def test_paused_replay_never_passed_and_read_your_writes_fall_back_to_the_primary(
    replicated: Replicated,
) -> None:
    r = replicated
    workspace = await create_workspace_keys(r.services, r.http)
    before = await ingest(workspace, 5)
    await r.replayed()
    standby = await asyncpg.connect(r.standby_url)
    try:
        await standby.execute("SELECT pg_wal_replay_pause()")
        while await standby.fetchval("SELECT pg_get_wal_replay_pause_state()") != "paused":
            pass
        after = await ingest(workspace, 5)

        # Queries read the standby: what it has replayed, nothing beyond.
        assert await page_ids(workspace) == before
        watermark = await read_safe_watermark(standby)
        assert await ids_since(standby, workspace.id) == before
        rows = await resumed(standby, workspace.id)
        assert all((row.xid, row.seq) < watermark for row in rows)
        assert await read_safe_watermark(standby) == watermark  # replay paused: it stays

        # A subscription resuming from a cursor catches up past what the standby
        # holds: from the primary, in order, no gap, no duplicate.
        body = await workspace.gql(PAGE, {"filter": FILTER})
        first_cursor = body["data"]["auditEvents"]["edges"][-1]["cursor"]
        async with live_client(r.running.base_url, workspace.admin) as client:
            op = await client.subscribe({"filter": FILTER, "after": first_cursor})
            edges = await client.edges(op, len(before) - 1 + len(after))
            assert [e["node"]["id"] for e in edges] == before[1:] + after
            await client.quiet(op, 0.5)

        # Read-your-writes: an export made a moment ago is not on the standby yet.
        export = await create_export(workspace, "JSON", FILTER)
        row = await export_service.find_export(r.services, workspace.id, uuid.UUID(export["id"]))
        assert row is not None and row.plan.row_count == 10
        assert not await shown_on_standby(r.services, row)
        found = await workspace.gql(ONE, {"id": export["id"]})
        assert found["data"]["export"]["rowCount"] == 10
        content = (await download(r.http, export["files"][0]["url"])).content
        assert [e["id"] for e in orjson.loads(content)] == list(reversed(before + after))
    finally:
        await standby.execute("SELECT pg_wal_replay_resume()")
    try:
        await r.replayed()
        assert await page_ids(workspace) == before + after
        # Replayed: the standby shows the export, and so serves its files, the same bytes.
        assert await shown_on_standby(r.services, row)
        assert (await download(r.http, export["files"][0]["url"])).content == content
    finally:
        await standby.close()


async def test_a_standby_down_sends_reads_to_the_primary(replicated: Replicated) -> None:
    r = replicated
    workspace = await create_workspace_keys(r.services, r.http)
    ids = await ingest(workspace, 3)
    replicas = r.services.replicas
    assert replicas is not None and replicas.healthy == 1
    r.servers.stop_standby()
    await replicas.check()
    assert replicas.healthy == 0
    assert r.services.read_pool() is r.services.pool
    assert await page_ids(workspace) == ids


def test_read_urls_are_parsed_and_checked() -> None:
    env = {"DATABASE_URL": "postgresql://p/db"}
    both = "postgresql://a:5432/db, postgresql://b:5433/db"
    settings = Settings.from_env({**env, "DATABASE_READ_URL": both})
    assert settings.database_read_urls == ("postgresql://a:5432/db", "postgresql://b:5433/db")
    assert Settings.from_env(env).database_read_urls == ()
    with pytest.raises(ConfigError, match="DATABASE_READ_URL"):
        Settings.from_env({**env, "DATABASE_READ_URL": "redis://a"})
    with pytest.raises(ConfigError, match="needs DATABASE_URL"):
        Settings.from_env({"DATABASE_READ_URL": "postgresql://a/db"})
