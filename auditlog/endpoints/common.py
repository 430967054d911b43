"""Helpers shared by plain endpoints: services from the app, the caller, JSON answers."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from auditlog.auth import authenticate
from auditlog.model import Principal
from auditlog.runtime import Services
from auditlog.storage.database import DATABASE_UNAVAILABLE as DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)


def services_of(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services
    return services


def json_response(
    body: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body), status_code=status_code, media_type="application/json", headers=headers
    )


def unauthorized(message: str) -> Response:
    return json_response(
        {"error": "unauthenticated", "message": message},
        401,
        headers={"WWW-Authenticate": 'Bearer realm="auditlog"'},
    )


async def principal_of(conn: HTTPConnection) -> Principal:
    """Authenticate the request's bearer token (raises AuthError)."""
    services = services_of(conn)
    return await authenticate(services.pool, conn.headers.get("authorization"), services.sessions)


# What to answer when the database is unavailable (DATABASE_UNAVAILABLE).
RETRY_AFTER_SECONDS = 5


async def database_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
    return json_response(
        {"error": "unavailable", "message": "the database is unavailable; retry shortly"},
        503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
