"""Streaming destinations: call the admin service for the caller. Who may (owner or admin
of an ENTERPRISE workspace) is decided by the fields' permission classes
(schema/permissions.py) before these run."""

from __future__ import annotations

import asyncio
from datetime import datetime

from auditlog.errors import AuthError, BadInputError
from auditlog.model import DeadLetterRow
from auditlog.schema.context import Context, operation_memo
from auditlog.schema.limits import DEAD_LETTERS_DEFAULT, PAGE_MAX
from auditlog.services import dead_letters
from auditlog.services.streams import (
    Caller,
    CreatedDestination,
    DeliveryTest,
    DestinationView,
    StreamingAdmin,
)
from auditlog.streaming.config import DestinationConfig


async def _admin(ctx: Context) -> tuple[StreamingAdmin, Caller]:
    if ctx.principal is None:
        raise AuthError("authentication required")
    services = ctx.services
    workspace_id = ctx.principal.require_admin("manage streaming destinations")
    caller = Caller(workspace_id, ctx.principal.as_actor())
    return StreamingAdmin(services.pool, services.ingestor, services.settings), caller


async def _list(ctx: Context) -> list[DestinationView]:
    admin, caller = await _admin(ctx)
    return await admin.list_all(caller)


async def list_destinations(ctx: Context) -> list[DestinationView]:
    """Listed once per request: aliased `streamingDestinations` fields (resolved
    concurrently) share one listing, so aliases do not multiply the lag counts."""
    memo = operation_memo()
    listing = memo.get("streaming_destinations")
    if listing is None:
        listing = memo["streaming_destinations"] = asyncio.ensure_future(_list(ctx))
    views: list[DestinationView] = await asyncio.shield(listing)
    return views


async def create_destination(
    ctx: Context,
    name: str,
    categories: list[str] | None,
    config: DestinationConfig,
    event_format: str = "NATIVE",
) -> CreatedDestination:
    admin, caller = await _admin(ctx)
    return await admin.create(caller, name, categories, config, event_format)


async def update_destination(
    ctx: Context,
    id: str,
    name: str | None,
    categories: list[str] | None,
    config: DestinationConfig | None,
    event_format: str | None = None,
) -> DestinationView:
    admin, caller = await _admin(ctx)
    return await admin.update(caller, id, name, categories, config, event_format)


async def set_paused(ctx: Context, id: str, *, paused: bool) -> DestinationView:
    admin, caller = await _admin(ctx)
    return await admin.set_paused(caller, id, paused)


async def replay_destination(ctx: Context, id: str, occurred_from: datetime) -> DestinationView:
    admin, caller = await _admin(ctx)
    return await admin.replay(caller, id, occurred_from)


async def delete_destination(ctx: Context, id: str) -> bool:
    admin, caller = await _admin(ctx)
    return await admin.delete(caller, id)


async def test_destination(ctx: Context, id: str) -> DeliveryTest:
    admin, caller = await _admin(ctx)
    return await admin.test(caller, id)


async def list_dead_letters(ctx: Context, id: str, first: int | None) -> list[DeadLetterRow]:
    admin, caller = await _admin(ctx)
    size = DEAD_LETTERS_DEFAULT if first is None else first
    if not 0 <= size <= PAGE_MAX:
        raise BadInputError("first", f"must be between 0 and {PAGE_MAX}")
    return await dead_letters.list_dead_letters(admin.pool, caller, id, size)


async def retry_dead_letters(ctx: Context, id: str) -> int:
    admin, caller = await _admin(ctx)
    return await dead_letters.retry_dead_letters(admin.pool, admin.ingestor, caller, id)
