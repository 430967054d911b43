"""Immutability enforced by PostgreSQL: what the runtime role cannot do, and the
narrow purge path that is the only way past the append-only guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from auditlog.runtime import Services
from auditlog.services import workspaces as workspace_service
from tests.conftest import WorkspaceKeys, create_workspace_keys, event


async def a_partition(services: Services, workspace: WorkspaceKeys) -> str:
    await workspace.ingest([event()])
    async with services.pool.acquire() as conn:
        name: str = await conn.fetchval(
            "SELECT tableoid::regclass::text FROM audit_events WHERE workspace_id = $1 LIMIT 1",
            workspace.id,
        )
    return name


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE audit_events ADD COLUMN note text",
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
        "ALTER TABLE audit_events DETACH PARTITION {partition}",
        "ALTER TABLE {partition} RENAME TO gone",
        "DROP TABLE audit_events",
        "DROP TABLE {partition}",
        "DROP TRIGGER audit_events_append_only ON audit_events",
        "TRUNCATE {partition}",
        "DELETE FROM {partition}",
        "UPDATE {partition} SET action = 'x'",
        "DROP TABLE audit_event_ids",
        "CREATE TABLE public.sneaky (x int)",
        "CREATE OR REPLACE FUNCTION auditlog_refuse_change() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$",
        "SELECT * FROM auditlog_purge_events('{workspace}', NULL, 10)",
        "SELECT auditlog_purge_event_ids('{workspace}', now(), 10)",
        "SELECT auditlog_drop_expired_partition('{partition}')",
        "INSERT INTO retention_purge_log (method, workspace_ids, purged_before, "
        "events_deleted, ids_deleted) VALUES ('rows', '{{x}}', now(), 0, 0)",
        "DELETE FROM workspace_plan_history",
        # Retention's grace and holds (075_retention_grace.sql) are the owner's too.
        "SELECT auditlog_observe_plan_history()",
        "SELECT auditlog_purge_retention_days('{workspace}')",
        "INSERT INTO workspace_plan_history_seen (workspace_id, changed_at, plan) "
        "VALUES ('{workspace}', now() - interval '1 year', 'ENTERPRISE')",
        "INSERT INTO retention_holds (workspace_id, action) VALUES ('{workspace}', 'released')",
        "DELETE FROM retention_holds",
    ],
)
async def test_runtime_role_cannot_alter_drop_or_purge(
    services: Services, workspace: WorkspaceKeys, statement: str
) -> None:
    partition = await a_partition(services, workspace)
    sql = statement.format(partition=partition, workspace=workspace.id)
    async with services.pool.acquire() as conn:
        assert await conn.fetchval("SELECT current_user") == "auditlog_runtime"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(sql)


async def test_runtime_role_cannot_switch_the_guard_off(
    services: Services, workspace: WorkspaceKeys
) -> None:
    await workspace.ingest([event()])
    async with services.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL auditlog.purge = 'on'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM audit_events WHERE workspace_id = $1", workspace.id)


async def test_purge_function_never_deletes_inside_retention(
    services: Services, http: httpx.AsyncClient, owner: asyncpg.Connection
) -> None:
    unlimited = await create_workspace_keys(services, http, "enterprise")
    limited = await create_workspace_keys(services, http, "professional")
    old = (datetime.now(UTC) - timedelta(days=300)).isoformat()
    for ws in (unlimited, limited):
        assert (await ws.ingest([event(occurredAt=old)])).status_code == 202
    for ws in (unlimited, limited):
        # Even asked to purge everything before tomorrow, it keeps what retention keeps.
        deleted = await owner.fetchrow(
            "SELECT * FROM auditlog_purge_events($1, now() + interval '1 day', 1000)", ws.id
        )
        assert tuple(deleted) == (0, 0)
        ids = await owner.fetchval(
            "SELECT auditlog_purge_event_ids($1, now() + interval '1 day', 1000)", ws.id
        )
        assert ids == 0
    with pytest.raises(asyncpg.InvalidParameterValueError, match="batch"):
        await owner.fetchrow("SELECT * FROM auditlog_purge_events($1, NULL, 0)", limited.id)


async def test_the_guard_is_back_on_after_the_purge_function_returns(
    services: Services, workspace: WorkspaceKeys, owner: asyncpg.Connection
) -> None:
    await workspace.ingest([event()])
    async with owner.transaction():
        await owner.fetchrow("SELECT * FROM auditlog_purge_events($1, NULL, 10)", workspace.id)
        assert await owner.fetchval("SELECT current_setting('auditlog.purge', true)") in ("", None)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await owner.execute("DELETE FROM audit_events WHERE workspace_id = $1", workspace.id)


async def test_purge_log_and_plan_history_are_append_only_even_for_the_owner(
    services: Services, workspace: WorkspaceKeys, owner: asyncpg.Connection
) -> None:
    await workspace_service.set_plan(services.pool, workspace.id, "professional")
    history = await owner.fetch(
        "SELECT plan, retention_days, changed_by FROM workspace_plan_history "
        "WHERE workspace_id = $1 ORDER BY changed_at",
        workspace.id,
    )
    assert [(r["plan"], r["retention_days"]) for r in history] == [
        ("ENTERPRISE", None),
        ("PROFESSIONAL", 365),
    ]
    await owner.execute(
        """INSERT INTO retention_purge_log
               (method, workspace_ids, purged_before, events_deleted, ids_deleted)
           VALUES ('rows', ARRAY[$1], now(), 0, 0)""",
        workspace.id,
    )
    for statement in (
        "DELETE FROM workspace_plan_history WHERE workspace_id = $1",
        "UPDATE workspace_plan_history SET plan = 'ENTERPRISE' WHERE workspace_id = $1",
        "DELETE FROM retention_purge_log WHERE $1 = ANY(workspace_ids)",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await owner.execute(statement, workspace.id)
