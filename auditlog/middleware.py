"""The outermost ASGI layer of the app: request ids, and request latency by route.

The request id (auditlog.logs) is put in the scope (`auditlog.request_id`, which
GraphQL's masked errors name), in the context variable every log line reads, and
in the response's `X-Request-Id` (for a websocket, in its handshake answer).
"""

from __future__ import annotations

import time
from typing import Any

from auditlog import logs, metrics

Scope = dict[str, Any]
_HEADER = logs.REQUEST_ID_HEADER.encode()
# Other methods are counted as "other": the method is the client's to choose.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers") or ():
        if name == _HEADER:
            accepted = logs.accepted_request_id(value.decode("latin-1"))
            if accepted is not None:
                return accepted
            break
    return logs.new_request_id()


def _endpoint(scope: Scope) -> str:
    """The route's path template (bounded, unlike the path), set by the router."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


class RequestContext:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope["auditlog.request_id"] = request_id
        # Not reset afterwards: each connection runs in a task of its own (a copy of
        # the context), and the server's own lines after the app returns (an
        # exception it logs) keep the id.
        logs.REQUEST_ID.set(request_id)
        header = (_HEADER, request_id.encode())
        start_type = "http.response.start" if kind == "http" else "websocket.accept"
        status = 500

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == start_type:
                message["headers"] = [*message.get("headers", ()), header]
                status = message.get("status", 101)
            await send(message)

        if kind == "websocket":
            await self.app(scope, receive, send_with_id)
            return
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            metrics.observe_request(_endpoint(scope), method, status, time.perf_counter() - start)
