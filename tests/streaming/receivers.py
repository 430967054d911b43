"""Real HTTP receivers on 127.0.0.1 for streaming tests: small Starlette apps under uvicorn.

A receiver records every request and can be told to fail its first requests,
answer with a given status, hang (on every request, or on those whose body
holds given bytes), hold such requests until told and then accept them, or
take its time; it also records how many requests were
in flight at once per path (one path per destination).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import WorkspaceKeys, free_port


async def _garbage() -> AsyncIterator[bytes]:
    chunk = bytes(range(256)) * 256
    while True:
        yield chunk
        await asyncio.sleep(0)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    fail_first: int = 0
    fail_status: int = 503
    fail_headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    hang: bool = False
    endless: bool = False  # answer 500 with a body that never ends
    delay: float = 0.0
    hold: bytes = b""  # a request whose body holds these bytes hangs until release(), then fails
    holding: int = 0
    gate: bytes = b""  # a request whose body holds these bytes waits for open_gate(), then passes
    gated: int = 0
    requests: list[Received] = field(default_factory=list)
    failures: int = 0
    failed_at: list[float] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    max_in_flight: dict[str, int] = field(default_factory=dict)
    url: str = ""
    _server: Any = None
    _task: asyncio.Task[None] | None = None
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _opened: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        """Stop holding: held requests fail now (their sender may be gone), later ones pass."""
        self.hold = b""
        self._released.set()

    def open_gate(self) -> None:
        """Let gated requests through: they are answered 200 and recorded."""
        self.gate = b""
        self._opened.set()

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        self.in_flight[path] = self.in_flight.get(path, 0) + 1
        self.max_in_flight[path] = max(self.max_in_flight.get(path, 0), self.in_flight[path])
        try:
            body = await request.body()
            if self.hang:
                await asyncio.Event().wait()
            if self.hold and self.hold in body:
                self.holding += 1
                await self._released.wait()
                return Response("released", status_code=503)
            if self.gate and self.gate in body:
                self.gated += 1
                await self._opened.wait()
            if self.endless:
                return StreamingResponse(_garbage(), status_code=500)
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.failures < self.fail_first:
                self.failures += 1
                self.failed_at.append(time.monotonic())
                return Response("busy", status_code=self.fail_status, headers=self.fail_headers)
            if self.status >= 300:
                # Echo the credentials back, as a careless receiver might: they must
                # still never surface in lastError or the logs.
                echoed = f"refused {dict(request.headers)}"
                return Response(echoed, status_code=self.status)
            self.requests.append(
                Received(
                    path, {k.lower(): v for k, v in request.headers.items()}, body, time.time()
                )
            )
            return Response('{"text":"Success","code":0}', media_type="application/json")
        finally:
            self.in_flight[path] -= 1

    async def start(self) -> str:
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        for _ in range(200):
            if self._server.started:
                break
            await asyncio.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            await self._task


async def wait_until(predicate: Any, within: float = 20.0, step: float = 0.05) -> None:
    """Poll `predicate()` (sync or async) until it is true; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(step)


def webhook_messages(
    receiver: Receiver, secret: str, path: str | None = None
) -> list[tuple[str, Any]]:
    """(type, data) of every request received, each verified as a Standard Webhooks
    consumer does, in order."""
    verifier = Webhook(secret)
    messages: list[tuple[str, Any]] = []
    for request in receiver.requests:
        if path is not None and request.path != path:
            continue
        body = verifier.verify(request.body, request.headers)
        assert body["type"] in ("audit_log.events", "audit_log.checkpoint"), body
        messages.append((body["type"], body["data"]))
    return messages


def webhook_events(
    receiver: Receiver, secret: str, path: str | None = None
) -> list[dict[str, Any]]:
    """Every event received (checkpoints left out), verified."""
    events: list[dict[str, Any]] = []
    for kind, data in webhook_messages(receiver, secret, path):
        if kind == "audit_log.events":
            events.extend(data)
    return events


async def ingest(ws: WorkspaceKeys, events: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(events), 500):
        response = await ws.ingest(events[start : start + 500])
        assert response.status_code == 202, response.text
        ids += response.json()["ids"]
    return ids
