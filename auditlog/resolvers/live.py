"""Subscription.auditEvents: authorize, validate, then follow the workspace's live tail.

Validation happens before the stream starts, so a bad filter or cursor is a
GraphQL error on that subscription only; the connection stays usable.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Hashable
from typing import Any

from graphql import GraphQLError

from auditlog.cursors import CursorCodec
from auditlog.errors import AuditLogError
from auditlog.schema.context import Info
from auditlog.schema.errors import extensions_for
from auditlog.schema.inputs import AuditEventFilter
from auditlog.schema.live import LiveEdge, live_operation
from auditlog.schema.types import AuditEvent
from auditlog.streaming.tail import Delivery


def _sharing_group(info: Info, workspace_id: str) -> Hashable:
    """Subscribers with equal groups get equal answers: same document, operation,
    variables and workspace."""
    operation = info.operation.name.value if info.operation.name else None
    variables = repr(sorted(info.variable_values.items()))
    return (workspace_id, info.query, operation, variables)


async def audit_events(
    info: Info, filter: AuditEventFilter | None, after: str | None
) -> AsyncGenerator[Any, None]:
    try:
        return _start(info, filter, after)
    except AuditLogError as exc:
        # Sent as the subscription's `error` message, before any extension runs:
        # the code has to be on the error itself.
        extensions = extensions_for(exc)
        if extensions is None:
            raise
        raise GraphQLError(str(exc), extensions=extensions) from exc


def _start(
    info: Info, filter: AuditEventFilter | None, after: str | None
) -> AsyncGenerator[Any, None]:
    ctx = info.context
    workspace_id = ctx.reader_workspace()
    flt = (filter or AuditEventFilter()).to_filter()
    codec = ctx.services.cursors
    start = codec.decode(workspace_id, after, "after") if after else None
    hub = ctx.services.live
    if hub is None:
        raise RuntimeError("the live tail is not running in this process")
    deliveries = hub.subscribe(
        workspace_id,
        flt,
        after=(start.xid, start.seq) if start else None,
        group=_sharing_group(info, workspace_id),
    )
    edges = _edges(codec, workspace_id, deliveries)
    operation = live_operation.get()
    if operation is not None and hub.sharing:
        operation.edges = edges  # the handler may send events after the first itself
    return edges


async def _edges(
    codec: CursorCodec, workspace_id: str, deliveries: AsyncGenerator[Delivery, None]
) -> AsyncGenerator[Any, None]:
    """LiveEdges: the event rendered once per process, the edge once per sharing group."""
    try:
        async for delivery in deliveries:
            if delivery.shared is None:
                item = delivery.item
                if item.rendered is None:
                    event = item.event
                    item.rendered = (
                        codec.encode(workspace_id, event.occurred_at, event.seq, event.xid),
                        AuditEvent.from_payload_text(
                            event.payload, (workspace_id, event.xid, event.seq)
                        ),
                    )
                delivery.shared = LiveEdge(*item.rendered)
            yield delivery.shared
    finally:
        await deliveries.aclose()
