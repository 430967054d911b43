"""API keys: created with their secret shown once, revoked with every socket they
admitted closed; each change is audited in its own transaction."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from auditlog.auth import hash_secret, new_key_material
from auditlog.errors import BadInputError, NotFoundError
from auditlog.model import Role
from auditlog.services.ingest import Ingestor
from auditlog.services.service_events import audited
from auditlog.storage import keys as key_store
from auditlog.storage import workspaces as ws_store
from auditlog.streaming.bus import LiveBus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CreatedKey:
    id: str
    key: str
    workspace_id: str | None
    role: str


async def create_key(
    pool: asyncpg.Pool,
    ingestor: Ingestor,
    *,
    workspace_id: str | None,
    role: str,
    name: str | None = None,
    actor: dict[str, Any] | None = None,
) -> CreatedKey:
    """Create a key (platform keys: workspace_id None, role ingest); the secret is shown once."""
    if role not in tuple(Role):
        raise BadInputError("role", "must be owner, admin, member or ingest")
    if workspace_id is None and role != Role.INGEST:
        raise BadInputError("role", "a platform key can only be an ingest key")
    key_id, secret, token = new_key_material()
    async with pool.acquire() as conn, audited(conn, ingestor) as audit:
        if workspace_id is not None and await ws_store.read_workspace(conn, workspace_id) is None:
            raise NotFoundError(f"no workspace {workspace_id!r}")
        await key_store.insert_api_key(
            conn,
            key_id=key_id,
            workspace_id=workspace_id,
            role=role,
            name=name,
            secret_hash=hash_secret(secret),
        )
        if workspace_id is not None:
            await audit.record(
                workspace_id,
                "audit_log.api_key.created",
                actor=actor,
                targets=[{"type": "api_key", "id": key_id, "name": name}],
                metadata={"role": role},
            )
    return CreatedKey(id=key_id, key=token, workspace_id=workspace_id, role=role)


async def revoke_key(
    pool: asyncpg.Pool,
    ingestor: Ingestor,
    key_id: str,
    *,
    bus: LiveBus | None,
    actor: dict[str, Any] | None = None,
) -> key_store.ApiKeyRow:
    """Revoke a key, then tell every process on the bus, whose websockets admitted
    with it close (4401). `bus` is required so that no caller forgets it; without
    one (or with the notice lost) the processes' periodic re-check closes them."""
    async with pool.acquire() as conn, audited(conn, ingestor) as audit:
        revoked = await key_store.revoke_api_key(conn, key_id)
        if revoked is None:
            raise NotFoundError(f"no key {key_id!r}")
        row, now_revoked = revoked
        if now_revoked and row.workspace_id is not None:
            await audit.record(
                row.workspace_id,
                "audit_log.api_key.revoked",
                actor=actor,
                targets=[{"type": "api_key", "id": row.id, "name": row.name}],
                metadata={"role": row.role},
            )
    if bus is not None:
        try:
            await bus.announce_revoked(row.id)
        except Exception:  # committed already: the periodic re-checks close the sockets
            log.exception("revocation notice for %s not published", row.id)
    return row
