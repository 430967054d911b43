"""Events the service writes about itself (audit_log.*): the audit of the audit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from auditlog.catalog import CATEGORY_OF
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
