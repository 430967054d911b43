"""GraphQL types of integrity: checkpoints, inclusion proofs, the Integrity root field."""

from __future__ import annotations

from datetime import datetime

import strawberry

from auditlog.model import StoredCheckpoint
from auditlog.resolvers import integrity as resolvers
from auditlog.schema.context import Info
from auditlog.schema.permissions import reader
from auditlog.services.integrity import b64


@strawberry.type(description="A signed C2SP checkpoint of the workspace's tree.")
class Checkpoint:
    tree_size: int
    root_hash: str = strawberry.field(description="Standard base64.")
    signed_note: str
    sealed_at: datetime

    @classmethod
    def from_model(cls, cp: StoredCheckpoint) -> Checkpoint:
        return cls(
            tree_size=cp.tree_size,
            root_hash=b64(cp.root_hash),
            signed_note=cp.signed_note,
            sealed_at=cp.sealed_at,
        )


@strawberry.type
class InclusionProof:
    leaf_index: int
    tree_size: int
    hashes: list[str] = strawberry.field(description="Base64, in RFC 9162 order.")
    checkpoint: Checkpoint

    @classmethod
    def from_model(cls, proof: resolvers.Inclusion) -> InclusionProof:
        return cls(
            leaf_index=proof.leaf_index,
            tree_size=proof.tree_size,
            hashes=proof.hashes,
            checkpoint=Checkpoint.from_model(proof.checkpoint),
        )


@strawberry.type
class Integrity:
    origin: str
    verifier_key: str
    verifier_keys: list[str]
    workspace_id: strawberry.Private[str]

    @classmethod
    def from_model(cls, view: resolvers.IntegrityView) -> Integrity:
        return cls(
            origin=view.origin,
            verifier_key=view.verifier_key,
            verifier_keys=view.verifier_keys,
            workspace_id=view.workspace_id,
        )

    @strawberry.field(description="Null while the tree is empty.")  # type: ignore[untyped-decorator]
    async def latest(self, info: Info) -> Checkpoint | None:
        cp = await resolvers.latest(info.context, self.workspace_id)
        return Checkpoint.from_model(cp) if cp else None

    @strawberry.field(description="The checkpoint of a size that was signed, else null.")  # type: ignore[untyped-decorator]
    async def checkpoint(self, info: Info, tree_size: int) -> Checkpoint | None:
        cp = await resolvers.checkpoint(info.context, self.workspace_id, tree_size)
        return Checkpoint.from_model(cp) if cp else None

    @strawberry.field(description="Newest first; `before`: only tree sizes below it.")  # type: ignore[untyped-decorator]
    async def checkpoints(
        self, info: Info, first: int | None = None, before: int | None = None
    ) -> list[Checkpoint]:
        found = await resolvers.checkpoints(info.context, self.workspace_id, first, before)
        return [Checkpoint.from_model(cp) for cp in found]

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="RFC 9162 consistency proof (base64) between two tree sizes, "
        "1 <= fromSize <= toSize <= the latest signed size."
    )
    async def consistency_proof(self, info: Info, from_size: int, to_size: int) -> list[str]:
        return await resolvers.consistency_proof(
            info.context, self.workspace_id, from_size, to_size
        )


@strawberry.type
class IntegrityQuery:
    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The workspace's tree: checkpoints, proofs and the keys that verify them.",
        extensions=reader(),
    )
    async def integrity(self, info: Info) -> Integrity:
        return Integrity.from_model(await resolvers.integrity(info.context))
