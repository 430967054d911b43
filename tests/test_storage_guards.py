"""The database itself refuses to rewrite the log."""

from __future__ import annotations

import asyncpg
import pytest

from auditlog.runtime import Services
from auditlog.storage.database import create_pool
from tests.conftest import WorkspaceKeys, event


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET action = 'x' WHERE workspace_id = $1",
        "DELETE FROM audit_events WHERE workspace_id = $1",
        "UPDATE audit_event_ids SET occurred_at = now() WHERE workspace_id = $1",
        "DELETE FROM audit_event_ids WHERE workspace_id = $1",
    ],
)
async def test_runtime_role_cannot_change_events(
    workspace: WorkspaceKeys, services: Services, statement: str
) -> None:
    await workspace.ingest([event()])
    async with services.pool.acquire() as conn:
        assert await conn.fetchval("SELECT current_user") == "auditlog_runtime"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement, workspace.id)


async def test_runtime_role_cannot_truncate(services: Services) -> None:
    async with services.pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("TRUNCATE audit_events")


async def test_trigger_refuses_even_the_owner(workspace: WorkspaceKeys, services: Services) -> None:
    await workspace.ingest([event()])
    conn = await asyncpg.connect(services.database_url)
    try:
        for statement in (
            "UPDATE audit_events SET action = 'x' WHERE workspace_id = $1",
            "DELETE FROM audit_events WHERE workspace_id = $1",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(statement, workspace.id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("TRUNCATE audit_events")
        partition = await conn.fetchval(
            "SELECT tableoid::regclass::text FROM audit_events WHERE workspace_id = $1 LIMIT 1",
            workspace.id,
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(f'TRUNCATE "{partition}"')
    finally:
        await conn.close()


async def test_a_released_connection_comes_back_clean(database_url: str) -> None:
    """Pooled connections go back without asyncpg's reset query: a transaction
    left open is still rolled back, and the next user is the runtime role with
    the service's settings."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE left_behind (x int) ON COMMIT DROP")
            assert conn.is_in_transaction()
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('pg_temp.left_behind')") is None
            assert await conn.fetchval("SELECT current_user") == "auditlog_runtime"
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
            assert await conn.fetchval("SHOW TimeZone") == "UTC"
    finally:
        await pool.close()
