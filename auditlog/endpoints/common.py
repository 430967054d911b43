"""Helpers shared by plain endpoints: services from the app, the caller, JSON answers."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import HTTPConnection
from starlette.responses import Response

from auditlog.auth import Principal, authenticate
from auditlog.runtime import Services


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
