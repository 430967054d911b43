"""Integrity verbs: seal a workspace's final events into its tree, sign checkpoints,
prove inclusion and consistency.

Sealing policy: one sealer per workspace at a time (a transaction-level
advisory lock; a sealer that finds it taken skips the workspace this round),
only events below the safe watermark, never inside an ingest transaction.
Each seal appends leaves, stores the roots of every subtree of 256**L leaves
that it completed, and signs one checkpoint of the new size, all in one
transaction: a tree size is either fully stored and signed, or absent.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from auditlog.errors import BadInputError
from auditlog.integrity import merkle
from auditlog.integrity.notes import NoteSigner, checkpoint_body
from auditlog.model import StoredCheckpoint
from auditlog.storage import integrity as store
from auditlog.storage.integrity import TILE_BITS, TILE_WIDTH

log = logging.getLogger(__name__)

# Leaves added by one seal transaction; a larger backlog takes several.
SEAL_BATCH = 65_536


class TreeStorageError(RuntimeError):
    """The stored tree lacks a hash it must have: storage was damaged or changed."""


def origin_of(log_name: str, workspace_id: str) -> str:
    return f"{log_name}/{workspace_id}"


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


class TreeReader:
    """Hashes of one workspace's tree, read a tile at a time and kept for the reader's life."""

    def __init__(self, conn: asyncpg.Connection, workspace_id: str) -> None:
        self._conn = conn
        self._workspace_id = workspace_id
        self._tiles: dict[tuple[int, int], bytes] = {}

    @staticmethod
    def _place(start: int, height: int) -> tuple[int, int, int, int]:
        level, rest = divmod(height, TILE_BITS)
        base = start >> (TILE_BITS * level)
        return level, base >> TILE_BITS, base % TILE_WIDTH, 1 << rest

    async def load(self, ranges: Iterable[merkle.Range]) -> None:
        wanted: set[tuple[int, int]] = set()
        for a, b in ranges:
            for start, height in merkle.subtrees_of(a, b):
                level, tile, _, _ = self._place(start, height)
                if (level, tile) not in self._tiles:
                    wanted.add((level, tile))
        self._tiles.update(await store.read_tiles(self._conn, self._workspace_id, wanted))

    async def reload(self, level: int, tiles: Iterable[int]) -> None:
        """Read these tiles again (the edge may have moved through them)."""
        self._tiles.update(
            await store.read_tiles(self._conn, self._workspace_id, ((level, t) for t in tiles))
        )

    def subtree(self, start: int, height: int) -> bytes:
        level, tile, offset, count = self._place(start, height)
        blob = self._tiles.get((level, tile), b"")
        part = blob[offset * 32 : (offset + count) * 32]
        if len(part) != count * 32:
            raise TreeStorageError(
                f"workspace {self._workspace_id}: hashes of level {level}, tile {tile} are missing"
            )
        return merkle.perfect_root(merkle.split_hashes(part))

    def tile_root(self, level: int, tile: int) -> bytes:
        blob = self._tiles.get((level, tile), b"")
        if len(blob) != TILE_WIDTH * 32:
            raise TreeStorageError(
                f"workspace {self._workspace_id}: level {level}, tile {tile} is not complete"
            )
        return merkle.perfect_root(merkle.split_hashes(blob))

    async def range_hashes(self, ranges: list[merkle.Range]) -> list[bytes]:
        await self.load(ranges)
        return [merkle.range_hash(a, b, self.subtree) for a, b in ranges]

    async def root(self, size: int) -> bytes:
        return (await self.range_hashes([(0, size)]))[0]


@dataclass(frozen=True)
class SealResult:
    workspace_id: str
    leaves_added: int
    checkpoint: StoredCheckpoint


async def _store_completed_nodes(
    conn: asyncpg.Connection, reader: TreeReader, workspace_id: str, old: int, new: int
) -> None:
    """Store the root of every 256**L-leaf subtree that growing from `old` to `new` completed."""
    level = 0
    while True:
        shift = TILE_BITS * (level + 1)
        done_before, done_after = old >> shift, new >> shift
        if done_after == done_before:
            return
        tiles = range(done_before, done_after)
        await reader.reload(level, tiles)
        roots = [reader.tile_root(level, t) for t in tiles]
        await store.insert_nodes(conn, workspace_id, level + 1, done_before, roots)
        level += 1


async def seal_workspace(
    conn: asyncpg.Connection,
    workspace_id: str,
    signer: NoteSigner,
    *,
    batch: int = SEAL_BATCH,
) -> SealResult | None:
    """Add the next final events to the tree and sign the new size; None when nothing to do
    or another sealer holds the workspace."""
    async with conn.transaction():
        if not await store.try_seal_lock(conn, workspace_id):
            return None
        frontier = await store.read_frontier(conn, workspace_id)
        added = await store.append_leaves(conn, workspace_id, frontier, batch)
        if not added:
            return None
        size = frontier.size + added
        reader = TreeReader(conn, workspace_id)
        await _store_completed_nodes(conn, reader, workspace_id, frontier.size, size)
        root = await reader.root(size)
        origin = origin_of(signer.name, workspace_id)
        note = signer.sign(checkpoint_body(origin, size, root))
        verifier = signer.verifier.encode()
        await store.register_verifier_key(conn, verifier)
        checkpoint = await store.insert_checkpoint(conn, workspace_id, size, root, note, verifier)
    return SealResult(workspace_id, added, checkpoint)


async def seal_until_caught_up(
    conn: asyncpg.Connection, workspace_id: str, signer: NoteSigner, *, batch: int = SEAL_BATCH
) -> list[SealResult]:
    results: list[SealResult] = []
    while True:
        result = await seal_workspace(conn, workspace_id, signer, batch=batch)
        if result is None:
            return results
        results.append(result)
        if result.leaves_added < batch:
            return results


@dataclass
class SealPass:
    results: list[SealResult]
    failed: dict[str, str]  # workspace -> why its seal failed; the others were sealed

    @property
    def leaves_added(self) -> int:
        return sum(r.leaves_added for r in self.results)


async def seal_all(conn: asyncpg.Connection, signer: NoteSigner) -> SealPass:
    """One sealing pass over every workspace with unsealed final events.

    A workspace whose seal fails (its stored tree damaged, say) is reported and
    skipped, so that it never stops the sealing of every other workspace.
    """
    done = SealPass([], {})
    for workspace_id in await store.read_workspaces_to_seal(conn):
        try:
            done.results.extend(await seal_until_caught_up(conn, workspace_id, signer))
        except (asyncpg.PostgresError, TreeStorageError) as exc:
            log.error("sealing workspace %s failed: %s", workspace_id, exc)
            done.failed[workspace_id] = str(exc)
    return done


# Reading: proofs and checkpoints, each bounded by what was signed.


async def signed_checkpoint(
    conn: asyncpg.Connection, workspace_id: str, tree_size: int | None, argument: str
) -> StoredCheckpoint | None:
    """The checkpoint of `tree_size` (BAD_USER_INPUT when never signed), or the latest."""
    if tree_size is None:
        return await store.read_latest_checkpoint(conn, workspace_id)
    if tree_size < 1:
        raise BadInputError(argument, "must be at least 1")
    checkpoint = await store.read_checkpoint(conn, workspace_id, tree_size)
    if checkpoint is None:
        raise BadInputError(argument, f"no checkpoint of tree size {tree_size} was signed")
    return checkpoint


async def inclusion_proof(
    conn: asyncpg.Connection, workspace_id: str, leaf_index: int, tree_size: int
) -> list[bytes]:
    reader = TreeReader(conn, workspace_id)
    return await reader.range_hashes(merkle.inclusion_ranges(leaf_index, tree_size))


async def consistency_proof(
    conn: asyncpg.Connection, workspace_id: str, from_size: int, to_size: int
) -> list[bytes]:
    """RFC 9162 consistency proof between any two sizes 1 <= fromSize <= toSize <= the
    latest signed size (BAD_USER_INPUT otherwise), as CT logs and tlog serve them: a
    verifier may hold a root it computed itself, not only a signed one."""
    if from_size < 1:
        raise BadInputError("fromSize", "must be at least 1")
    if from_size > to_size:
        raise BadInputError("fromSize", "must not be greater than toSize")
    latest = await store.read_latest_checkpoint(conn, workspace_id)
    if latest is None or to_size > latest.tree_size:
        most = latest.tree_size if latest else 0
        raise BadInputError("toSize", f"must be at most the latest tree size ({most})")
    reader = TreeReader(conn, workspace_id)
    return await reader.range_hashes(merkle.consistency_ranges(from_size, to_size))


class ProofBuilder:
    """Inclusion proofs of many leaves against one tree size, sharing tile reads."""

    def __init__(self, conn: asyncpg.Connection, workspace_id: str, tree_size: int) -> None:
        self._reader = TreeReader(conn, workspace_id)
        self._size = tree_size
        # Neighbouring leaves' proofs share most of their subtrees, each rehashed from up to
        # 256 stored hashes; a complete subtree never changes, so its root is kept. Not below
        # 16 leaves: those are cheap to rehash and would be most of what is kept.
        self._roots: dict[tuple[int, int], bytes] = {}

    def _subtree(self, start: int, height: int) -> bytes:
        if height < 4:
            return self._reader.subtree(start, height)
        root = self._roots.get((start, height))
        if root is None:
            root = self._roots[(start, height)] = self._reader.subtree(start, height)
        return root

    async def proofs(self, leaf_indexes: list[int]) -> list[list[bytes]]:
        plans = [merkle.inclusion_ranges(i, self._size) for i in leaf_indexes]
        await self._reader.load(r for plan in plans for r in plan)
        return [[merkle.range_hash(a, b, self._subtree) for a, b in plan] for plan in plans]
