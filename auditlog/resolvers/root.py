"""The schema: Query, Mutation and Subscription assembled from each concept's resolvers."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

import strawberry
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.schema.config import StrawberryConfig

from auditlog.resolvers import activity as activity_resolvers
from auditlog.resolvers import events as event_resolvers
from auditlog.resolvers import live as live_resolvers
from auditlog.resolvers.exports_root import ExportMutation, ExportQuery
from auditlog.schema.activity import ActorActivity
from auditlog.schema.context import Info, OperationMemo
from auditlog.schema.errors import AuditLogSchema, ErrorCodes
from auditlog.schema.inputs import AuditEventFilter
from auditlog.schema.integrity import IntegrityQuery
from auditlog.schema.limits import QueryLimits
from auditlog.schema.live import SharedEventExecutor
from auditlog.schema.metrics import OperationMetrics
from auditlog.schema.permissions import reader
from auditlog.schema.scalars import SCALAR_MAP
from auditlog.schema.streaming import StreamingMutation, StreamingQuery
from auditlog.schema.types import (
    AuditEvent,
    AuditEventConnection,
    AuditEventEdge,
    EventCatalogEntry,
    Workspace,
)


@strawberry.type
class Query(ExportQuery, StreamingQuery, IntegrityQuery):
    @strawberry.field(  # type: ignore[untyped-decorator]
        description="Newest first; first/last at most 500, default 50.", extensions=reader()
    )
    async def audit_events(
        self,
        info: Info,
        filter: AuditEventFilter | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> AuditEventConnection:
        return await event_resolvers.audit_events(info.context, filter, first, after, last, before)

    @strawberry.field(extensions=reader())  # type: ignore[untyped-decorator]
    async def audit_event(self, info: Info, id: strawberry.ID) -> AuditEvent | None:
        return await event_resolvers.audit_event(info.context, id)

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="Distinct IP addresses, countries and devices of one actor's events.",
        extensions=reader(),
    )
    async def actor_activity(
        self,
        info: Info,
        actor_email: str,
        occurred_from: datetime | None = None,
        occurred_to: datetime | None = None,
    ) -> ActorActivity:
        return await activity_resolvers.actor_activity(
            info.context, actor_email, occurred_from, occurred_to
        )

    @strawberry.field
    def event_catalog(self) -> list[EventCatalogEntry]:
        return event_resolvers.event_catalog()

    @strawberry.field(extensions=reader())  # type: ignore[untyped-decorator]
    async def workspace(self, info: Info) -> Workspace:
        return await event_resolvers.workspace(info.context)


@strawberry.type
class Subscription:
    @strawberry.subscription(  # type: ignore[untyped-decorator]
        description="Live tail; with `after`, first replays what came since that cursor, "
        "then goes live, with no gap and no duplicate.",
        extensions=reader(),
    )
    async def audit_events(
        self, info: Info, filter: AuditEventFilter | None = None, after: str | None = None
    ) -> AsyncGenerator[AuditEventEdge, None]:
        return await live_resolvers.audit_events(info, filter, after)


@strawberry.type
class Mutation(ExportMutation, StreamingMutation):
    pass


def build_schema(query: type = Query) -> AuditLogSchema:
    # Factories: a fresh extension per request. The parse and validation caches
    # live at module level in Strawberry, shared by every request.
    extensions: list[Any] = [
        QueryLimits,
        lambda: ParserCache(maxsize=256),
        lambda: ValidationCache(maxsize=256),
        ErrorCodes,
        OperationMemo,
        OperationMetrics,
    ]
    return AuditLogSchema(
        query=query,
        subscription=Subscription,
        execution_context_class=SharedEventExecutor,
        mutation=Mutation,
        config=StrawberryConfig(scalar_map=SCALAR_MAP),
        extensions=extensions,
    )


schema = build_schema()
