"""Workspaces: plan and retention."""

from __future__ import annotations

import asyncpg

from auditlog.model import Plan, WorkspaceRow

DEFAULT_RETENTION_DAYS: dict[Plan, int | None] = {
    Plan.EARLY_ACCESS: 90,
    Plan.PROFESSIONAL: 365,
    Plan.ENTERPRISE: None,
}


def _row(record: asyncpg.Record) -> WorkspaceRow:
    return WorkspaceRow(
        id=record["id"],
        plan=Plan(record["plan"]),
        retention_days=record["retention_days"],
        created_at=record["created_at"],
    )


async def insert_workspace(
    conn: asyncpg.Connection, workspace_id: str, plan: Plan, retention_days: int | None
) -> WorkspaceRow:
    record = await conn.fetchrow(
        """INSERT INTO workspaces (id, plan, retention_days) VALUES ($1, $2, $3)
           RETURNING id, plan, retention_days, created_at""",
        workspace_id,
        plan,
        retention_days,
    )
    assert record is not None
    return _row(record)


async def update_workspace_plan(
    conn: asyncpg.Connection, workspace_id: str, plan: Plan, retention_days: int | None
) -> WorkspaceRow | None:
    record = await conn.fetchrow(
        """UPDATE workspaces SET plan = $2, retention_days = $3, updated_at = now()
           WHERE id = $1 RETURNING id, plan, retention_days, created_at""",
        workspace_id,
        plan,
        retention_days,
    )
    return _row(record) if record else None


async def lock_workspace(conn: asyncpg.Connection, workspace_id: str) -> WorkspaceRow | None:
    """The workspace as it is, locked against other changes until the transaction ends."""
    record = await conn.fetchrow(
        "SELECT id, plan, retention_days, created_at FROM workspaces WHERE id = $1 FOR UPDATE",
        workspace_id,
    )
    return _row(record) if record else None


async def read_workspace(conn: asyncpg.Connection, workspace_id: str) -> WorkspaceRow | None:
    record = await conn.fetchrow(
        "SELECT id, plan, retention_days, created_at FROM workspaces WHERE id = $1",
        workspace_id,
    )
    return _row(record) if record else None


async def read_workspaces(
    conn: asyncpg.Connection, workspace_ids: list[str]
) -> dict[str, WorkspaceRow]:
    records = await conn.fetch(
        "SELECT id, plan, retention_days, created_at FROM workspaces WHERE id = ANY($1::text[])",
        workspace_ids,
    )
    return {r["id"]: _row(r) for r in records}
