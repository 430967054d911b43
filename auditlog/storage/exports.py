"""Exports: plan a filtered view fixed at creation, persist it, stream its parts.

Nothing is copied at creation. `plan_export` takes a snapshot of the log
(`pg_current_snapshot()` inside a REPEATABLE READ transaction), counts the rows
and finds, with one window query that returns only boundary rows, the keyset
position ending each full part. A download re-reads one part as a keyset range
scan filtered by `pg_visible_in_snapshot(xid, snapshot)`, so it holds exactly
the rows that were committed when the export was created, never one more.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from auditlog.model import EventFilter, ExportPlan, ExportRow, TimePosition
from auditlog.storage.events import filter_sql

_COLUMNS = """workspace_id, id, format, filter, criteria, snapshot::text AS snapshot,
    retention_start, row_count, part_size, part_ends_at, part_ends_seq, created_by,
    created_at, expires_at, event_format"""


def filter_to_json(flt: EventFilter) -> dict[str, Any]:
    """The validated filter as stored JSON (exact action names, normalised values)."""
    return {
        "occurred_from": flt.occurred_from.isoformat() if flt.occurred_from else None,
        "occurred_to": flt.occurred_to.isoformat() if flt.occurred_to else None,
        "actor_email": flt.actor_email,
        "actor_id": flt.actor_id,
        "categories": flt.categories,
        "actions": flt.actions,
        "ip_network": str(flt.ip_network) if flt.ip_network is not None else None,
        "target_id": flt.target_id,
    }


def filter_from_json(data: dict[str, Any]) -> EventFilter:
    def when(key: str) -> datetime | None:
        value = data.get(key)
        return datetime.fromisoformat(value) if value else None

    network = data.get("ip_network")
    return EventFilter(
        occurred_from=when("occurred_from"),
        occurred_to=when("occurred_to"),
        actor_email=data.get("actor_email"),
        actor_id=data.get("actor_id"),
        categories=data.get("categories"),
        actions=data.get("actions"),
        ip_network=ipaddress.ip_network(network) if network else None,
        target_id=data.get("target_id"),
    )


def _snapshot_where(
    workspace_id: str, flt: EventFilter, snapshot: str, retention_start: datetime | None
) -> tuple[list[str], list[object]]:
    args: list[object] = [workspace_id]
    where = ["workspace_id = $1", *filter_sql(flt, args, retention_start)]
    args.append(snapshot)
    where.append(f"pg_visible_in_snapshot(xid, ${len(args)}::text::pg_snapshot)")
    return where, args


async def plan_export(
    conn: asyncpg.Connection,
    workspace_id: str,
    flt: EventFilter,
    *,
    retention_start: datetime | None,
    part_size: int,
) -> ExportPlan:
    """Fix the result now: snapshot, exact count, and the end position of each full part.

    One scan in newest-first order numbers the rows and returns only every
    `part_size`-th one and the last one (whose number is the count), so the
    server never holds the result, whatever its size.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot: str = await conn.fetchval("SELECT pg_current_snapshot()::text")
        where, args = _snapshot_where(workspace_id, flt, snapshot, retention_start)
        args.append(part_size)
        records = await conn.fetch(
            f"""SELECT occurred_at, seq, rn FROM (
                    SELECT occurred_at, seq, row_number() OVER w AS rn,
                           lead(seq) OVER w IS NULL AS is_last
                    FROM audit_events WHERE {" AND ".join(where)}
                    WINDOW w AS (ORDER BY occurred_at DESC, seq DESC)
                ) numbered
                WHERE rn % ${len(args)} = 0 OR is_last
                ORDER BY rn""",
            *args,
        )
    count = records[-1]["rn"] if records else 0
    ends = [TimePosition(r["occurred_at"], r["seq"]) for r in records if r["rn"] % part_size == 0]
    return ExportPlan(snapshot, retention_start, count, part_size, ends)


# Advisory lock class for "one export reservation at a time per workspace" (the
# two-key form: its keys never meet the one-key locks used elsewhere).
_EXPORT_LOCK_CLASS = 0x0A0E


async def reserve_export(
    conn: asyncpg.Connection,
    workspace_id: str,
    export_id: uuid.UUID,
    at: datetime,
    since: datetime,
    limit: int,
) -> list[datetime]:
    """Take one of the workspace's `limit` creations allowed since `since`, for the
    export `export_id` created `at`, unless all are taken.

    Returns when each creation counted against the allowance was made (exports
    stored and reservations not yet written), oldest first, as it stood before
    this one: fewer than `limit` means the reservation was made. Runs in its own
    transaction, under a per-workspace lock, so a count followed by an insert
    cannot be raced by another process. Ids are UUIDv7, time-ordered: the primary
    key's range from `since` is all that is read."""
    floor = uuid.UUID(int=(int(since.timestamp() * 1000) - 1) << 80)
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", _EXPORT_LOCK_CLASS, workspace_id
        )
        # Reservations of creations that died without giving theirs back no longer count.
        await conn.execute(
            "DELETE FROM export_reservations WHERE workspace_id = $1 AND reserved_at < $2",
            workspace_id,
            since,
        )
        # One statement, one snapshot: an export written meanwhile (its reservation
        # removed in the same transaction) is counted once, never twice or not at all.
        records = await conn.fetch(
            """SELECT created_at FROM exports
                   WHERE workspace_id = $1 AND id >= $2 AND created_at >= $3
               UNION ALL
               SELECT reserved_at FROM export_reservations
                   WHERE workspace_id = $1 AND reserved_at >= $3
               ORDER BY 1""",
            workspace_id,
            floor,
            since,
        )
        taken = [r[0] for r in records]
        if len(taken) < limit:
            await conn.execute(
                "INSERT INTO export_reservations (workspace_id, id, reserved_at)"
                " VALUES ($1, $2, $3)",
                workspace_id,
                export_id,
                at,
            )
    return taken


async def release_export_reservation(
    conn: asyncpg.Connection, workspace_id: str, export_id: uuid.UUID
) -> None:
    """Give a reservation back: its export was written (call it in that transaction),
    or its planning failed."""
    await conn.execute(
        "DELETE FROM export_reservations WHERE workspace_id = $1 AND id = $2",
        workspace_id,
        export_id,
    )


async def delete_exports_expired_before(conn: asyncpg.Connection, before: datetime) -> int:
    """Remove exports that expired before `before` (maintenance, as the owner: the
    runtime role cannot delete). Their audit events stay in the log."""
    status = await conn.execute("DELETE FROM exports WHERE expires_at < $1", before)
    return int(status.split()[-1])


async def insert_export(conn: asyncpg.Connection, row: ExportRow) -> None:
    plan = row.plan
    await conn.execute(
        """INSERT INTO exports (workspace_id, id, format, filter, criteria, snapshot,
               retention_start, row_count, part_size, part_ends_at, part_ends_seq,
               created_by, created_at, expires_at, event_format)
           VALUES ($1, $2, $3, $4, $5, $6::text::pg_snapshot, $7, $8, $9, $10, $11, $12,
                   $13, $14, $15)""",
        row.workspace_id,
        row.id,
        row.format,
        row.filter,
        filter_to_json(row.criteria),
        plan.snapshot,
        plan.retention_start,
        plan.row_count,
        plan.part_size,
        [p.occurred_at for p in plan.part_ends],
        [p.seq for p in plan.part_ends],
        row.created_by,
        row.created_at,
        row.expires_at,
        row.event_format,
    )


def _row(record: asyncpg.Record) -> ExportRow:
    ends = [
        TimePosition(at, seq)
        for at, seq in zip(record["part_ends_at"], record["part_ends_seq"], strict=True)
    ]
    return ExportRow(
        workspace_id=record["workspace_id"],
        id=record["id"],
        format=record["format"],
        filter=record["filter"],
        criteria=filter_from_json(record["criteria"]),
        plan=ExportPlan(
            snapshot=record["snapshot"],
            retention_start=record["retention_start"],
            row_count=record["row_count"],
            part_size=record["part_size"],
            part_ends=ends,
        ),
        created_by=record["created_by"],
        created_at=record["created_at"],
        expires_at=record["expires_at"],
        event_format=record["event_format"],
    )


async def read_export(
    conn: asyncpg.Connection, workspace_id: str, export_id: uuid.UUID
) -> ExportRow | None:
    record = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM exports WHERE workspace_id = $1 AND id = $2",
        workspace_id,
        export_id,
    )
    return _row(record) if record else None


async def read_exports(
    conn: asyncpg.Connection, workspace_id: str, *, limit: int, before_id: uuid.UUID | None
) -> list[ExportRow]:
    """Newest first (ids are UUIDv7), strictly older than `before_id` when given."""
    records = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM exports
            WHERE workspace_id = $1 AND ($2::uuid IS NULL OR id < $2)
            ORDER BY id DESC LIMIT $3""",
        workspace_id,
        before_id,
        limit,
    )
    return [_row(r) for r in records]


def part_query(
    row: ExportRow,
    part: int,
    retention_start: datetime | None = None,
    columns: str = "payload",
) -> tuple[str, list[object]]:
    """`retention_start`: the workspace's retention now, when it is later than the plan's;
    `columns`: what each row of the part gives (its stored payload unless told)."""
    plan = row.plan
    bounds = [b for b in (plan.retention_start, retention_start) if b is not None]
    where, args = _snapshot_where(
        row.workspace_id, row.criteria, plan.snapshot, max(bounds, default=None)
    )
    if part > 1:
        newer = plan.part_ends[part - 2]
        args += [newer.occurred_at, newer.seq]
        # The plain bound beside the row comparison lets the planner prune partitions.
        where.append(f"occurred_at <= ${len(args) - 1}")
        where.append(f"(occurred_at, seq) < (${len(args) - 1}, ${len(args)})")
    if part <= len(plan.part_ends):
        last = plan.part_ends[part - 1]
        args += [last.occurred_at, last.seq]
        where.append(f"occurred_at >= ${len(args) - 1}")
        where.append(f"(occurred_at, seq) >= (${len(args) - 1}, ${len(args)})")
    args.append(plan.part_size)
    sql = f"""SELECT {columns} FROM audit_events WHERE {" AND ".join(where)}
              ORDER BY occurred_at DESC, seq DESC LIMIT ${len(args)}"""
    return sql, args


async def stream_export_part(
    conn: asyncpg.Connection,
    row: ExportRow,
    part: int,
    *,
    batch_size: int = 2000,
    retention_start: datetime | None = None,
) -> AsyncGenerator[list[str], None]:
    """The stored payloads of one part, newest first, in batches from a server-side cursor."""
    if not 1 <= part <= row.part_count:
        raise ValueError(f"part must be between 1 and {row.part_count}")
    sql, args = part_query(row, part, retention_start)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        cursor = await conn.cursor(sql, *args)
        # The database reads the next batch while the caller encodes this one.
        pending = asyncio.ensure_future(cursor.fetch(batch_size))
        try:
            while batch := await pending:
                pending = asyncio.ensure_future(cursor.fetch(batch_size))
                await asyncio.sleep(0)  # let the fetch go out before the caller's work
                yield [record[0] for record in batch]
        finally:
            # A download closed early (the client left) still has a fetch in
            # flight. Cancelling it left asyncpg's protocol busy, so the ROLLBACK
            # that ends the transaction could fail with "another operation is in
            # progress"; it is one batch: let it finish. (Callers close this
            # generator explicitly, see services.exports.stream_part.)
            if not pending.done():
                with contextlib.suppress(Exception):
                    await pending


@dataclass(frozen=True, slots=True)
class ExportedEvent:
    """An event of an export's files and its ingest position, which names its leaf."""

    id: uuid.UUID
    xid: int
    seq: int


async def read_export_events(
    conn: asyncpg.Connection, row: ExportRow, *, retention_start: datetime | None = None
) -> list[ExportedEvent]:
    """Every event of the export's files, part by part in file order: the reads a download
    makes (same snapshot, filter and retention), naming the rows instead of giving them."""
    out: list[ExportedEvent] = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for part in range(1, row.part_count + 1):
            sql, args = part_query(
                row, part, retention_start, columns="id, xid::text::bigint AS xid, seq"
            )
            out.extend(
                ExportedEvent(r["id"], r["xid"], r["seq"]) for r in await conn.fetch(sql, *args)
            )
    return out
