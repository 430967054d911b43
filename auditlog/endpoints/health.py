"""/healthz: the process answers. /readyz: the database answers and is migrated."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from auditlog.endpoints.common import json_response, services_of
from auditlog.storage.migrations import pending_migrations

log = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    services = services_of(request)
    try:
        async with services.pool.acquire(timeout=2) as conn:
            pending = await pending_migrations(conn)
    except Exception:  # any failure to reach the database means not ready
        log.warning("readiness check: database unreachable", exc_info=True)
        return json_response({"status": "unavailable", "database": "unreachable"}, 503)
    if pending:
        return json_response({"status": "unavailable", "pendingMigrations": pending}, 503)
    return json_response({"status": "ready"})
