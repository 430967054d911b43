"""Partitions and the retention purge: the SQL of maintenance.

Every function here runs on an owner connection (maintenance), never on the
runtime pool: the runtime role may not execute the purge functions (050_retention.sql).
Each call is its own short transaction unless the caller opens one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class PartitionRange:
    name: str
    range_from: datetime
    range_to: datetime


@dataclass(frozen=True, slots=True)
class LimitedWorkspace:
    """A workspace whose retention is finite: its old events expire."""

    id: str
    retention_days: int


@dataclass(frozen=True, slots=True)
class PurgeRecord:
    """One line of the purge log."""

    method: str  # "rows" or "partition"
    workspace_ids: list[str]
    partition_name: str | None
    purged_before: datetime
    events_deleted: int
    ids_deleted: int


async def ensure_month_partition(conn: asyncpg.Connection, day: date) -> str:
    """The name of the partition holding `day`, created if it was missing."""
    name: str = await conn.fetchval("SELECT auditlog_ensure_partition($1)", day)
    return name


async def read_partitions(conn: asyncpg.Connection) -> list[PartitionRange]:
    records = await conn.fetch(
        "SELECT partition_name, range_from, range_to FROM auditlog_partitions()"
    )
    return [PartitionRange(r["partition_name"], r["range_from"], r["range_to"]) for r in records]


async def partition_expired(conn: asyncpg.Connection, partition: str) -> bool:
    """Whether every workspace with rows in the partition has expired them all."""
    return bool(await conn.fetchval("SELECT auditlog_partition_expired($1)", partition))


async def read_partition_workspaces(conn: asyncpg.Connection, partition: str) -> list[str]:
    records = await conn.fetch("SELECT w FROM auditlog_partition_workspaces($1) AS w", partition)
    return [r["w"] for r in records]


async def count_partition_events_by_workspace(
    conn: asyncpg.Connection, partition: str
) -> dict[str, int]:
    """Events per workspace in one partition (for the purge's audit events)."""
    if not re.fullmatch(r"audit_events_\d{4}_\d{2}", partition):
        raise ValueError(f"not an event partition: {partition!r}")
    records = await conn.fetch(
        f'SELECT workspace_id, count(*) AS n FROM "{partition}" GROUP BY workspace_id'
    )
    return {r["workspace_id"]: r["n"] for r in records}


async def count_partition_events(conn: asyncpg.Connection, partition: str) -> int:
    count: int = await conn.fetchval("SELECT auditlog_partition_rows($1)", partition)
    return count


async def drop_expired_partition(
    conn: asyncpg.Connection, partition: str, *, lock_timeout_ms: int
) -> bool:
    """Detach and drop the partition if it is still expired under the parent's lock.

    Raises asyncpg.LockNotAvailableError when the lock is busy (the caller retries).
    """
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        return bool(await conn.fetchval("SELECT auditlog_drop_expired_partition($1)", partition))


async def read_limited_workspaces(conn: asyncpg.Connection) -> list[LimitedWorkspace]:
    records = await conn.fetch(
        "SELECT id, retention_days FROM workspaces WHERE retention_days IS NOT NULL ORDER BY id"
    )
    return [LimitedWorkspace(r["id"], r["retention_days"]) for r in records]


async def read_purge_bound(conn: asyncpg.Connection, workspace_id: str) -> datetime | None:
    """The workspace's purge bound now: older events are expired. It follows the
    longest retention in force during the grace window; None: nothing may go."""
    bound: datetime | None = await conn.fetchval(
        "SELECT auditlog_purge_bound($1, NULL)", workspace_id
    )
    return bound


async def purge_events_batch(
    conn: asyncpg.Connection, workspace_id: str, before: datetime | None, batch: int
) -> tuple[int, int]:
    """Delete at most `batch` expired events of one workspace (older than `before`
    too, when given) with their ledger ids; returns (events, ids) deleted."""
    record = await conn.fetchrow(
        "SELECT events_deleted, ids_deleted FROM auditlog_purge_events($1, $2, $3)",
        workspace_id,
        before,
        batch,
    )
    assert record is not None
    return int(record["events_deleted"]), int(record["ids_deleted"])


async def purge_event_ids_batch(
    conn: asyncpg.Connection, workspace_id: str, before: datetime, batch: int
) -> int:
    """Delete at most `batch` expired ledger ids of one workspace older than `before`."""
    deleted: int = await conn.fetchval(
        "SELECT auditlog_purge_event_ids($1, $2, $3)", workspace_id, before, batch
    )
    return deleted


async def insert_purge_record(conn: asyncpg.Connection, record: PurgeRecord) -> None:
    await conn.execute(
        """INSERT INTO retention_purge_log
               (method, workspace_ids, partition_name, purged_before, events_deleted, ids_deleted)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        record.method,
        record.workspace_ids,
        record.partition_name,
        record.purged_before,
        record.events_deleted,
        record.ids_deleted,
    )


async def read_purge_records(conn: asyncpg.Connection, workspace_id: str) -> list[PurgeRecord]:
    records = await conn.fetch(
        """SELECT method, workspace_ids, partition_name, purged_before, events_deleted,
                  ids_deleted
           FROM retention_purge_log WHERE $1 = ANY(workspace_ids) ORDER BY id""",
        workspace_id,
    )
    return [
        PurgeRecord(
            r["method"],
            list(r["workspace_ids"]),
            r["partition_name"],
            r["purged_before"],
            r["events_deleted"],
            r["ids_deleted"],
        )
        for r in records
    ]


async def set_retention_grace(conn: asyncpg.Connection, days: int) -> None:
    """The grace period the purge functions apply on this (owner) session."""
    await conn.execute(
        "SELECT set_config('auditlog.retention_grace_days', $1, false)", str(int(days))
    )


async def observe_plan_history(conn: asyncpg.Connection) -> int:
    """Mark the plan changes no pass has seen yet as seen now: a cut counts from
    then (075_retention_grace.sql). Returns how many were new."""
    added: int = await conn.fetchval("SELECT auditlog_observe_plan_history()")
    return added


async def read_held_workspaces(conn: asyncpg.Connection) -> list[str]:
    """Workspaces held at some time during the grace window: nothing of theirs is purged."""
    records = await conn.fetch(
        "SELECT DISTINCT workspace_id FROM retention_holds "
        "WHERE auditlog_retention_held(workspace_id) ORDER BY workspace_id"
    )
    return [r["workspace_id"] for r in records]


@dataclass(frozen=True, slots=True)
class HoldRecord:
    """One placement or release of a legal hold."""

    workspace_id: str
    action: str  # "placed" or "released"
    reason: str | None
    at: datetime
    by: str


def _hold(record: asyncpg.Record) -> HoldRecord:
    return HoldRecord(
        record["workspace_id"], record["action"], record["reason"], record["at"], record["by"]
    )


async def lock_holds(conn: asyncpg.Connection, workspace_id: str) -> None:
    """Take the workspace's hold lock (the table's trigger takes the same) until commit."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('auditlog_retention_hold'), hashtext($1))",
        workspace_id,
    )


async def read_latest_hold(conn: asyncpg.Connection, workspace_id: str) -> HoldRecord | None:
    """The workspace's latest hold row: held now when it is a placement."""
    record = await conn.fetchrow(
        """SELECT workspace_id, action, reason, at, by FROM retention_holds
           WHERE workspace_id = $1 ORDER BY id DESC LIMIT 1""",
        workspace_id,
    )
    return _hold(record) if record else None


async def insert_hold(
    conn: asyncpg.Connection, workspace_id: str, action: str, reason: str | None
) -> HoldRecord:
    record = await conn.fetchrow(
        """INSERT INTO retention_holds (workspace_id, action, reason) VALUES ($1, $2, $3)
           RETURNING workspace_id, action, reason, at, by""",
        workspace_id,
        action,
        reason,
    )
    assert record is not None
    return _hold(record)


async def try_lock_maintenance(conn: asyncpg.Connection, key: int) -> bool:
    """Take the session-level maintenance lock if nobody holds it."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))


async def unlock_maintenance(conn: asyncpg.Connection, key: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", key)
