"""GET /v1/integrity/verifier-keys: every key that verifies this log's checkpoints.

Public on purpose (no authentication): a verifier key proves nothing by
itself, and customers, auditors and scripts fetch it to check checkpoints
they hold. One key a line, the current one first.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from auditlog.endpoints.common import services_of
from auditlog.storage import integrity as store


async def verifier_keys(request: Request) -> Response:
    services = services_of(request)
    current = services.signing_keys.current().verifier.encode()
    async with services.pool.acquire() as conn:
        stored = await store.read_verifier_keys(conn)
    keys = [current, *(k for k in stored if k != current)]
    return PlainTextResponse(
        "".join(f"{k}\n" for k in keys), headers={"Cache-Control": "public, max-age=60"}
    )
