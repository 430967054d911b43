"""Real HTTP receivers on 127.0.0.1 for streaming tests: small Starlette apps under uvicorn.

A receiver records every request and can be told to fail its first requests,
answer with a given status, hang (on every request, or on those whose body
holds given bytes), hold such requests until told and then accept them,
refuse the requests whose body holds given bytes with a given status, or take
its time; it also records how many requests were in flight at once per path
(one path per destination). HecReceiver is a strict Splunk HEC with indexer
acknowledgement.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
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
    # A request whose body holds one of these byte strings is refused with its status.
    refuse: dict[bytes, int] = field(default_factory=dict)
    refused: list[Received] = field(default_factory=list)
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
            refusal = next((status for part, status in self.refuse.items() if part in body), 0)
            if refusal:
                self.refused.append(Received(path, dict(request.headers), body, time.time()))
                return Response(f"refused: {len(body)} bytes", status_code=refusal)
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


def _hec_error(text: str, code: int, status: int = 400) -> Response:
    return JSONResponse({"text": text, "code": code}, status_code=status)


@dataclass
class HecReceiver(Receiver):
    """A strict Splunk HEC: checks the token and the body, and with `use_ack` behaves as
    a token with indexer acknowledgement does: every request must name a channel (a
    GUID), an accepted request gets an ackId (counted per channel from 0), and
    /services/collector/ack answers whether each asked ackId is indexed.

    An ackId is acknowledged from its `ack_after`-th poll on while `acknowledging`;
    those in `never` stay false, those in `lost` are forgotten (left out of answers).
    Only accepted event requests are recorded in `requests`; polls in `polls`.
    """

    token: str = "t"
    use_ack: bool = False
    acknowledging: bool = True
    ack_after: int = 1
    never: set[int] = field(default_factory=set)
    lost: set[int] = field(default_factory=set)
    polls: list[tuple[str, list[int]]] = field(default_factory=list)
    ack_ids: dict[str, int] = field(default_factory=dict)  # the next ackId per channel
    acked: dict[tuple[str, int], int] = field(default_factory=dict)  # polls per ackId
    sent: dict[tuple[str, int], Received] = field(default_factory=dict)  # request per ackId

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        if path not in ("/services/collector/event", "/services/collector/ack"):
            return _hec_error("The requested URL was not found on this server.", 404, 404)
        if request.headers.get("authorization") != f"Splunk {self.token}":
            return _hec_error("Invalid authorization", 3, 401)
        channel = request.headers.get("x-splunk-request-channel") or request.query_params.get(
            "channel"
        )
        body = await request.body()
        if path == "/services/collector/ack":
            return self._ack_status(channel, body)
        if self.use_ack and not channel:
            return _hec_error("Data channel is missing", 10)
        if channel is not None:
            try:
                uuid.UUID(channel)
            except ValueError:
                return _hec_error("Invalid data channel", 11)
        try:
            objects = hec_objects(body)
        except ValueError:
            return _hec_error("Invalid data format", 6)
        if not objects:
            return _hec_error("No data", 5)
        if not all(isinstance(o, dict) and "event" in o for o in objects):
            return _hec_error("Event field is required", 12)
        received = Received(
            path, {k.lower(): v for k, v in request.headers.items()}, body, time.time()
        )
        self.requests.append(received)
        if not self.use_ack:
            return JSONResponse({"text": "Success", "code": 0})
        assert channel is not None
        ack_id = self.ack_ids.get(channel, 0)
        self.ack_ids[channel] = ack_id + 1
        self.acked[(channel, ack_id)] = 0
        self.sent[(channel, ack_id)] = received
        return JSONResponse({"text": "Success", "code": 0, "ackId": ack_id})

    def _ack_status(self, channel: str | None, body: bytes) -> Response:
        if not self.use_ack:
            return _hec_error("ACK is disabled", 14)
        if not channel:
            return _hec_error("Data channel is missing", 10)
        try:
            asked = json.loads(body)["acks"]
            assert isinstance(asked, list) and all(type(a) is int for a in asked)
        except (ValueError, KeyError, TypeError, AssertionError):
            return _hec_error("Invalid data format", 6)
        self.polls.append((channel, asked))
        answer: dict[str, bool] = {}
        for ack_id in asked:
            key = (channel, ack_id)
            if key not in self.acked or ack_id in self.lost:
                continue  # an ackId this HEC does not know
            self.acked[key] += 1
            due = self.acked[key] >= self.ack_after
            answer[str(ack_id)] = self.acknowledging and due and ack_id not in self.never
        return JSONResponse({"acks": answer})

    def objects(self) -> list[dict[str, Any]]:
        """Every object of every accepted event request, in order."""
        return [o for r in self.requests for o in hec_objects(r.body)]


def hec_objects(body: bytes) -> list[Any]:
    """The concatenated JSON objects of a HEC event body; ValueError when it is not one."""
    decoder, found, text, pos = json.JSONDecoder(), [], body.decode(), 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        obj, pos = decoder.raw_decode(text, pos)
        found.append(obj)
    return found


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
