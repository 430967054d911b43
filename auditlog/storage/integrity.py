"""The integrity tree's storage: leaf runs, complete-subtree nodes, checkpoints, keys.

Hashes live in tiles of 256 per level (as C2SP tlog-tiles and Go's sumdb lay
them out): level 0 holds leaf hashes, level L >= 1 the roots of complete
subtrees of 256**L leaves. A tile is stored as one or more runs that never
cross its boundary, appended as the tree grows and never rewritten, so any
node of any tree size is at most one tile read away from what is stored.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from auditlog.model import StoredCheckpoint
from auditlog.storage.events import SAFE_WATERMARK

TILE_WIDTH = 256
TILE_BITS = 8
SEAL_LOCK_CLASS = 7_311_402  # advisory lock class of "sealing a workspace"


@dataclass(frozen=True, slots=True)
class Frontier:
    """Where a workspace's tree ends: its size and the ingest position of its last leaf."""

    size: int
    last_xid: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class LeafRun:
    start_index: int
    hashes: bytes
    seqs: list[int]
    ids: list[uuid.UUID]
    occurred: list[datetime]


async def try_seal_lock(conn: asyncpg.Connection, workspace_id: str) -> bool:
    """One sealer per workspace at a time, across processes; held until the transaction ends."""
    return bool(
        await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock($1, hashtext($2))", SEAL_LOCK_CLASS, workspace_id
        )
    )


async def read_frontier(conn: asyncpg.Connection, workspace_id: str) -> Frontier:
    row = await conn.fetchrow(
        """SELECT start_index + length(hashes) / 32 AS size,
                  last_xid::text::bigint AS last_xid, last_seq
           FROM integrity_leaves WHERE workspace_id = $1
           ORDER BY start_index DESC LIMIT 1""",
        workspace_id,
    )
    if row is None:
        return Frontier(0, 0, 0)
    return Frontier(row["size"], row["last_xid"], row["last_seq"])


# The next final events after the frontier become leaves, in ingest order, one
# run per tile. Leaf hashes are computed here: SHA-256(0x00 || stored payload),
# the stored payload being its RFC 8785 form byte for byte. What keeps it cheap
# (docs/benchmarks.md#integrity):
# - the events are read by an ordered index scan on (workspace_id, xid, seq) that
#   stops at the limit (append_leaves turns bitmap scans off: a bitmap scan reads
#   the whole backlog and sorts it first), and only the rows taken are hashed; a
#   backlog spread over many partitions may still be appended and sorted whole
#   (docs/benchmarks.md#integrity, "Cost by seal size");
# - the rows reach the aggregates sorted by (tile, leaf), in memory, and a group
#   aggregate (hash aggregation off) takes them in that order, so every array of a
#   run is in leaf order without one sort per aggregate.
APPEND_LEAVES = f"""WITH ev AS (
    SELECT xid, seq, id, occurred_at, payload
    FROM audit_events
    WHERE workspace_id = $1
      AND (xid, seq) > ($2::text::xid8, $3)
      AND xid < {SAFE_WATERMARK}
    ORDER BY xid, seq
    LIMIT $5
), numbered AS (
    SELECT xid, seq, id, occurred_at,
           sha256('\\x00'::bytea || convert_to(payload, 'UTF8')) AS h,
           $4::bigint + row_number() OVER (ORDER BY xid, seq) - 1 AS leaf
    FROM ev
), tiled AS (
    SELECT numbered.*, leaf / {TILE_WIDTH} AS tile FROM numbered ORDER BY tile, leaf
)
INSERT INTO integrity_leaves
    (workspace_id, start_index, first_xid, first_seq, last_xid, last_seq,
     hashes, seqs, ids, occurred)
SELECT $1, min(leaf),
       (array_agg(xid))[1], (array_agg(seq))[1],
       (array_agg(xid))[count(*)], (array_agg(seq))[count(*)],
       string_agg(h, ''::bytea), array_agg(seq), array_agg(id), array_agg(occurred_at)
FROM tiled
GROUP BY tile
RETURNING start_index, length(hashes) / 32 AS count"""

# Planner settings of a seal transaction (see APPEND_LEAVES); a full batch of
# 65,536 rows sorts in about 12 MB.
_APPEND_SETTINGS = (
    "SET LOCAL enable_hashagg = off; SET LOCAL enable_bitmapscan = off; SET LOCAL work_mem = '32MB'"
)


async def append_leaves(
    conn: asyncpg.Connection, workspace_id: str, frontier: Frontier, limit: int
) -> int:
    """Append up to `limit` final events after the frontier as leaves; how many were added.

    Call inside a transaction (the planner settings are local to it).
    """
    await conn.execute(_APPEND_SETTINGS)  # one round trip: the simple protocol
    rows = await conn.fetch(
        APPEND_LEAVES,
        workspace_id,
        str(frontier.last_xid),
        frontier.last_seq,
        frontier.size,
        limit,
    )
    return sum(r["count"] for r in rows)


async def read_tiles(
    conn: asyncpg.Connection, workspace_id: str, wanted: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """The stored hashes of each (level, tile), concatenated from their runs in order.

    A tile holds fewer than 256 hashes while the tree's edge runs through it.
    """
    pairs = sorted(set(wanted))
    if not pairs:
        return {}
    rows = await conn.fetch(
        f"""SELECT w.level, w.tile,
                   (SELECT string_agg(r.hashes, ''::bytea ORDER BY r.start_index)
                    FROM integrity_leaves r
                    WHERE w.level = 0 AND r.workspace_id = $1
                      AND r.start_index >= w.tile * {TILE_WIDTH}
                      AND r.start_index < (w.tile + 1) * {TILE_WIDTH}) AS leaves,
                   (SELECT string_agg(n.hashes, ''::bytea ORDER BY n.start_index)
                    FROM integrity_nodes n
                    WHERE w.level > 0 AND n.workspace_id = $1 AND n.level = w.level
                      AND n.start_index >= w.tile * {TILE_WIDTH}
                      AND n.start_index < (w.tile + 1) * {TILE_WIDTH}) AS nodes
            FROM unnest($2::int[], $3::bigint[]) AS w(level, tile)""",
        workspace_id,
        [p[0] for p in pairs],
        [p[1] for p in pairs],
    )
    out: dict[tuple[int, int], bytes] = {}
    for r in rows:
        blob = r["leaves"] if r["level"] == 0 else r["nodes"]
        out[(r["level"], r["tile"])] = bytes(blob) if blob is not None else b""
    return out


async def insert_nodes(
    conn: asyncpg.Connection, workspace_id: str, level: int, start: int, hashes: list[bytes]
) -> None:
    """Store consecutive complete-subtree roots of one level, split at tile boundaries."""
    starts: list[int] = []
    blobs: list[bytes] = []
    i = 0
    while i < len(hashes):
        index = start + i
        take = min(len(hashes) - i, TILE_WIDTH - index % TILE_WIDTH)
        starts.append(index)
        blobs.append(b"".join(hashes[i : i + take]))
        i += take
    await conn.execute(
        """INSERT INTO integrity_nodes (workspace_id, level, start_index, hashes)
           SELECT $1, $2, s, h FROM unnest($3::bigint[], $4::bytea[]) AS u(s, h)""",
        workspace_id,
        level,
        starts,
        blobs,
    )


_CHECKPOINT_COLUMNS = "workspace_id, tree_size, root_hash, signed_note, verifier_key, sealed_at"


def _checkpoint(r: asyncpg.Record) -> StoredCheckpoint:
    return StoredCheckpoint(
        workspace_id=r["workspace_id"],
        tree_size=r["tree_size"],
        root_hash=bytes(r["root_hash"]),
        signed_note=r["signed_note"],
        verifier_key=r["verifier_key"],
        sealed_at=r["sealed_at"],
    )


async def insert_checkpoint(
    conn: asyncpg.Connection,
    workspace_id: str,
    tree_size: int,
    root_hash: bytes,
    signed_note: str,
    verifier_key: str,
) -> StoredCheckpoint:
    # sealed_at is the clock when the checkpoint is written, not the transaction's
    # start (now()): a sealer whose transaction began while another held the seal
    # lock would otherwise date a larger tree before the smaller one it extends.
    row = await conn.fetchrow(
        f"""INSERT INTO integrity_checkpoints
                (workspace_id, tree_size, root_hash, signed_note, verifier_key, sealed_at)
            VALUES ($1, $2, $3, $4, $5, clock_timestamp()) RETURNING {_CHECKPOINT_COLUMNS}""",
        workspace_id,
        tree_size,
        root_hash,
        signed_note,
        verifier_key,
    )
    return _checkpoint(row)


async def read_latest_checkpoint(
    conn: asyncpg.Connection, workspace_id: str
) -> StoredCheckpoint | None:
    row = await conn.fetchrow(
        f"""SELECT {_CHECKPOINT_COLUMNS} FROM integrity_checkpoints
            WHERE workspace_id = $1 ORDER BY tree_size DESC LIMIT 1""",
        workspace_id,
    )
    return _checkpoint(row) if row else None


@dataclass(frozen=True, slots=True)
class CoveringCheckpoint:
    """A checkpoint and the ingest position (xid, seq) of the last event it covers."""

    checkpoint: StoredCheckpoint
    last_xid: int
    last_seq: int


async def read_latest_checkpoint_covering(
    conn: asyncpg.Connection, workspace_id: str, above_size: int
) -> CoveringCheckpoint | None:
    """The latest checkpoint if its tree size is above `above_size`, with where its last
    leaf sits in ingest order.

    Every seal ends its last run at the size it signs, so the run holding leaf
    size - 1 ends there and its last position is that leaf's.
    """
    row = await conn.fetchrow(
        f"""SELECT c.*, l.last_xid::text::bigint AS last_xid, l.last_seq
            FROM (SELECT {_CHECKPOINT_COLUMNS} FROM integrity_checkpoints
                  WHERE workspace_id = $1 ORDER BY tree_size DESC LIMIT 1) AS c
            CROSS JOIN LATERAL (
                SELECT r.last_xid, r.last_seq FROM integrity_leaves r
                WHERE r.workspace_id = $1 AND r.start_index < c.tree_size
                ORDER BY r.start_index DESC LIMIT 1) AS l
            WHERE c.tree_size > $2""",
        workspace_id,
        above_size,
    )
    if row is None:
        return None
    return CoveringCheckpoint(_checkpoint(row), row["last_xid"], row["last_seq"])


async def read_checkpoint(
    conn: asyncpg.Connection, workspace_id: str, tree_size: int
) -> StoredCheckpoint | None:
    row = await conn.fetchrow(
        f"""SELECT {_CHECKPOINT_COLUMNS} FROM integrity_checkpoints
            WHERE workspace_id = $1 AND tree_size = $2""",
        workspace_id,
        tree_size,
    )
    return _checkpoint(row) if row else None


async def read_checkpoints(
    conn: asyncpg.Connection, workspace_id: str, first: int, before: int | None
) -> list[StoredCheckpoint]:
    """Newest first; `before`: only sizes below it."""
    rows = await conn.fetch(
        f"""SELECT {_CHECKPOINT_COLUMNS} FROM integrity_checkpoints
            WHERE workspace_id = $1 AND ($2::bigint IS NULL OR tree_size < $2)
            ORDER BY tree_size DESC LIMIT $3""",
        workspace_id,
        before,
        first,
    )
    return [_checkpoint(r) for r in rows]


async def iter_checkpoints(
    conn: asyncpg.Connection, workspace_id: str
) -> AsyncIterator[StoredCheckpoint]:
    """Every checkpoint, smallest first (call inside a transaction)."""
    async for r in conn.cursor(
        f"""SELECT {_CHECKPOINT_COLUMNS} FROM integrity_checkpoints
            WHERE workspace_id = $1 ORDER BY tree_size""",
        workspace_id,
    ):
        yield _checkpoint(r)


async def register_verifier_key(conn: asyncpg.Connection, verifier_key: str) -> None:
    await conn.execute(
        "INSERT INTO integrity_verifier_keys (verifier_key) VALUES ($1) ON CONFLICT DO NOTHING",
        verifier_key,
    )


async def read_verifier_keys(conn: asyncpg.Connection) -> list[str]:
    """Every key that has signed, newest first."""
    rows = await conn.fetch(
        "SELECT verifier_key FROM integrity_verifier_keys ORDER BY first_used_at DESC"
    )
    return [r["verifier_key"] for r in rows]


async def read_leaf_indexes(
    conn: asyncpg.Connection, workspace_id: str, positions: list[tuple[int, int]]
) -> dict[tuple[int, int], int]:
    """Leaf index of each event, given its ingest position (xid, seq); unsealed ones absent."""
    if not positions:
        return {}
    rows = await conn.fetch(
        """SELECT p.xid, p.seq, l.start_index + array_position(l.seqs, p.seq) - 1 AS leaf
           FROM unnest($2::bigint[], $3::bigint[]) AS p(xid, seq)
           CROSS JOIN LATERAL (
               SELECT r.start_index, r.seqs FROM integrity_leaves r
               WHERE r.workspace_id = $1
                 AND (r.first_xid, r.first_seq) <= (p.xid::text::xid8, p.seq)
               ORDER BY r.first_xid DESC, r.first_seq DESC LIMIT 1) AS l
           WHERE array_position(l.seqs, p.seq) IS NOT NULL""",
        workspace_id,
        [p[0] for p in positions],
        [p[1] for p in positions],
    )
    return {(r["xid"], r["seq"]): r["leaf"] for r in rows}


async def read_workspaces_to_seal(conn: asyncpg.Connection) -> list[str]:
    """Workspaces with final events that are not leaves yet."""
    rows = await conn.fetch(
        f"""SELECT w.id FROM workspaces w
            LEFT JOIN LATERAL (
                SELECT r.last_xid, r.last_seq FROM integrity_leaves r
                WHERE r.workspace_id = w.id ORDER BY r.start_index DESC LIMIT 1) AS f ON true
            WHERE EXISTS (
                SELECT FROM audit_events e
                WHERE e.workspace_id = w.id
                  AND (e.xid, e.seq) > (coalesce(f.last_xid, '0'::xid8), coalesce(f.last_seq, 0))
                  AND e.xid < {SAFE_WATERMARK})
            ORDER BY w.id"""
    )
    return [r["id"] for r in rows]


async def read_sealed_workspaces(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("SELECT DISTINCT workspace_id FROM integrity_leaves ORDER BY 1")
    return [r["workspace_id"] for r in rows]


async def iter_leaf_runs(conn: asyncpg.Connection, workspace_id: str) -> AsyncIterator[LeafRun]:
    """Every leaf run in index order (call inside a transaction)."""
    async for r in conn.cursor(
        """SELECT start_index, hashes, seqs, ids, occurred FROM integrity_leaves
           WHERE workspace_id = $1 ORDER BY start_index""",
        workspace_id,
    ):
        yield LeafRun(r["start_index"], bytes(r["hashes"]), r["seqs"], r["ids"], r["occurred"])


async def iter_node_runs(
    conn: asyncpg.Connection, workspace_id: str
) -> AsyncIterator[tuple[int, int, bytes]]:
    """Every stored node run as (level, start_index, hashes) (call inside a transaction)."""
    async for r in conn.cursor(
        """SELECT level, start_index, hashes FROM integrity_nodes
           WHERE workspace_id = $1 ORDER BY level, start_index""",
        workspace_id,
    ):
        yield r["level"], r["start_index"], bytes(r["hashes"])


async def iter_events_in_ingest_order(
    conn: asyncpg.Connection, workspace_id: str
) -> AsyncIterator[tuple[int, int, uuid.UUID, str]]:
    """(xid, seq, id, payload) of every stored event of a workspace in ingest order
    (call inside a transaction)."""
    async for r in conn.cursor(
        """SELECT xid::text::bigint AS xid, seq, id, payload FROM audit_events
           WHERE workspace_id = $1 ORDER BY xid, seq""",
        workspace_id,
    ):
        yield r["xid"], r["seq"], r["id"], r["payload"]


async def read_purged_before(conn: asyncpg.Connection, workspace_id: str) -> datetime | None:
    """The latest bound below which retention purged this workspace's events, if it did."""
    value: datetime | None = await conn.fetchval(
        """SELECT max(purged_before) FROM retention_purge_log
           WHERE $1 = ANY (workspace_ids)""",
        workspace_id,
    )
    return value
