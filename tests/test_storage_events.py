"""Storage-level behaviour of the append path under concurrency."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from auditlog.runtime import Services
from auditlog.storage import events as event_store
from tests.conftest import WorkspaceKeys


async def test_claims_in_opposite_orders_do_not_deadlock(
    workspace: WorkspaceKeys, services: Services
) -> None:
    """Two open transactions claiming the same ids, listed in opposite orders:
    ids are claimed in key order, so the second waits for the first instead of
    deadlocking, then finds every id taken."""
    ids = [uuid.uuid4() for _ in range(5000)]
    now = datetime.now(UTC)
    results: list[set[tuple[str, uuid.UUID]]] = []

    async def claim(order: list[uuid.UUID], hold: float) -> None:
        async with services.pool.acquire() as conn, conn.transaction():
            results.append(
                await event_store.claim_event_ids(
                    conn, [workspace.id] * len(order), order, [now] * len(order)
                )
            )
            await asyncio.sleep(hold)

    await asyncio.gather(claim(ids, 0.2), claim(list(reversed(ids)), 0.2))
    assert sorted(len(r) for r in results) == [0, 5000]
