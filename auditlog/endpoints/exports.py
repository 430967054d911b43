"""GET /v1/exports/{workspace}/{export}/{part}: a signed link streams one file.

The file is written batch by batch from a server-side cursor into the response,
never built in memory and never resolved through GraphQL. A link that was
altered or has expired is refused with 403 before anything is looked up.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from auditlog.endpoints.common import json_response, services_of
from auditlog.exports import service as export_service
from auditlog.exports.formats import FORMATS, encode
from auditlog.exports.links import ExportLinks
from auditlog.storage.exports import ExportRow


def _filename(row: ExportRow, part: int, extension: str) -> str:
    created = row.created_at.strftime("%Y%m%dT%H%M%SZ")
    return (
        f"auditlog-{row.workspace_id}-{created}-{str(row.id)[-8:]}"
        f"-part{part:03d}-of-{row.part_count:03d}.{extension}"
    )


async def download_export_part(request: Request) -> Response:
    workspace_id = request.path_params["workspace_id"]
    export_id = request.path_params["export_id"]
    part = request.path_params["part"]
    services = services_of(request)
    now = datetime.now(UTC)
    links = ExportLinks(services.settings.secret_key)
    if not links.is_valid(
        workspace_id,
        export_id,
        part,
        request.query_params.get("expires", ""),
        request.query_params.get("signature", ""),
        now,
    ):
        return json_response(
            {"error": "forbidden", "message": "this download link is invalid or has expired"},
            403,
        )
    row = await export_service.find_export(services, workspace_id, uuid.UUID(export_id))
    number = int(part)
    if row is None or export_service.is_expired(row, now) or number > row.part_count:
        return json_response({"error": "not_found", "message": "this export is gone"}, 404)
    file_format = FORMATS[row.format]
    filename = _filename(row, number, file_format.extension)
    return StreamingResponse(
        encode(file_format, export_service.stream_part(services, row, number)),
        media_type=file_format.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
