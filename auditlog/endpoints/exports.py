"""GET /v1/exports/{workspace}/{export}/{part}: a signed link streams one file;
GET /v1/exports/{workspace}/{export}/proof: a signed link streams the proof bundle.

The file is written batch by batch from a server-side cursor into the response,
never built in memory and never resolved through GraphQL; the bundle a batch
of proofs at a time. A link that was altered or has expired is refused with 403
before anything is looked up. A client that stops reading is dropped after
the configured idle time (DownloadResponse), so it cannot keep a download slot.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Send

from auditlog.endpoints.common import json_response, services_of
from auditlog.exports.formats import FORMATS, encode
from auditlog.exports.links import ExportLinks
from auditlog.model import ExportRow
from auditlog.runtime import Services
from auditlog.services import exports as export_service
from auditlog.services import proofs

log = logging.getLogger(__name__)

# Said the same for every refused link, file or bundle: it never tells whether the export exists.
_FORBIDDEN = {"error": "forbidden", "message": "this download link is invalid or has expired"}
_GONE = {"error": "not_found", "message": "this export is gone"}
# A bundle still PENDING after the wait: the sealer is behind or stopped; ask again later.
PENDING_RETRY_AFTER = 5


class DownloadResponse(StreamingResponse):
    """A streamed download that gives up on a client that stopped reading.

    When the connection cannot take the next chunk for `download_idle_seconds`
    (its client has accepted too little to make room for it), the download ends
    there: the response is left incomplete, so the server closes the connection
    and the client sees a cut transfer, never a shorter file that looks whole;
    the body is closed at once, giving back its download slot, its pooled
    connection and its snapshot.
    """

    def __init__(
        self, content: AsyncIterator[bytes], *, services: Services, what: str, **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._idle = services.settings.download_idle_seconds
        self._counters = services.export_counters
        self._what = what

    async def stream_response(self, send: Send) -> None:
        body = self.body_iterator
        try:
            start = {"type": "http.response.start", "status": self.status_code}
            if not await self._send(send, {**start, "headers": self.raw_headers}):
                return
            async for chunk in body:
                data = chunk.encode(self.charset) if isinstance(chunk, str) else chunk
                message = {"type": "http.response.body", "body": data, "more_body": True}
                if not await self._send(send, message):
                    return
            await self._send(send, {"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            # Closed now, not when the generator is collected; shielded so that a
            # response cancelled because the client left still closes it whole.
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    async def _send(self, send: Send, message: Message) -> bool:
        """Hand one message to the server; False when it could not take it in time."""
        try:
            async with asyncio.timeout(self._idle):
                await send(message)
        except TimeoutError:
            self._counters.downloads_aborted_idle += 1
            log.warning(
                "export download aborted: the client of %s accepted no data for %g s",
                self._what,
                self._idle,
            )
            return False
        return True


def _stem(row: ExportRow) -> str:
    created = row.created_at.strftime("%Y%m%dT%H%M%SZ")
    return f"auditlog-{row.workspace_id}-{created}-{str(row.id)[-8:]}"


def _filename(row: ExportRow, part: int, extension: str) -> str:
    return f"{_stem(row)}-part{part:03d}-of-{row.part_count:03d}.{extension}"


def _download_headers(filename: str) -> dict[str, str]:
    return {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
    }


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
        return json_response(_FORBIDDEN, 403)
    row = await export_service.find_export(services, workspace_id, uuid.UUID(export_id))
    number = int(part)
    if row is None or export_service.is_expired(row, now) or number > row.part_count:
        return json_response(_GONE, 404)
    file_format = FORMATS[row.format]
    headers = _download_headers(_filename(row, number, file_format.extension))
    if request.method == "HEAD":  # the headers only: read no rows
        head = Response(media_type=file_format.media_type, headers=headers)
        del head.headers["content-length"]  # unknown until the file is streamed
        return head
    return DownloadResponse(
        encode(file_format, export_service.stream_part(services, row, number), row.event_format),
        services=services,
        what=f"part {number} of export {row.id} (workspace {row.workspace_id})",
        media_type=file_format.media_type,
        headers=headers,
    )


async def download_export_proof(request: Request) -> Response:
    """The proof bundle; 503 PENDING with Retry-After when, after waiting up to
    proofs.PENDING_WAIT, some exported event is still not sealed."""
    workspace_id = request.path_params["workspace_id"]
    export_id = request.path_params["export_id"]
    services = services_of(request)
    now = datetime.now(UTC)
    links = ExportLinks(services.settings.secret_key)
    if not links.is_valid_proof(
        workspace_id,
        export_id,
        request.query_params.get("expires", ""),
        request.query_params.get("signature", ""),
        now,
    ):
        return json_response(_FORBIDDEN, 403)
    row = await export_service.find_export(services, workspace_id, uuid.UUID(export_id))
    if row is None or export_service.is_expired(row, now) or not export_service.has_proof(row):
        return json_response(_GONE, 404)
    headers = _download_headers(f"{_stem(row)}-proof.json")
    if request.method == "HEAD":  # the headers only: no wait, no proof
        head = Response(media_type="application/json", headers=headers)
        del head.headers["content-length"]
        return head
    plan = await proofs.plan_bundle(services, row)
    if isinstance(plan, proofs.Pending):
        return json_response(
            {
                "status": "PENDING",
                "message": (
                    f"{plan.unsealed} of the export's {plan.events} events are not sealed "
                    "into the log's tree yet; retry shortly"
                ),
                "events": plan.events,
                "unsealedEvents": plan.unsealed,
                "waitedSeconds": round(plan.waited_seconds, 1),
            },
            503,
            headers={"Retry-After": str(PENDING_RETRY_AFTER), "Cache-Control": "no-store"},
        )
    return DownloadResponse(
        proofs.stream_bundle(services, plan, workspace_id),
        services=services,
        what=f"the proof bundle of export {row.id} (workspace {workspace_id})",
        media_type="application/json",
        headers=headers,
    )
