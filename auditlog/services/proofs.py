"""The proof bundle of a JSON export: every event of its files proved against one checkpoint.

Policy: the bundle uses the latest checkpoint at download time, once it covers
every exported event. An event is a leaf only once the sealer has reached it
(about a second after ingest), so a download waits up to PENDING_WAIT for that,
polling, and otherwise answers PENDING; nothing is stored for a bundle.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime

from auditlog.integrity import bundle
from auditlog.model import ExportRow, StoredCheckpoint
from auditlog.services import integrity as integrity_service
from auditlog.services.exports import ExportServices
from auditlog.storage import exports as export_store
from auditlog.storage import integrity as integrity_store
from auditlog.storage.workspaces import read_workspace

PENDING_WAIT = 10.0  # seconds a download waits for the sealer before answering PENDING
POLL_INTERVAL = 0.25
LOOKUP_BATCH = 5_000  # ingest positions per leaf-index query
PROOF_BATCH = 1_000  # proofs built, then written, at a time


@dataclass(frozen=True)
class BundlePlan:
    origin: str
    checkpoint: StoredCheckpoint
    events: list[tuple[str, int]]  # (event id, leaf index), in file order


@dataclass(frozen=True)
class Pending:
    events: int
    unsealed: int
    waited_seconds: float


async def plan_bundle(
    services: ExportServices, row: ExportRow, *, wait: float = PENDING_WAIT
) -> BundlePlan | Pending:
    """The leaf of every event of the export's files and a checkpoint covering them all,
    waiting up to `wait` seconds for the sealer; Pending if it has not got there by then."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    workspace_id = row.workspace_id
    async with services.pool.acquire() as conn:
        # The files' own reads: a plan shortened since narrows the bundle as it does them.
        workspace = await read_workspace(conn, workspace_id)
        retention_start = workspace.retention_start(datetime.now(UTC)) if workspace else None
        exported = await export_store.read_export_events(conn, row, retention_start=retention_start)
    leaves: dict[tuple[int, int], int] = {}
    missing = [(e.xid, e.seq) for e in exported]
    while True:
        async with services.pool.acquire() as conn:
            for i in range(0, len(missing), LOOKUP_BATCH):
                chunk = missing[i : i + LOOKUP_BATCH]
                leaves.update(await integrity_store.read_leaf_indexes(conn, workspace_id, chunk))
            missing = [p for p in missing if p not in leaves]
            # A seal stores leaves and signs their size in one transaction, so once every
            # event is a leaf the latest checkpoint covers them; checked all the same.
            checkpoint = None
            if not missing:
                checkpoint = await integrity_store.read_latest_checkpoint(conn, workspace_id)
        needed = max(leaves.values(), default=-1) + 1
        if checkpoint is not None and checkpoint.tree_size >= needed:
            return BundlePlan(
                # The checkpoint's own origin: a later change of the log name
                # must not make older checkpoints' bundles fail.
                origin=checkpoint.signed_note.split("\n", 1)[0],
                checkpoint=checkpoint,
                events=[(str(e.id), leaves[(e.xid, e.seq)]) for e in exported],
            )
        waited = loop.time() - started
        if waited >= wait:
            return Pending(events=len(exported), unsealed=len(missing), waited_seconds=waited)
        await asyncio.sleep(min(POLL_INTERVAL, wait - waited))


async def stream_bundle(
    services: ExportServices, plan: BundlePlan, workspace_id: str
) -> AsyncGenerator[bytes, None]:
    """The bundle's JSON in pieces, PROOF_BATCH proofs at a time, sharing tile reads.

    Holds a download slot and one pooled connection while it runs, as a file download does.
    """
    checkpoint = plan.checkpoint
    yield bundle.encode_head(plan.origin, checkpoint.verifier_key, checkpoint.signed_note)
    slot = services.download_slots.slot(workspace_id)
    async with slot, services.pool.acquire() as conn:
        builder = integrity_service.ProofBuilder(conn, workspace_id, checkpoint.tree_size)
        for i in range(0, len(plan.events), PROOF_BATCH):
            chunk = plan.events[i : i + PROOF_BATCH]
            proofs = await builder.proofs([leaf for _, leaf in chunk])
            yield bundle.encode_events(
                (
                    (event_id, leaf, proof)
                    for (event_id, leaf), proof in zip(chunk, proofs, strict=True)
                ),
                first=i == 0,
            )
    yield bundle.encode_tail()
