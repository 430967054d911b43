"""Integrity reads: checkpoints, proofs, leaf indexes. Owner and admin only, like events;
the workspace always comes from the caller's principal."""

from __future__ import annotations

from dataclasses import dataclass

from strawberry.dataloader import DataLoader

from auditlog.errors import BadInputError
from auditlog.model import StoredCheckpoint
from auditlog.schema.context import Context
from auditlog.services import integrity as service
from auditlog.storage import integrity as store

CHECKPOINTS_MAX = 500
CHECKPOINTS_DEFAULT = 50

Position = tuple[str, int, int]  # (workspace, xid, seq): an event's place in ingest order


@dataclass(frozen=True)
class IntegrityView:
    workspace_id: str
    origin: str
    verifier_key: str
    verifier_keys: list[str]


@dataclass(frozen=True)
class Inclusion:
    leaf_index: int
    tree_size: int
    hashes: list[str]
    checkpoint: StoredCheckpoint


async def integrity(ctx: Context) -> IntegrityView:
    workspace_id = ctx.reader_workspace()
    services = ctx.services
    current = services.signing_keys.current().verifier.encode()
    async with services.pool.acquire() as conn:
        stored = await store.read_verifier_keys(conn)
    return IntegrityView(
        workspace_id=workspace_id,
        origin=service.origin_of(services.settings.log_name, workspace_id),
        verifier_key=current,
        verifier_keys=[current, *(k for k in stored if k != current)],
    )


async def latest(ctx: Context, workspace_id: str) -> StoredCheckpoint | None:
    async with ctx.services.pool.acquire() as conn:
        return await store.read_latest_checkpoint(conn, workspace_id)


async def checkpoint(ctx: Context, workspace_id: str, tree_size: int) -> StoredCheckpoint | None:
    if tree_size < 1:
        raise BadInputError("treeSize", "must be at least 1")
    async with ctx.services.pool.acquire() as conn:
        return await store.read_checkpoint(conn, workspace_id, tree_size)


async def checkpoints(
    ctx: Context, workspace_id: str, first: int | None, before: int | None
) -> list[StoredCheckpoint]:
    size = CHECKPOINTS_DEFAULT if first is None else first
    if not 0 <= size <= CHECKPOINTS_MAX:
        raise BadInputError("first", f"must be between 0 and {CHECKPOINTS_MAX}")
    if before is not None and before < 1:
        raise BadInputError("before", "must be at least 1")
    async with ctx.services.pool.acquire() as conn:
        return await store.read_checkpoints(conn, workspace_id, size, before)


async def consistency_proof(
    ctx: Context, workspace_id: str, from_size: int, to_size: int
) -> list[str]:
    async with ctx.services.pool.acquire() as conn:
        proof = await service.consistency_proof(conn, workspace_id, from_size, to_size)
    return [service.b64(h) for h in proof]


def _leaf_loader(ctx: Context) -> DataLoader[Position, int | None]:
    """One lookup for every event of a response that asks for its leaf index."""
    loader = ctx.extra.get("leaf_loader")
    if loader is None:

        async def load(keys: list[Position]) -> list[int | None]:
            found: dict[Position, int] = {}
            async with ctx.services.pool.acquire() as conn:
                for workspace_id in {k[0] for k in keys}:
                    mine = [(k[1], k[2]) for k in keys if k[0] == workspace_id]
                    got = await store.read_leaf_indexes(conn, workspace_id, mine)
                    found.update({(workspace_id, x, s): i for (x, s), i in got.items()})
            return [found.get(k) for k in keys]

        loader = DataLoader(load_fn=load)
        ctx.extra["leaf_loader"] = loader
    return loader


async def leaf_index(ctx: Context, position: Position | None) -> int | None:
    if position is None:
        return None
    ctx.reader_workspace()
    return await _leaf_loader(ctx).load(position)


async def inclusion_proof(
    ctx: Context, position: Position | None, tree_size: int | None
) -> Inclusion | None:
    """The event's proof against the latest checkpoint or the one of `tree_size`;
    None while the event is not sealed (or not in that tree)."""
    workspace_id = ctx.reader_workspace()
    index = await leaf_index(ctx, position)
    async with ctx.services.pool.acquire() as conn:
        cp = await service.signed_checkpoint(conn, workspace_id, tree_size, "treeSize")
        if index is None or cp is None:
            return None
        if index >= cp.tree_size:
            if tree_size is not None:
                raise BadInputError(
                    "treeSize", f"the event is leaf {index}: use a tree size above it"
                )
            return None
        proof = await service.inclusion_proof(conn, workspace_id, index, cp.tree_size)
    return Inclusion(index, cp.tree_size, [service.b64(h) for h in proof], cp)
