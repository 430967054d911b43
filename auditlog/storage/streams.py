"""Streaming destinations: definitions, delivery cursors, leases and worker heartbeats.

Every write that a worker makes on behalf of a lease is fenced by
`lease_owner = $worker AND lease_until > now()`: a worker whose lease expired
can no longer move the cursor, so two workers never both own a destination.
A cursor advance is also fenced by `cursor_epoch`, which a replay increments:
a batch read before the replay cannot move the cursor past the replayed position.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg

from auditlog.storage.events import INGEST_ORDER_AFTER

_COLUMNS = """workspace_id, id, name, kind, categories, config, secrets, status, generation,
    cursor_xid, cursor_seq, last_delivered_at, last_error, attempts, retry_at, created_at,
    checkpoint_size, checkpoint_delivered_at, format, cursor_epoch"""


@dataclass(frozen=True)
class DestinationRow:
    workspace_id: str
    id: uuid.UUID
    name: str
    kind: str
    categories: list[str]
    config: dict[str, Any]
    secrets: bytes
    status: str
    generation: int
    cursor_xid: int
    cursor_seq: int
    last_delivered_at: datetime | None
    last_error: str | None
    attempts: int
    retry_at: datetime | None
    created_at: datetime
    checkpoint_size: int  # tree size of the last acknowledged checkpoint; 0 before the first
    checkpoint_delivered_at: datetime | None
    format: str  # NATIVE or OCSF: the form its events leave in
    cursor_epoch: int = 0  # replays so far: fences cursor advances read before one


def _row(r: asyncpg.Record) -> DestinationRow:
    return DestinationRow(
        workspace_id=r["workspace_id"],
        id=r["id"],
        name=r["name"],
        kind=r["kind"],
        categories=list(r["categories"]),
        config=r["config"],
        secrets=bytes(r["secrets"]),
        status=r["status"],
        generation=r["generation"],
        cursor_xid=r["cursor_xid"],
        cursor_seq=r["cursor_seq"],
        last_delivered_at=r["last_delivered_at"],
        last_error=r["last_error"],
        attempts=r["attempts"],
        retry_at=r["retry_at"],
        created_at=r["created_at"],
        checkpoint_size=r["checkpoint_size"],
        checkpoint_delivered_at=r["checkpoint_delivered_at"],
        format=r["format"],
        cursor_epoch=r["cursor_epoch"],
    )


@dataclass(frozen=True)
class NewDestination:
    workspace_id: str
    id: uuid.UUID
    name: str
    kind: str
    categories: list[str]
    config: dict[str, Any]
    secrets: bytes
    cursor_xid: int
    cursor_seq: int
    format: str = "NATIVE"


async def insert_destination(conn: asyncpg.Connection, new: NewDestination) -> DestinationRow:
    record = await conn.fetchrow(
        f"""INSERT INTO stream_destinations
               (workspace_id, id, name, kind, categories, config, secrets, cursor_xid, cursor_seq,
                format)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {_COLUMNS}""",
        new.workspace_id,
        new.id,
        new.name,
        new.kind,
        new.categories,
        new.config,
        new.secrets,
        new.cursor_xid,
        new.cursor_seq,
        new.format,
    )
    assert record is not None
    return _row(record)


async def count_destinations(conn: asyncpg.Connection, workspace_id: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM stream_destinations WHERE workspace_id = $1", workspace_id
        )
    )


async def read_destinations(conn: asyncpg.Connection, workspace_id: str) -> list[DestinationRow]:
    records = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM stream_destinations WHERE workspace_id = $1
            ORDER BY created_at, id""",
        workspace_id,
    )
    return [_row(r) for r in records]


async def read_destination(
    conn: asyncpg.Connection, workspace_id: str, destination_id: uuid.UUID
) -> DestinationRow | None:
    record = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM stream_destinations WHERE workspace_id = $1 AND id = $2",
        workspace_id,
        destination_id,
    )
    return _row(record) if record else None


@dataclass(frozen=True)
class DestinationChange:
    """What an update sets; None leaves a value as it is."""

    name: str | None = None
    categories: list[str] | None = None
    config: dict[str, Any] | None = None
    secrets: bytes | None = None
    status: str | None = None
    format: str | None = None


async def update_destination(
    conn: asyncpg.Connection,
    workspace_id: str,
    destination_id: uuid.UUID,
    change: DestinationChange,
) -> DestinationRow | None:
    """Apply a change; any change makes a failing destination retry at once.

    A FAILING destination becomes ACTIVE again (unless the change pauses it);
    the generation moves so its worker reloads the definition.
    """
    record = await conn.fetchrow(
        f"""UPDATE stream_destinations SET
               name = coalesce($3, name),
               categories = coalesce($4, categories),
               config = coalesce($5, config),
               secrets = coalesce($6, secrets),
               status = coalesce($7, CASE WHEN status = 'FAILING' THEN 'ACTIVE' ELSE status END),
               format = coalesce($8, format),
               generation = generation + 1,
               attempts = 0,
               retry_at = NULL,
               updated_at = now()
           WHERE workspace_id = $1 AND id = $2
           RETURNING {_COLUMNS}""",
        workspace_id,
        destination_id,
        change.name,
        change.categories,
        change.config,
        change.secrets,
        change.status,
        change.format,
    )
    return _row(record) if record else None


async def delete_destination(
    conn: asyncpg.Connection, workspace_id: str, destination_id: uuid.UUID
) -> DestinationRow | None:
    record = await conn.fetchrow(
        f"""DELETE FROM stream_destinations WHERE workspace_id = $1 AND id = $2
            RETURNING {_COLUMNS}""",
        workspace_id,
        destination_id,
    )
    return _row(record) if record else None


@dataclass(frozen=True)
class ReplayedCursor:
    row: DestinationRow
    previous: tuple[int, int]
    # The earliest ingest position among the retained events occurred at or after
    # `from`; None when there is none.
    first_event: tuple[int, int] | None


async def replay_destination(
    conn: asyncpg.Connection,
    workspace_id: str,
    destination_id: uuid.UUID,
    occurred_from: datetime,
) -> ReplayedCursor | None:
    """Move the cursor to just before the earliest ingest position (xid, seq) of
    the workspace's events of the destination's categories occurred at or after
    `occurred_from` (the caller clamps it to the retention), never forward, and
    bump `cursor_epoch` so that a batch a worker read before this cannot move the
    cursor past it. Run it in the caller's transaction; None when the destination
    does not exist.

    (xid, seq - 1) is "just before": no event lies between it and (xid, seq), as
    seq is an integer and positions compare as (xid, seq) pairs.
    """
    current = await conn.fetchrow(
        """SELECT cursor_xid, cursor_seq, categories FROM stream_destinations
           WHERE workspace_id = $1 AND id = $2 FOR UPDATE""",
        workspace_id,
        destination_id,
    )
    if current is None:
        return None
    # Only events the destination takes: others would pull the position back for nothing.
    first = await conn.fetchrow(
        """SELECT xid::text::bigint AS xid, seq FROM audit_events
           WHERE workspace_id = $1 AND occurred_at >= $2 AND category = ANY($3)
           ORDER BY xid, seq LIMIT 1""",
        workspace_id,
        occurred_from,
        current["categories"],
    )
    previous = (int(current["cursor_xid"]), int(current["cursor_seq"]))
    target = previous
    if first is not None:
        target = min(previous, (int(first["xid"]), int(first["seq"]) - 1))
    record = await conn.fetchrow(
        f"""UPDATE stream_destinations SET
               cursor_xid = $3, cursor_seq = $4, cursor_epoch = cursor_epoch + 1,
               updated_at = now()
           WHERE workspace_id = $1 AND id = $2
           RETURNING {_COLUMNS}""",
        workspace_id,
        destination_id,
        target[0],
        target[1],
    )
    assert record is not None
    return ReplayedCursor(
        _row(record),
        previous,
        (int(first["xid"]), int(first["seq"])) if first is not None else None,
    )


_PENDING = """SELECT count(*) FROM (
        SELECT 1 FROM audit_events e
        WHERE e.workspace_id = d.workspace_id
          AND (e.xid, e.seq) > (d.cursor_xid::text::xid8, d.cursor_seq)
          AND e.category = ANY(d.categories)
        LIMIT $3) AS pending"""


async def count_pending_events(
    conn: asyncpg.Connection, workspace_id: str, cap: int, destination_id: uuid.UUID | None = None
) -> dict[uuid.UUID, int]:
    """Committed events of each destination's categories after its cursor, counted up
    to `cap` each (an index range scan of at most `cap` rows per destination), for
    every destination of the workspace or only `destination_id`, in one statement."""
    records = await conn.fetch(
        f"""SELECT d.id, ({_PENDING}) AS pending FROM stream_destinations d
            WHERE d.workspace_id = $1 AND ($2::uuid IS NULL OR d.id = $2)""",
        workspace_id,
        destination_id,
        cap,
    )
    return {r["id"]: int(r["pending"]) for r in records}


# Leases -------------------------------------------------------------------


@dataclass(frozen=True)
class DestinationKey:
    workspace_id: str
    id: uuid.UUID


async def count_streamable(conn: asyncpg.Connection) -> int:
    """Destinations some worker should hold: not paused, on an ENTERPRISE workspace."""
    return int(
        await conn.fetchval(
            """SELECT count(*) FROM stream_destinations d JOIN workspaces w ON w.id = d.workspace_id
               WHERE d.status <> 'PAUSED' AND w.plan = 'ENTERPRISE'"""
        )
    )


async def claim_destinations(
    conn: asyncpg.Connection, worker_id: str, lease_seconds: float, limit: int
) -> list[DestinationKey]:
    """Take up to `limit` destinations nobody holds (or whose lease expired).

    Never one this worker held itself: its delivery task may still be running
    (its lease lapsed while it waited), and a second task would send in parallel.
    """
    records = await conn.fetch(
        """UPDATE stream_destinations d
           SET lease_owner = $1, lease_until = now() + make_interval(secs => $2)
           FROM (SELECT s.workspace_id, s.id FROM stream_destinations s
                 JOIN workspaces w ON w.id = s.workspace_id
                 WHERE s.status <> 'PAUSED' AND w.plan = 'ENTERPRISE'
                   AND (s.lease_until IS NULL OR s.lease_until < now())
                   AND s.lease_owner IS DISTINCT FROM $1
                 ORDER BY s.lease_until NULLS FIRST, s.created_at
                 LIMIT $3
                 FOR UPDATE OF s SKIP LOCKED) AS free
           WHERE d.workspace_id = free.workspace_id AND d.id = free.id
           RETURNING d.workspace_id, d.id""",
        worker_id,
        lease_seconds,
        limit,
    )
    return [DestinationKey(r["workspace_id"], r["id"]) for r in records]


async def renew_lease(
    conn: asyncpg.Connection, worker_id: str, key: DestinationKey, lease_seconds: float
) -> DestinationRow | None:
    """Extend our lease and return the current definition; None when it is no longer
    ours (or the workspace left the ENTERPRISE plan)."""
    record = await conn.fetchrow(
        f"""UPDATE stream_destinations SET lease_until = now() + make_interval(secs => $4)
            WHERE workspace_id = $1 AND id = $2 AND lease_owner = $3 AND lease_until > now()
              AND EXISTS (SELECT 1 FROM workspaces w
                          WHERE w.id = workspace_id AND w.plan = 'ENTERPRISE')
            RETURNING {_COLUMNS}""",
        key.workspace_id,
        key.id,
        worker_id,
        lease_seconds,
    )
    return _row(record) if record else None


async def release_lease(conn: asyncpg.Connection, worker_id: str, key: DestinationKey) -> None:
    await conn.execute(
        """UPDATE stream_destinations SET lease_owner = NULL, lease_until = NULL
           WHERE workspace_id = $1 AND id = $2 AND lease_owner = $3""",
        key.workspace_id,
        key.id,
        worker_id,
    )


def _acknowledged(delivered: str, generation: str) -> str:
    """SET clauses of an acknowledged send: it clears the error state, unless the
    definition changed meanwhile (the new generation keeps its own fresh state)."""
    return f"""status = CASE WHEN {delivered} AND status = 'FAILING' AND generation = {generation}
                             THEN 'ACTIVE' ELSE status END,
               last_error = CASE WHEN {delivered} AND generation = {generation}
                                 THEN NULL ELSE last_error END,
               attempts = CASE WHEN {delivered} AND generation = {generation}
                               THEN 0 ELSE attempts END"""


async def record_delivery(
    conn: asyncpg.Connection,
    worker_id: str,
    key: DestinationKey,
    generation: int,
    cursor: tuple[int, int],
    delivered: bool,
    lease_seconds: float,
    epoch: int = 0,
) -> bool | None:
    """Move the cursor after an acknowledged batch (or past filtered-out events),
    extending the lease.

    None when the lease is no longer ours: the caller stops at once. False when
    the destination was replayed since `epoch` was read: the cursor stays where
    the replay put it (the lease is still extended), and the caller reads again.
    """
    moved: bool | None = await conn.fetchval(
        f"""UPDATE stream_destinations SET
               cursor_xid = CASE WHEN cursor_epoch = $9 THEN $4 ELSE cursor_xid END,
               cursor_seq = CASE WHEN cursor_epoch = $9 THEN $5 ELSE cursor_seq END,
               last_delivered_at = CASE WHEN $6 THEN now() ELSE last_delivered_at END,
               {_acknowledged("$6", "$7")},
               lease_until = now() + make_interval(secs => $8)
           WHERE workspace_id = $1 AND id = $2 AND lease_owner = $3 AND lease_until > now()
           RETURNING cursor_epoch = $9""",
        key.workspace_id,
        key.id,
        worker_id,
        cursor[0],
        cursor[1],
        delivered,
        generation,
        lease_seconds,
        epoch,
    )
    return moved


async def record_checkpoint_delivery(
    conn: asyncpg.Connection,
    worker_id: str,
    key: DestinationKey,
    generation: int,
    tree_size: int,
    lease_seconds: float,
) -> bool:
    """Move the checkpoint cursor after the sink acknowledged the checkpoint of
    `tree_size`, and start the interval until the next; fenced like the event cursor."""
    result = await conn.execute(
        f"""UPDATE stream_destinations SET
               checkpoint_size = greatest(checkpoint_size, $4),
               checkpoint_delivered_at = now(),
               {_acknowledged("true", "$5")},
               lease_until = now() + make_interval(secs => $6)
           WHERE workspace_id = $1 AND id = $2 AND lease_owner = $3 AND lease_until > now()""",
        key.workspace_id,
        key.id,
        worker_id,
        tree_size,
        generation,
        lease_seconds,
    )
    return bool(result.endswith(" 1"))


async def record_failure(
    conn: asyncpg.Connection,
    worker_id: str,
    key: DestinationKey,
    generation: int,
    *,
    error: str,
    failing: bool,
    retry_in: float,
) -> None:
    """Note a failed attempt and when to try again (ignored if the definition changed)."""
    await conn.execute(
        """UPDATE stream_destinations SET
               last_error = $5,
               status = CASE WHEN $6 AND status = 'ACTIVE' THEN 'FAILING' ELSE status END,
               attempts = attempts + 1,
               retry_at = now() + make_interval(secs => $7)
           WHERE workspace_id = $1 AND id = $2 AND lease_owner = $3 AND generation = $4
             AND lease_until > now()""",
        key.workspace_id,
        key.id,
        worker_id,
        generation,
        error,
        failing,
        retry_in,
    )


# Workers ------------------------------------------------------------------


async def beat(conn: asyncpg.Connection, worker_id: str, alive_seconds: float) -> int:
    """Record this worker as alive; return how many workers are alive now."""
    await conn.execute(
        """INSERT INTO stream_workers (id) VALUES ($1)
           ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()""",
        worker_id,
    )
    await conn.execute(
        """DELETE FROM stream_workers
           WHERE heartbeat_at < now() - make_interval(secs => $1 * 10)""",
        alive_seconds,
    )
    return int(
        await conn.fetchval(
            """SELECT count(*) FROM stream_workers
               WHERE heartbeat_at > now() - make_interval(secs => $1)""",
            alive_seconds,
        )
    )


async def remove_worker(conn: asyncpg.Connection, worker_id: str) -> None:
    await conn.execute("DELETE FROM stream_workers WHERE id = $1", worker_id)


class StreamEvent(NamedTuple):
    """One event as delivery reads it: its position, category and stored payload."""

    xid: int
    seq: int
    occurred_at: datetime
    category: str
    payload: str


async def read_stream_events(
    conn: asyncpg.Connection,
    workspace_id: str,
    *,
    after: tuple[int, int],
    limit: int,
    retention_start: datetime | None,
) -> list[StreamEvent]:
    """Final events of one workspace after `after` in (xid, seq) order (the same
    `INGEST_ORDER_AFTER` as the live tail), with only the columns delivery uses:
    decoding the live tail's filter columns too (inet, text[], two more texts) was
    most of a worker's CPU per event under full ingest."""
    records = await conn.fetch(
        f"""SELECT xid::text::bigint AS xid, seq, occurred_at, category, payload
           {INGEST_ORDER_AFTER}""",
        workspace_id,
        str(after[0]),
        after[1],
        limit,
        retention_start,
    )
    make = StreamEvent._make
    return [make(r) for r in records]
