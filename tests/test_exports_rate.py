"""createExport is rate limited per workspace: RATE_LIMITED with retryAfter, nothing stored."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest

from auditlog.config import Settings
from auditlog.errors import ConfigError
from auditlog.model import EventFilter, Principal
from auditlog.runtime import Services
from auditlog.services import exports as export_service
from tests.conftest import (
    WorkspaceKeys,
    create_workspace_keys,
    event,
    make_settings,
    start_service,
    stop_service,
)
from tests.exports_support import CREATE

COUNT_EXPORTS = "SELECT count(*) FROM exports WHERE workspace_id = $1"
COUNT_EVENTS = """SELECT count(*) FROM audit_events
    WHERE workspace_id = $1 AND action = 'audit_log.export.created'"""


async def test_exports_over_the_limit_are_refused_and_store_nothing(
    database_url: str, data_dir: Path
) -> None:
    running = await start_service(make_settings(database_url, data_dir, exports_per_minute=3))
    try:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as http:
            ws = await create_workspace_keys(running.services, http)
            other = await create_workspace_keys(running.services, http)
            assert (await ws.ingest([event("file.uploaded")])).status_code == 202
            variables = {"input": {"format": "CSV"}}
            for _ in range(3):
                body = await ws.gql(CREATE, variables)
                assert "errors" not in body, body
            refused = await ws.gql(CREATE, variables)
            assert refused["data"] is None
            [error] = refused["errors"]
            assert error["extensions"]["code"] == "RATE_LIMITED"
            assert "at most 3 exports a minute" in error["message"]
            assert 1 <= error["extensions"]["retryAfter"] <= 60
            # Another workspace has its own allowance.
            assert "errors" not in await other.gql(CREATE, variables)
            async with running.services.pool.acquire() as conn:
                assert await conn.fetchval(COUNT_EXPORTS, ws.id) == 3
                assert await conn.fetchval(COUNT_EVENTS, ws.id) == 3
    finally:
        await stop_service(running)


async def test_concurrent_exports_cannot_race_past_the_limit(
    database_url: str, data_dir: Path
) -> None:
    """Eight creations at once with a limit of 3: the count and the insert happen
    under a per-workspace lock, so exactly three are stored."""
    running = await start_service(make_settings(database_url, data_dir, exports_per_minute=3))
    try:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as http:
            ws = await create_workspace_keys(running.services, http)
            bodies = await asyncio.gather(
                *(ws.gql(CREATE, {"input": {"format": "JSON"}}) for _ in range(8))
            )
            codes = sorted(
                b["errors"][0]["extensions"]["code"] if "errors" in b else "OK" for b in bodies
            )
            assert codes == ["OK"] * 3 + ["RATE_LIMITED"] * 5
            async with running.services.pool.acquire() as conn:
                assert await conn.fetchval(COUNT_EXPORTS, ws.id) == 3
                assert await conn.fetchval(COUNT_EVENTS, ws.id) == 3
    finally:
        await stop_service(running)


def test_the_limit_is_configurable_and_checked() -> None:
    assert Settings.from_env({"AUDITLOG_EXPORTS_PER_MINUTE": "0"}).exports_per_minute == 0
    assert Settings.from_env({}).exports_per_minute == 10
    for bad in ("-1", "ten", "1.5", "100001"):
        with pytest.raises(ConfigError, match="AUDITLOG_EXPORTS_PER_MINUTE"):
            Settings.from_env({"AUDITLOG_EXPORTS_PER_MINUTE": bad})


async def test_at_most_the_limit_of_scans_run_under_a_burst(
    workspace: WorkspaceKeys, services: Services
) -> None:
    """Thirty creations at once through the HTTP endpoint, limit 10: ten are planned
    (each plan scans every matching row) and stored; twenty are refused before any
    scan, each saying when to retry. Counted by the service's own plan counter."""
    limit = services.settings.exports_per_minute
    assert limit == 10
    batch = [event("file.uploaded", metadata={"n": i}) for i in range(500)]
    assert (await workspace.ingest(batch)).status_code == 202
    scans_before = services.export_counters.plans_started
    bodies = await asyncio.gather(
        *(workspace.gql(CREATE, {"input": {"format": "CSV"}}) for _ in range(30))
    )
    scans = services.export_counters.plans_started - scans_before
    created = [b for b in bodies if "errors" not in b]
    refused = [b["errors"][0] for b in bodies if "errors" in b]
    assert len(created) == limit
    assert {e["extensions"]["code"] for e in refused} == {"RATE_LIMITED"}
    assert len(refused) == 30 - limit
    assert all(1 <= e["extensions"]["retryAfter"] <= 60 for e in refused)
    assert scans == limit, f"{scans} scans ran for {limit} exports"
    async with services.pool.acquire() as conn:
        assert await conn.fetchval(COUNT_EXPORTS, workspace.id) == limit
        assert await conn.fetchval(COUNT_EVENTS, workspace.id) == limit


async def test_a_creation_cancelled_while_planning_gives_its_place_back(
    workspace: WorkspaceKeys, services: Services, owner: asyncpg.Connection
) -> None:
    """The request goes away while its scan waits (here on a table lock held by the
    test): nothing is stored and its reservation no longer counts."""
    principal = Principal(workspace_id=workspace.id, role="admin", key_id="key_test")
    reservations = "SELECT count(*) FROM export_reservations WHERE workspace_id = $1"
    async with owner.transaction():
        await owner.execute("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
        creating = asyncio.ensure_future(
            export_service.create_export(
                services, principal, workspace.id, EventFilter(), {}, "CSV"
            )
        )
        for _ in range(100):
            if await owner.fetchval(reservations, workspace.id) == 1:
                break
            await asyncio.sleep(0.05)
        assert await owner.fetchval(reservations, workspace.id) == 1  # reserved, now planning
        creating.cancel()
        with pytest.raises(asyncio.CancelledError):
            await creating
    for _ in range(100):
        if await owner.fetchval(reservations, workspace.id) == 0:
            break
        await asyncio.sleep(0.05)
    assert await owner.fetchval(reservations, workspace.id) == 0
    assert await owner.fetchval(COUNT_EXPORTS, workspace.id) == 0
