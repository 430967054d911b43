"""Websocket connections to /graphql: authentication in `connection_init`, keep-alive pings.

The token travels in the `connection_init` payload (`{"authorization": "Bearer ..."}`).
A missing, bad or revoked token closes the connection with 4401; a role that
may not read the log (member, ingest) with 4403. Both subprotocols are served:
`graphql-transport-ws`, which also gets a server `ping` every keep-alive
interval, and the legacy `graphql-ws` (its own `ka` messages).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler

from auditlog.auth import authenticate
from auditlog.errors import AuthError
from auditlog.schema.context import Context

PING_INTERVAL_SECONDS = 15.0
_MAX_REASON = 120  # a close reason is at most 123 bytes


async def admit(context: Context, payload: Any) -> tuple[int, str] | None:
    """Authenticate a connection_init payload into the context, or (code, reason) to close."""
    authorization = None
    if isinstance(payload, dict):
        authorization = payload.get("authorization") or payload.get("Authorization")
    if authorization is not None and not isinstance(authorization, str):
        return 4401, "Unauthorized: authorization must be a string"
    services = context.services
    try:
        async with services.pool.acquire() as conn:
            principal = await authenticate(conn, authorization, services.settings.jwt_secret)
    except AuthError as exc:
        return 4401, f"Unauthorized: {exc}"[:_MAX_REASON]
    if not principal.can_read:
        return 4403, f"Forbidden: the {principal.role} role cannot read the audit log"
    context.principal = principal
    return None


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with authentication and server pings."""

    ping_task: asyncio.Task[None] | None = None

    async def handle_connection_init(self, message: Any) -> None:
        if not self.connection_init_received and not self.connection_timed_out:
            refusal = await admit(self.context, message.get("payload"))
            if refusal is not None:
                if self.connection_init_timeout_task:
                    self.connection_init_timeout_task.cancel()
                await self.websocket.close(*refusal)
                return
        await super().handle_connection_init(message)
        if self.connection_acknowledged and self.ping_task is None:
            self.ping_task = asyncio.create_task(self._ping())

    async def _ping(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(PING_INTERVAL_SECONDS)
                await self.send_message({"type": "ping"})

    async def shutdown(self) -> None:
        if self.ping_task is not None:
            self.ping_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.ping_task
        await super().shutdown()


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """The legacy graphql-ws subprotocol with authentication."""

    async def handle_connection_init(self, message: Any) -> None:
        refusal = await admit(self.context, message.get("payload"))
        if refusal is not None:
            await self.websocket.close(*refusal)
            return
        await super().handle_connection_init(message)
