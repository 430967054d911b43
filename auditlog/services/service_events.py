"""Events the service writes about itself (audit_log.*): the audit of the audit.

Every change a caller makes through the service (a key, a hold, a destination,
an export) and the event that tells of it commit in one transaction, or neither
does (docs/architecture.md, "The audit of the audit"). `audited` is that
sequence, written once: open the transaction, let the caller change things and
record its events on the same connection, commit, and only then ring the live
tails of the workspaces that got events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg

from auditlog.catalog import CATEGORY_OF
from auditlog.ingest.enrich import GeoIP
from auditlog.ingest.validate import Actor, EventIn, Target
from auditlog.model import uuid7
from auditlog.services.ingest import Ingestor, IngestResult

SYSTEM_ACTOR = Actor(type="SYSTEM", id="auditlog", name="Audit Log service", email=None)


async def record_service_event(
    ingestor: Ingestor,
    workspace_id: str,
    action: str,
    *,
    actor: dict[str, Any] | None = None,
    targets: list[dict[str, Any]] | None = None,
    metadata: dict[str, Any] | None = None,
    conn: asyncpg.Connection | None = None,
) -> IngestResult:
    """Append one audit_log.* event for workspace_id, stamped now.

    With `conn`, inside the caller's transaction (see Ingestor.append): the
    caller notifies with `ingestor.notify_committed(result)` after its commit.
    Prefer `audited`, which does both.
    """
    now = datetime.now(UTC)
    who = (
        Actor(
            type=actor["type"], id=actor.get("id"), name=actor.get("name"), email=actor.get("email")
        )
        if actor
        else SYSTEM_ACTOR
    )
    event = EventIn(
        id=uuid7(),
        id_given=True,
        workspace_id=workspace_id,
        occurred_at=now,
        action=action,
        category=CATEGORY_OF[action],
        actor=who,
        targets=tuple(
            Target(type=t["type"], id=t.get("id"), name=t.get("name")) for t in targets or []
        ),
        ip=None,
        user_agent=None,
        metadata=metadata or {},
    )
    return await ingestor.append([event], workspace_id, now, conn=conn)


class AuditedTransaction:
    """An open transaction on `conn`; `record` writes a service event inside it."""

    def __init__(self, conn: asyncpg.Connection, ingestor: Ingestor) -> None:
        self.conn = conn
        self._ingestor = ingestor
        self._recorded: list[IngestResult] = []

    async def record(
        self,
        workspace_id: str,
        action: str,
        *,
        actor: dict[str, Any] | None = None,
        targets: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> IngestResult:
        result = await record_service_event(
            self._ingestor,
            workspace_id,
            action,
            actor=actor,
            targets=targets,
            metadata=metadata,
            conn=self.conn,
        )
        self._recorded.append(result)
        return result

    async def _notify(self) -> None:
        for result in self._recorded:
            await self._ingestor.notify_committed(result)


@asynccontextmanager
async def audited(
    conn: asyncpg.Connection, ingestor: Ingestor
) -> AsyncIterator[AuditedTransaction]:
    """A transaction whose changes and service events commit together; the live
    tails are rung after the commit, never for a rolled-back event."""
    audit = AuditedTransaction(conn, ingestor)
    async with conn.transaction():
        yield audit
    await audit._notify()


class ServiceEventWriter:
    """Writes one audit_log.* event in the caller's transaction, for the parts below
    services that record what they did (the stream worker's dead letters). It rings
    no live tail: those events reach readers by polling, as the retention's do."""

    def __init__(self) -> None:
        self._ingestor = Ingestor(None, GeoIP(None, quiet=True))

    async def __call__(
        self,
        conn: asyncpg.Connection,
        workspace_id: str,
        action: str,
        *,
        targets: list[dict[str, Any]],
        metadata: dict[str, Any],
    ) -> None:
        await record_service_event(
            self._ingestor, workspace_id, action, targets=targets, metadata=metadata, conn=conn
        )
