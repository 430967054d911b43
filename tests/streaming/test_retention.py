"""Streams never deliver an event older than the workspace's retention, even one
stored while it was inside and waiting behind a paused destination."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx

from auditlog.runtime import Services
from auditlog.services import workspaces as workspace_service
from auditlog.streaming.worker import StreamWorker
from tests.conftest import create_workspace_keys, event
from tests.streaming.gql import PAUSE, RESUME, create_destination
from tests.streaming.receivers import Receiver, ingest, wait_until, webhook_events


async def test_stream_skips_events_that_expired_while_waiting(
    services: Services, http: httpx.AsyncClient, receiver: Receiver, worker: StreamWorker
) -> None:
    ws = await create_workspace_keys(services, http, "enterprise", retention_days=30)
    created = await create_destination(ws, {"webhook": {"url": receiver.url + "/retention"}})
    dest_id, secret = created["destination"]["id"], created["webhookSecret"]
    await ws.gql(PAUSE, {"id": dest_id})
    await asyncio.sleep(0.3)  # a round that began before the pause has ended
    old_at = (datetime.now(UTC) - timedelta(days=20)).isoformat()
    old, new = await ingest(ws, [event("file.uploaded", occurredAt=old_at), event("file.deleted")])
    await workspace_service.set_plan(services.pool, ws.id, "enterprise", 10)
    await ws.gql(RESUME, {"id": dest_id})
    await wait_until(lambda: new in {e["id"] for e in webhook_events(receiver, secret)})
    assert old not in {e["id"] for e in webhook_events(receiver, secret)}
