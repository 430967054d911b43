"""Reading the log: auditEvents (keyset pages both ways), auditEvent, catalog, workspace."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import strawberry

from auditlog.catalog import CATALOG
from auditlog.cursors import CursorCodec
from auditlog.errors import BadInputError, NotFoundError
from auditlog.model import TimePosition, WorkspaceRow
from auditlog.paging import Page, PageRequest, read_page
from auditlog.schema.context import Context
from auditlog.schema.inputs import AuditEventFilter
from auditlog.schema.limits import PAGE_DEFAULT, PAGE_MAX
from auditlog.schema.types import (
    AuditEvent,
    AuditEventConnection,
    AuditEventEdge,
    EventCatalogEntry,
    PageInfo,
    Workspace,
)
from auditlog.storage import events as event_store
from auditlog.storage.workspaces import read_workspace


def _page_size(value: int | None, argument: str) -> int:
    if value is None:
        return PAGE_DEFAULT
    if not 0 <= value <= PAGE_MAX:
        raise BadInputError(argument, f"must be between 0 and {PAGE_MAX}")
    return value


async def read_workspace_or_fail(conn: asyncpg.Connection, workspace_id: str) -> WorkspaceRow:
    row = await read_workspace(conn, workspace_id)
    if row is None:
        raise NotFoundError("workspace not found")
    return row


async def audit_events(
    ctx: Context,
    filter: AuditEventFilter | None,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
) -> AuditEventConnection:
    workspace_id = ctx.reader_workspace()
    if first is not None and last is not None:
        raise BadInputError("last", "use either first or last, not both")
    flt = (filter or AuditEventFilter()).to_filter()
    codec = ctx.services.cursors
    after_c = codec.decode(workspace_id, after, "after") if after is not None else None
    before_c = codec.decode(workspace_id, before, "before") if before is not None else None
    backward = last is not None or (before_c is not None and first is None)
    size = _page_size(last if backward else first, "last" if backward else "first")
    request = PageRequest(
        size=size,
        backward=backward,
        after=TimePosition(after_c.occurred_at, after_c.seq) if after_c else None,
        before=TimePosition(before_c.occurred_at, before_c.seq) if before_c else None,
    )
    # A replica's (DATABASE_READ_URL): a page may lag by the replication delay.
    async with event_store.page_connection(ctx.services.read_pool(), flt) as conn:
        page = await read_page(conn, workspace_id, flt, request)
    return connection_from_page(codec, workspace_id, page)


def connection_from_page(codec: CursorCodec, workspace_id: str, page: Page) -> AuditEventConnection:
    edges = [
        AuditEventEdge(
            cursor=codec.encode(workspace_id, r.occurred_at, r.seq, r.xid),
            node=AuditEvent.from_payload_text(r.payload, (workspace_id, r.xid, r.seq)),
        )
        for r in page.rows
    ]
    return AuditEventConnection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=page.has_next,
            has_previous_page=page.has_previous,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )


async def audit_event(ctx: Context, id: strawberry.ID) -> AuditEvent | None:
    workspace_id = ctx.reader_workspace()
    try:
        event_id = uuid.UUID(str(id))
    except ValueError:
        return None  # no event can have that id
    async with ctx.services.read_pool().acquire() as conn:
        workspace = await read_workspace_or_fail(conn, workspace_id)
        row = await event_store.read_event_by_id(
            conn, workspace_id, event_id, workspace.retention_start(datetime.now(UTC))
        )
    if row is None:
        return None
    return AuditEvent.from_payload_text(row.payload, (workspace_id, row.xid, row.seq))


def event_catalog() -> list[EventCatalogEntry]:
    return [EventCatalogEntry.from_entry(e) for e in CATALOG]


async def workspace(ctx: Context) -> Workspace:
    """Owners and admins only, as every read: a member is given nothing and an ingest
    key only ingest (the console shows a member the same refusal either way)."""
    workspace_id = ctx.reader_workspace()
    async with ctx.services.pool.acquire() as conn:
        return Workspace.from_row(await read_workspace_or_fail(conn, workspace_id))
