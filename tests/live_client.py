"""A minimal graphql-transport-ws / graphql-ws client for tests, over the real `websockets`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

EDGE_DOC = """subscription Tail($filter: AuditEventFilter, $after: String) {
  auditEvents(filter: $filter, after: $after) {
    cursor
    node { id action category occurredAt actor { email } targets { id } ipAddress payload }
  }
}"""


class LiveClient:
    def __init__(self, ws: ClientConnection, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self._ids = itertools.count(1)
        self.inbox: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        # A close by the server (4401...) ends the reading; `closed` reports it.
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "ping":
                    await self.ws.send(json.dumps({"type": "pong"}))
                elif "id" in message:
                    self.inbox.setdefault(message["id"], asyncio.Queue()).put_nowait(message)

    async def subscribe(
        self, variables: dict[str, Any] | None = None, query: str = EDGE_DOC
    ) -> str:
        op_id = str(next(self._ids))
        self.inbox.setdefault(op_id, asyncio.Queue())
        kind = "subscribe" if self.protocol == "graphql-transport-ws" else "start"
        payload = {"query": query, "variables": variables or {}}
        await self.ws.send(json.dumps({"id": op_id, "type": kind, "payload": payload}))
        return op_id

    async def next_message(self, op_id: str, wait: float = 10) -> dict[str, Any]:
        return await asyncio.wait_for(self.inbox[op_id].get(), wait)

    async def edges(self, op_id: str, count: int, wait: float = 10) -> list[dict[str, Any]]:
        out = []
        for _ in range(count):
            message = await self.next_message(op_id, wait)
            assert message["type"] in ("next", "data"), message
            assert "errors" not in message["payload"], message
            out.append(message["payload"]["data"]["auditEvents"])
        return out

    async def quiet(self, op_id: str, seconds: float) -> None:
        """Assert nothing arrives on this operation for a while."""
        try:
            message = await asyncio.wait_for(self.inbox[op_id].get(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected message: {message}")

    async def closed(self, wait: float = 10) -> tuple[int | None, str | None]:
        """The close code and reason the server sent, once the connection is closed."""
        await asyncio.wait_for(self.ws.wait_closed(), wait)
        return self.ws.close_code, self.ws.close_reason

    @property
    def is_open(self) -> bool:
        return self.ws.close_code is None

    async def stop(self, op_id: str) -> None:
        kind = "complete" if self.protocol == "graphql-transport-ws" else "stop"
        await self.ws.send(json.dumps({"id": op_id, "type": kind}))

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + "/graphql"


@asynccontextmanager
async def live_client(
    base_url: str, key: str | None, protocol: str = "graphql-transport-ws"
) -> AsyncIterator[LiveClient]:
    async with websockets.connect(ws_url(base_url), subprotocols=[protocol]) as ws:  # type: ignore[list-item]
        payload = {"authorization": f"Bearer {key}"} if key else {}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack
        client = LiveClient(ws, protocol)
        try:
            yield client
        finally:
            await client.close()
