"""createExport is rate limited per workspace: RATE_LIMITED with retryAfter, nothing stored."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from auditlog.config import Settings
from auditlog.errors import ConfigError
from tests.conftest import (
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
