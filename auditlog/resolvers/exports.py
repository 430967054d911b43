"""Exports: createExport, export, exports. Another workspace's export is simply not found."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import strawberry

from auditlog.errors import BadInputError
from auditlog.exports.formats import OCSF_FILE_FORMATS
from auditlog.model import ExportRow
from auditlog.schema.context import Context
from auditlog.schema.exports import CreateExportInput, Export, filter_as_json
from auditlog.schema.inputs import AuditEventFilter
from auditlog.schema.limits import EXPORTS_DEFAULT, EXPORTS_MAX
from auditlog.services import exports as export_service


def _parse_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _to_graphql(ctx: Context, row: ExportRow) -> Export:
    now = datetime.now(UTC)
    base_url = ctx.services.settings.public_url or (
        str(ctx.request.base_url) if ctx.request is not None else ""
    )
    links = export_service.download_links(ctx.services, row, base_url, now)
    proof_url = export_service.proof_link(ctx.services, row, base_url, now)
    return Export.from_row(row, links, proof_url, now)


async def create_export(ctx: Context, input: CreateExportInput) -> Export:
    workspace_id = ctx.reader_workspace()
    assert ctx.principal is not None
    given = input.filter or AuditEventFilter()
    event_format = input.event_format.value if input.event_format else "NATIVE"
    if event_format == "OCSF" and input.format.value not in OCSF_FILE_FORMATS:
        raise BadInputError(
            "input.eventFormat", f"OCSF exports are JSON or NDJSON, not {input.format.value}"
        )
    row = await export_service.create_export(
        ctx.services,
        ctx.principal,
        workspace_id,
        given.to_filter("input.filter"),
        filter_as_json(given),
        input.format.value,
        event_format=event_format,
    )
    return _to_graphql(ctx, row)


async def export(ctx: Context, id: strawberry.ID) -> Export | None:
    workspace_id = ctx.reader_workspace()
    export_id = _parse_id(str(id))
    if export_id is None:
        return None
    row = await export_service.find_export(ctx.services, workspace_id, export_id)
    return _to_graphql(ctx, row) if row else None


async def exports(ctx: Context, first: int | None, after: strawberry.ID | None) -> list[Export]:
    workspace_id = ctx.reader_workspace()
    limit = EXPORTS_DEFAULT if first is None else first
    if not 0 <= limit <= EXPORTS_MAX:
        raise BadInputError("first", f"must be between 0 and {EXPORTS_MAX}")
    after_id = None
    if after is not None:
        after_id = _parse_id(str(after))
        if after_id is None:
            raise BadInputError("after", "must be the id of an export")
    rows = await export_service.list_exports(ctx.services, workspace_id, limit, after_id)
    return [_to_graphql(ctx, row) for row in rows]
