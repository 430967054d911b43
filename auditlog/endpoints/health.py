"""/healthz: the process answers. /readyz: the database answers and is migrated.

Redis is not part of readiness: it only rings doorbells (docs/architecture.md,
Faults). /readyz says whether this process's live tail hears them now, as
information: `"bus": "up"`, `"down"` (subscribers poll meanwhile) or `"memory"`.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from auditlog.endpoints.common import json_response, services_of
from auditlog.runtime import Services
from auditlog.storage.migrations import pending_migrations

log = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


def _bus_state(services: Services) -> str:
    if services.bus.in_process:
        return "memory"
    live = services.live
    return "up" if live is not None and live.doorbells.connected else "down"


async def readyz(request: Request) -> Response:
    services = services_of(request)
    bus = _bus_state(services)
    try:
        async with services.pool.acquire(timeout=2) as conn:
            pending = await pending_migrations(conn)
    except Exception:  # any failure to reach the database means not ready
        log.warning("readiness check: database unreachable", exc_info=True)
        return json_response({"status": "unavailable", "database": "unreachable", "bus": bus}, 503)
    if pending:
        return json_response(
            {"status": "unavailable", "pendingMigrations": pending, "bus": bus}, 503
        )
    return json_response({"status": "ready", "bus": bus})
