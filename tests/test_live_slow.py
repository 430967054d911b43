"""Slow subscribers: bounded buffers, nobody else stalls, catch-up from the database."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import websockets

from auditlog.model import EventFilter
from auditlog.streaming.tail import LiveHub
from tests.conftest import RunningService, WorkspaceKeys, event
from tests.live_client import EDGE_DOC, live_client, ws_url
from tests.test_live import PRODUCT, ingest


async def test_a_stalled_subscriber_is_bounded_then_catches_up_from_the_database(
    service: RunningService, workspace: WorkspaceKeys
) -> None:
    hub = LiveHub(service.services.pool, service.services.bus, queue_size=4, poll_interval=0.2)
    await hub.start()
    only_logins = EventFilter(categories=["AUTHENTICATION"])
    stalled = hub.subscribe(workspace.id, only_logins, after=None, group="a")
    brisk = hub.subscribe(workspace.id, only_logins, after=None, group="b")
    try:
        # Subscribing happens on the first read: start both before ingesting.
        first_reads = [asyncio.create_task(anext(stalled)), asyncio.create_task(anext(brisk))]
        await asyncio.sleep(0.5)
        first = await ingest(workspace, [event()])
        for read in first_reads:
            delivery = await asyncio.wait_for(read, 5)
            assert json.loads(delivery.item.event.payload)["id"] == first[0]
        many = await ingest(workspace, [event() for _ in range(30)])
        # The brisk one gets everything while the stalled one reads nothing.
        got = [await asyncio.wait_for(anext(brisk), 5) for _ in range(30)]
        assert [json.loads(d.item.event.payload)["id"] for d in got] == many
        tail = hub.tails[workspace.id]
        slow = next(s for s in tail.subscribers if s.group == "a")
        assert len(slow.queue) <= 4 and not slow.live and slow.catch_ups >= 1
        # Reading again: the 4 buffered, then the rest from the database, in order, once.
        rest = [await asyncio.wait_for(anext(stalled), 5) for _ in range(30)]
        assert [json.loads(d.item.event.payload)["id"] for d in rest] == many
        later = await ingest(workspace, [event()])
        assert (
            json.loads((await asyncio.wait_for(anext(stalled), 5)).item.event.payload)["id"]
            == (later[0])
        )
        assert slow.live
    finally:
        await stalled.aclose()
        await brisk.aclose()
        await hub.stop()
    assert not hub.tails


async def test_a_client_that_stops_reading_does_not_stall_others(
    service: RunningService, workspace: WorkspaceKeys
) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(service.base_url.rsplit(":", 1)[1])))
    async with (
        websockets.connect(
            ws_url(service.base_url),
            sock=sock,
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            max_queue=1,
        ) as lazy,
        live_client(service.base_url, workspace.admin) as brisk,
    ):
        init = {"authorization": f"Bearer {workspace.admin}"}
        await lazy.send(json.dumps({"type": "connection_init", "payload": init}))
        assert json.loads(await lazy.recv())["type"] == "connection_ack"
        subscribe: dict[str, Any] = {"query": EDGE_DOC, "variables": PRODUCT}
        await lazy.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
        op = await brisk.subscribe(PRODUCT)
        await asyncio.sleep(0.5)
        ids: list[str] = []
        for _ in range(3):  # the lazy client reads nothing meanwhile
            ids += await ingest(
                workspace, [event(metadata={"pad": "x" * 2000}) for _ in range(500)]
            )
            received = await brisk.edges(op, 500, wait=20)
            assert [e["node"]["id"] for e in received] == ids[-500:]
        hub = service.services.live
        assert hub is not None
        for sub in hub.tails[workspace.id].subscribers:
            assert len(sub.queue) <= hub.queue_size
        # The lazy client reads again: everything, in order, exactly once.
        lazy_ids = []
        while len(lazy_ids) < len(ids):
            message = json.loads(await asyncio.wait_for(lazy.recv(), 20))
            if message.get("type") == "next":
                lazy_ids.append(message["payload"]["data"]["auditEvents"]["node"]["id"])
        assert lazy_ids == ids
