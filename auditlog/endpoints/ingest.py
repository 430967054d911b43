"""POST /v1/events: a JSON array or NDJSON batch of at most 1,000 events or 5 MB."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from auditlog.endpoints.common import json_response, principal_of, services_of, unauthorized
from auditlog.errors import AuthError, BatchRejected, ForbiddenError
from auditlog.ingest.validate import MAX_BODY_BYTES, MAX_EVENTS
from auditlog.metrics import count_ingested


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(body: bytes, content_type: str) -> list[Any] | Response:
    if "ndjson" in content_type or "jsonlines" in content_type:
        events: list[Any] = []
        for number, line in enumerate(body.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                events.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                return json_response(
                    {"error": "malformed_json", "message": f"line {number}: {exc}"}, 400
                )
        return events
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return json_response({"error": "malformed_json", "message": str(exc)}, 400)
    if not isinstance(decoded, list):
        return json_response(
            {
                "error": "malformed_body",
                "message": "the body must be a JSON array of events (or NDJSON with "
                "Content-Type: application/x-ndjson)",
            },
            400,
        )
    return decoded


async def ingest_events(request: Request) -> Response:
    try:
        principal = await principal_of(request)
    except AuthError as exc:
        return unauthorized(str(exc))
    try:
        principal.require_ingest()
    except ForbiddenError as exc:
        return json_response({"error": "forbidden", "message": str(exc)}, 403)
    try:
        body = await _read_body(request)
    except _BodyTooLarge:
        return json_response(
            {"error": "too_large", "message": f"a request holds at most {MAX_BODY_BYTES} bytes"},
            413,
        )
    decoded = _decode(body, request.headers.get("content-type", ""))
    if isinstance(decoded, Response):
        return decoded
    if len(decoded) > MAX_EVENTS:
        return json_response(
            {"error": "too_large", "message": f"a request holds at most {MAX_EVENTS} events"},
            413,
        )
    services = services_of(request)
    # Counted in events, before any validation or database work for them.
    wait = services.ingest_rate.take(principal.key_id or "", len(decoded))
    if wait is not None:
        limiter = services.ingest_rate
        return json_response(
            {
                "error": "rate_limited",
                "message": f"this key may send {limiter.rate:g} events a second "
                f"(bursts of {limiter.burst}); retry in {wait} s",
            },
            429,
            headers={"Retry-After": str(wait)},
        )
    try:
        result = await services.ingestor.ingest(decoded, principal.workspace_id)
    except BatchRejected as exc:
        return json_response(
            {
                "errors": [
                    {"index": e.index, "field": e.field, "message": e.message} for e in exc.errors
                ]
            },
            422,
        )
    count_ingested(result.accepted, result.duplicates, len(body))
    return json_response(
        {"accepted": result.accepted, "duplicates": result.duplicates, "ids": result.ids}, 202
    )
