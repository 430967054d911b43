"""`auditlog verify --database`: recompute every workspace's tree from its stored events.

Run as the owner, in one repeatable-read snapshot per workspace. For each
leaf it finds the event by its sequence number and compares SHA-256(0x00 ||
JCS(payload)) with the stored leaf hash; a leaf without its event is fine only
when retention purged it (its time is below a recorded purge bound). It then
rebuilds the tree from the leaves, compares every stored subtree root and
every checkpoint's root, and checks every checkpoint's signature. What it
reports first is the first event whose hash no longer matches, or the first
checkpoint the stored log no longer reproduces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import orjson

from auditlog.integrity import merkle
from auditlog.integrity.notes import NoteError, VerifierKey, open_checkpoint
from auditlog.jcs import jcs_dumps
from auditlog.services.integrity import origin_of
from auditlog.storage import integrity as store
from auditlog.storage.database import owner_connection
from auditlog.storage.integrity import TILE_BITS, TILE_WIDTH


@dataclass
class WorkspaceCheck:
    workspace_id: str
    leaves: int = 0
    events_checked: int = 0
    purged: int = 0
    unsealed: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        state = "OK" if not self.problems else f"FAILED: {self.problems[0]}"
        return (
            f"workspace {self.workspace_id}: {self.leaves} leaves, {self.events_checked} events "
            f"match, {self.purged} purged by retention, {self.unsealed} not sealed yet, "
            f"{self.checkpoints} checkpoints verified: {state}"
        )


@dataclass
class DatabaseCheck:
    workspaces: list[WorkspaceCheck]

    @property
    def ok(self) -> bool:
        return all(not w.problems for w in self.workspaces)

    def summary(self) -> str:
        lines = [w.line() for w in self.workspaces]
        for w in self.workspaces:
            lines.extend(f"  {w.workspace_id}: {p}" for p in w.problems[1:20])
        if not self.workspaces:
            lines.append("no workspace has a tree yet")
        lines.append("verify: OK" if self.ok else "verify: FAILED")
        return "\n".join(lines)


def leaf_of_payload(payload: str) -> bytes | None:
    """None when the stored text is not JSON that RFC 8785 can carry: ingest never
    stores such text, so it was changed (and must be reported, not crash the check)."""
    try:
        return merkle.leaf_hash(jcs_dumps(orjson.loads(payload)))
    except ValueError:  # orjson.JSONDecodeError is one
        return None


class _Rebuilt:
    """The tree rebuilt leaf by leaf: the compact range gives any prefix's root, and
    every completed 256**L subtree root is kept to compare with storage."""

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []  # (height, hash), heights decreasing
        self.completed: dict[tuple[int, int], bytes] = {}  # (level, index) -> root

    def push(self, leaf: bytes) -> None:
        height, node = 0, leaf
        start = self.size
        while self._stack and self._stack[-1][0] == height:
            _, left = self._stack.pop()
            node = merkle.node_hash(left, node)
            height += 1
            if height % TILE_BITS == 0:
                level = height // TILE_BITS
                self.completed[(level, (start + 1 - (1 << height)) >> height)] = node
        self._stack.append((height, node))
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return merkle.EMPTY_ROOT
        acc = self._stack[-1][1]
        for _, node in reversed(self._stack[:-1]):
            acc = merkle.node_hash(node, acc)
        return acc


async def _check_workspace(
    conn: asyncpg.Connection, workspace_id: str, log_name: str, keys: list[VerifierKey]
) -> WorkspaceCheck:
    report = WorkspaceCheck(workspace_id)
    hashes: list[bytes] = []
    ids: list[str] = []
    occurred: list[datetime] = []
    index_of_seq: dict[int, int] = {}
    async for run in store.iter_leaf_runs(conn, workspace_id):
        if run.start_index != len(hashes):
            report.problems.append(f"leaves {len(hashes)} to {run.start_index - 1} are missing")
            return report
        for k, seq in enumerate(run.seqs):
            index_of_seq[seq] = len(hashes)
            hashes.append(run.hashes[k * 32 : k * 32 + 32])
            ids.append(str(run.ids[k]))
            occurred.append(run.occurred[k])
    report.leaves = len(hashes)
    frontier = await store.read_frontier(conn, workspace_id)
    matched = [False] * len(hashes)
    last_matched = -1
    events = store.iter_events_in_ingest_order(conn, workspace_id)
    async for xid, seq, event_id, payload in events:
        found = index_of_seq.get(seq)
        if found is None:
            if (xid, seq) > (frontier.last_xid, frontier.last_seq):
                report.unsealed += 1
            else:
                report.problems.append(
                    f"event {event_id} is not in the tree although events after it are "
                    f"(inserted after sealing)"
                )
            continue
        i = found
        if str(event_id) != ids[i]:
            report.problems.append(f"leaf {i} was event {ids[i]}, now event {event_id} sits there")
        elif leaf_of_payload(payload) != hashes[i]:
            if merkle.leaf_hash(payload.encode()) == hashes[i]:
                # Unchanged, but stored in a form other than RFC 8785 (written before
                # ingest canonicalised everything): outside verifiers cannot rebuild it.
                report.problems.append(
                    f"event {event_id} (leaf {i}): its stored payload is not RFC 8785, so "
                    "its leaf cannot be reproduced from a JSON copy"
                )
            else:
                report.problems.append(
                    f"event {event_id} (leaf {i}): its stored payload no longer matches "
                    "its leaf hash"
                )
        elif i < last_matched:
            report.problems.append(f"event {event_id} (leaf {i}) is out of ingest order")
        else:
            report.events_checked += 1
        matched[i] = True
        last_matched = max(last_matched, i)
    purged_before = await store.read_purged_before(conn, workspace_id)
    for i, seen in enumerate(matched):
        if seen:
            continue
        if purged_before is not None and occurred[i] < purged_before:
            report.purged += 1
        else:
            report.problems.append(f"event {ids[i]} (leaf {i}) is missing from the log")
    await _check_tree(conn, workspace_id, log_name, keys, hashes, report)
    return report


async def _check_tree(
    conn: asyncpg.Connection,
    workspace_id: str,
    log_name: str,
    keys: list[VerifierKey],
    hashes: list[bytes],
    report: WorkspaceCheck,
) -> None:
    rebuilt = _Rebuilt()
    origin = origin_of(log_name, workspace_id)
    checked_good = 0
    async for cp in store.iter_checkpoints(conn, workspace_id):
        if cp.tree_size > len(hashes):
            report.problems.append(
                f"checkpoint of tree size {cp.tree_size} is beyond the stored tree "
                f"({len(hashes)} leaves): leaves were removed"
            )
            break
        while rebuilt.size < cp.tree_size:
            rebuilt.push(hashes[rebuilt.size])
        if rebuilt.root() != cp.root_hash:
            report.problems.append(
                f"checkpoint of tree size {cp.tree_size} (signed {cp.sealed_at.isoformat()}) "
                f"no longer matches the stored tree: leaves {checked_good} to "
                f"{cp.tree_size - 1} changed"
            )
            break
        try:
            opened = open_checkpoint(cp.signed_note, keys)
        except NoteError as exc:
            report.problems.append(f"checkpoint of tree size {cp.tree_size}: {exc}")
            break
        if (opened.origin, opened.size, opened.root) != (origin, cp.tree_size, cp.root_hash):
            report.problems.append(
                f"checkpoint of tree size {cp.tree_size}: its signed note says something else"
            )
            break
        checked_good = cp.tree_size
        report.checkpoints += 1
    while rebuilt.size < len(hashes):
        rebuilt.push(hashes[rebuilt.size])
    async for level, start, blob in store.iter_node_runs(conn, workspace_id):
        for k, node in enumerate(merkle.split_hashes(blob)):
            expected = rebuilt.completed.get((level, start + k))
            if expected != node:
                first = (start + k) * TILE_WIDTH**level
                report.problems.append(
                    f"stored subtree root of leaves {first} to {first + TILE_WIDTH**level - 1} "
                    "does not match them"
                )
                return


async def check_database(database_url: str, log_name: str) -> DatabaseCheck:
    async with owner_connection(database_url) as conn:
        keys = [VerifierKey.parse(k) for k in await store.read_verifier_keys(conn)]
        workspaces = await store.read_sealed_workspaces(conn)
        results = []
        for workspace_id in workspaces:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                results.append(await _check_workspace(conn, workspace_id, log_name, keys))
    return DatabaseCheck(results)
