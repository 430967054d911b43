"""Websocket connections to /graphql: authentication in `connection_init` and again
for every operation, keep-alive pings.

The token travels in the `connection_init` payload (`{"authorization": "Bearer ..."}`).
A missing, bad or revoked token closes the connection with 4401; a role that
may not read the log (member, ingest) with 4403. The token is checked again,
as for an HTTP request, before each operation (subscribe/start) runs: one that
is no longer valid closes the connection with 4401 and the operation never
runs. Meanwhile the process's `SocketRegistry` (`ws_registry.py`) closes an
admitted socket with 4401 within seconds of its key's revocation, and at its
console session's `exp`. Both subprotocols are served:
`graphql-transport-ws`, which also gets a server `ping` every keep-alive
interval, and the legacy `graphql-ws` (its own `ka` messages).

On `graphql-transport-ws`, a live tail subscription that shares its execution
with identical ones is served directly after its first event (see
`schema/live.py`): each event is executed once per group and serialised once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

from graphql import ExecutionResult, GraphQLError
from strawberry.http.async_base_view import AsyncWebSocketAdapter
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import OperationMessage

from auditlog.auth import authenticate
from auditlog.endpoints.common import services_of
from auditlog.errors import AuthError, ForbiddenError
from auditlog.schema.context import Context
from auditlog.schema.live import LiveOperation, live_operation
from auditlog.ws_registry import TOO_MANY

log = logging.getLogger(__name__)

PING_INTERVAL_SECONDS = 15.0
_MAX_REASON = 120  # a close reason is at most 123 bytes


async def admit(context: Context, payload: Any) -> tuple[int, str] | None:
    """Authenticate a connection_init payload into the context, or (code, reason) to close."""
    authorization = None
    if isinstance(payload, dict):
        authorization = payload.get("authorization") or payload.get("Authorization")
    if authorization is not None and not isinstance(authorization, str):
        return 4401, "Unauthorized: authorization must be a string"
    context.authorization = authorization
    return await authorize(context)


async def authorize(context: Context) -> tuple[int, str] | None:
    """The connection's token through the checks an HTTP request gets (`authenticate`),
    into the context; or (code, reason) to close."""
    authorization = context.authorization
    services = context.services
    try:
        principal = await authenticate(services.pool, authorization, services.sessions)
    except AuthError as exc:
        return 4401, f"Unauthorized: {exc}"[:_MAX_REASON]
    try:
        principal.require_reader()  # what IsReader checks on every field
    except ForbiddenError as exc:
        return 4403, f"Forbidden: {exc}"[:_MAX_REASON]
    context.principal = principal
    return None


class SocketGuard:
    """One connection's authorization, shared by both subprotocol handlers: watched by
    the process's registry once admitted; checked again before each operation."""

    def __init__(self, context: Context, websocket: AsyncWebSocketAdapter) -> None:
        self.context = context
        self.websocket = websocket
        self.closed = False  # by us: nothing more is sent

    async def admitted(self) -> bool:
        """Watch the admitted socket; False once closed for holding too many sockets."""
        registry = services_of(self.context.request).sockets
        if registry is None or self.context.principal is None:
            return True
        if registry.add(self, self.context.principal):
            return True
        most = registry.max_sockets_per_key
        await self.close(TOO_MANY, f"Too many connections: at most {most} for one key")
        return False

    def left(self) -> None:
        registry = services_of(self.context.request).sockets
        if registry is not None:
            registry.discard(self)

    async def authorized(self) -> bool:
        """Whether the token still admits this connection; if not, it is being closed."""
        try:
            refusal = await authorize(self.context)
        except Exception:  # the database is down: refuse rather than run unchecked
            log.exception("could not authorize a websocket operation")
            refusal = 1011, "Internal error: could not authorize the operation"
        if refusal is None:
            return True
        await self.close(*refusal)
        return False

    async def close(self, code: int, reason: str) -> None:
        """Close from the server; the handler's reader sees the disconnect and cleans up."""
        if self.closed:
            return
        self.closed = True
        self.left()
        with contextlib.suppress(Exception):  # already closed by the client
            await self.websocket.close(code, reason)


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with authentication and server pings."""

    ping_task: asyncio.Task[None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = SocketGuard(self.context, self.websocket)

    async def handle_connection_init(self, message: Any) -> None:
        if not self.connection_init_received and not self.connection_timed_out:
            refusal = await admit(self.context, message.get("payload"))
            if refusal is not None:
                if self.connection_init_timeout_task:
                    self.connection_init_timeout_task.cancel()
                await self.websocket.close(*refusal)
                return
        await super().handle_connection_init(message)
        if self.connection_acknowledged and self.ping_task is None and await self.guard.admitted():
            self.ping_task = asyncio.create_task(self._ping())

    async def handle_subscribe(self, message: Any) -> None:
        most = self.max_subscriptions_per_connection
        if (
            self.connection_acknowledged
            and most is not None
            and message["id"] not in self.operations
            and len(self.operations) >= most
        ):
            # Strawberry's own refusal says neither the limit nor a code.
            error = GraphQLError(
                f"at most {most} operations may run at once on one websocket",
                extensions={"code": "RATE_LIMITED", "limit": most},
            )
            await self.send_message(
                {"id": message["id"], "type": "error", "payload": [error.formatted]}
            )
            return
        await super().handle_subscribe(message)

    async def send_message(self, message: Any) -> None:
        if not self.guard.closed:  # operations still running until the disconnect
            await super().send_message(message)

    async def _ping(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(PING_INTERVAL_SECONDS)
                await self.send_message({"type": "ping"})

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        # In the operation's task: the check does not hold up the socket's reader.
        if not await self.guard.authorized():
            return
        live_operation.set(LiveOperation())  # this operation's own task and context
        await super().run_operation(operation)

    async def _send_result_stream(
        self, operation: Operation[Context, None], result_source: Any
    ) -> None:
        """The first result through Strawberry; then, for a shared live subscription,
        each event's shared result straight to the socket, skipping Strawberry's
        per-result extension hooks (none of ours act on subscription results)."""
        live = live_operation.get()
        await super()._send_result_stream(operation, _until_live(result_source, live))
        if live is not None and live.ready:
            async for result in live.results():
                if result.errors:
                    log.error("live event execution failed: %s", result.errors)
                    result = ExecutionResult(data=None, errors=[_masked(self.context)])
                await operation.send_next(result)

    async def shutdown(self) -> None:
        self.guard.left()
        if self.ping_task is not None:
            self.ping_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.ping_task
        await super().shutdown()


async def _until_live(source: Any, live: LiveOperation | None) -> AsyncGenerator[Any, None]:
    """Strawberry's results until the live operation can be served directly."""
    async for result in source:
        yield result
        if live is not None and live.ready:
            return


def _masked(context: Context) -> GraphQLError:
    return GraphQLError(
        f"Internal server error (request id {context.request_id})",
        extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": context.request_id},
    )


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """The legacy graphql-ws subprotocol with authentication."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = SocketGuard(self.context, self.websocket)

    async def handle_connection_init(self, message: Any) -> None:
        refusal = await admit(self.context, message.get("payload"))
        if refusal is not None:
            await self.websocket.close(*refusal)
            return
        await super().handle_connection_init(message)
        if self.connection_acknowledged:
            await self.guard.admitted()

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        if not await self.guard.authorized():
            return
        await super().handle_async_results(operation_id, query, operation_name, variables)

    async def send_message(self, message: OperationMessage) -> None:
        if not self.guard.closed:
            await super().send_message(message)

    async def cleanup(self) -> None:
        self.guard.left()
        await super().cleanup()
