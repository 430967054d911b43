"""Workspaces: creation, plans and retention, legal holds."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from auditlog.errors import BadInputError, ForbiddenError, NotFoundError
from auditlog.model import Plan, WorkspaceRow, format_timestamp
from auditlog.services.ingest import Ingestor
from auditlog.services.service_events import audited
from auditlog.storage import retention as retention_store
from auditlog.storage import workspaces as ws_store

_WORKSPACE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def plan_retention(name: str, retention_days: int | None) -> tuple[Plan, int | None]:
    """Validate a plan and custom retention: custom days are for ENTERPRISE only."""
    try:
        plan = Plan(name.upper())
    except ValueError:
        raise BadInputError("plan", "must be early_access, professional or enterprise") from None
    if retention_days is not None:
        if plan != Plan.ENTERPRISE:
            raise BadInputError(
                "retention-days", "a custom retention is available on the enterprise plan only"
            )
        if not 1 <= retention_days <= 36500:
            raise BadInputError("retention-days", "must be between 1 and 36500")
        return plan, retention_days
    return plan, ws_store.DEFAULT_RETENTION_DAYS[plan]


async def require_plan(pool: asyncpg.Pool, workspace_id: str, plan: Plan, feature: str) -> None:
    """ForbiddenError unless the workspace is on `plan`, naming `feature` and its plan."""
    async with pool.acquire() as conn:
        workspace = await ws_store.read_workspace(conn, workspace_id)
    if workspace is None:
        raise NotFoundError("workspace not found")
    if workspace.plan != plan:
        raise ForbiddenError(
            f"{feature} needs the {plan} plan; this workspace is on {workspace.plan}"
        )


async def create_workspace(
    pool: asyncpg.Pool, name: str, plan: str, retention_days: int | None = None
) -> WorkspaceRow:
    if not _WORKSPACE_ID.match(name):
        raise BadInputError(
            "name", "use 1 to 63 lower-case letters, digits, '-' or '_', starting alphanumeric"
        )
    plan, days = plan_retention(plan, retention_days)
    async with pool.acquire() as conn:
        try:
            return await ws_store.insert_workspace(conn, name, plan, days)
        except asyncpg.UniqueViolationError:
            raise BadInputError("name", f"workspace {name!r} already exists") from None


@dataclass(frozen=True)
class PlanChange:
    row: WorkspaceRow
    previous_retention_days: int | None  # None: it was unlimited

    @property
    def cut(self) -> bool:
        """Whether the retention got shorter (what the grace period delays)."""
        new, old = self.row.retention_days, self.previous_retention_days
        return new is not None and (old is None or new < old)


async def change_plan(
    pool: asyncpg.Pool, name: str, plan: str, retention_days: int | None = None
) -> PlanChange:
    plan, days = plan_retention(plan, retention_days)
    async with pool.acquire() as conn, conn.transaction():
        before = await ws_store.lock_workspace(conn, name)
        row = await ws_store.update_workspace_plan(conn, name, plan, days)
    if before is None or row is None:
        raise NotFoundError(f"no workspace {name!r}")
    return PlanChange(row, before.retention_days)


async def set_plan(
    pool: asyncpg.Pool, name: str, plan: str, retention_days: int | None = None
) -> WorkspaceRow:
    return (await change_plan(pool, name, plan, retention_days)).row


def _days(days: int | None) -> str:
    return "unlimited" if days is None else f"{days} days"


def retention_cut_notice(change: PlanChange, grace_days: int, now: datetime) -> str | None:
    """When a cut starts deleting (None when the retention did not get shorter)."""
    if not change.cut:
        return None
    head = (
        f"retention cut from {_days(change.previous_retention_days)} to "
        f"{_days(change.row.retention_days)}: events older than "
        f"{_days(change.row.retention_days)} will be purged"
    )
    if grace_days == 0:
        return f"{head} at the next maintenance pass (no grace period)"
    # Rounded up to the minute: no pass deletes anything before the time shown.
    start = now + timedelta(days=grace_days)
    start = datetime.fromtimestamp(math.ceil(start.timestamp() / 60) * 60, UTC)
    return f"{head} from {start:%Y-%m-%d %H:%M} UTC (after the {grace_days}-day grace period)"


HOLD_REASON_MAX = 500


async def place_hold(
    conn: asyncpg.Connection,
    ingestor: Ingestor,
    name: str,
    reason: str,
    actor: dict[str, Any] | None = None,
) -> retention_store.HoldRecord:
    """Place a legal hold on conn, an owner connection (the runtime role may not)."""
    if not reason.strip() or len(reason) > HOLD_REASON_MAX:
        raise BadInputError("reason", f"must be 1 to {HOLD_REASON_MAX} characters")
    async with audited(conn, ingestor) as audit:
        await retention_store.lock_holds(conn, name)
        if await ws_store.read_workspace(conn, name) is None:
            raise NotFoundError(f"no workspace {name!r}")
        latest = await retention_store.read_latest_hold(conn, name)
        if latest is not None and latest.action == "placed":
            raise BadInputError(
                "hold",
                f"workspace {name!r} is already under a legal hold "
                f"(placed {latest.at:%Y-%m-%d %H:%M} UTC: {latest.reason})",
            )
        hold = await retention_store.insert_hold(conn, name, "placed", reason)
        await audit.record(
            name,
            "audit_log.retention.hold_placed",
            actor=actor,
            targets=[{"type": "workspace", "id": name, "name": name}],
            metadata={"reason": reason},
        )
    return hold


async def release_hold(
    conn: asyncpg.Connection, ingestor: Ingestor, name: str, actor: dict[str, Any] | None = None
) -> retention_store.HoldRecord:
    """Lift the legal hold on conn, an owner connection; returns the placement lifted."""
    async with audited(conn, ingestor) as audit:
        await retention_store.lock_holds(conn, name)
        if await ws_store.read_workspace(conn, name) is None:
            raise NotFoundError(f"no workspace {name!r}")
        placed = await retention_store.read_latest_hold(conn, name)
        if placed is None or placed.action != "placed":
            raise BadInputError("release", f"workspace {name!r} is not under a legal hold")
        await retention_store.insert_hold(conn, name, "released", None)
        await audit.record(
            name,
            "audit_log.retention.hold_released",
            actor=actor,
            targets=[{"type": "workspace", "id": name, "name": name}],
            metadata={"reason": placed.reason, "placedAt": format_timestamp(placed.at)},
        )
    return placed
