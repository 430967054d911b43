"""GET /metrics (Prometheus text format), and the ingest endpoint's refusal counts.

Not public: without AUDITLOG_METRICS_TOKEN the route answers 404 as if it did
not exist; with it, the request must carry `Authorization: Bearer <token>`
(compared in constant time), else 401.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from auditlog import metrics
from auditlog.endpoints.common import DATABASE_UNAVAILABLE, services_of

Endpoint = Callable[[Request], Awaitable[Response]]


def _authorized(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    # Compared in constant time whatever the scheme: a timing tells nothing of the token.
    matches = hmac.compare_digest(given.strip().encode(), token.encode())
    return matches and scheme.lower() == "bearer"


async def metrics_endpoint(request: Request) -> Response:
    services = services_of(request)
    token = services.settings.metrics_token
    if not token:
        return PlainTextResponse("Not Found", status_code=404)
    if not _authorized(request.headers.get("authorization"), token):
        return PlainTextResponse(
            "a metrics token is required",
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="auditlog-metrics"'},
        )
    # The classic text format (0.0.4), which every Prometheus version reads.
    return Response(await metrics.render(services), media_type=CONTENT_TYPE_PLAIN_0_0_4)


def counting_refusals(endpoint: Endpoint) -> Endpoint:
    """POST /v1/events with each refusal counted by reason (its status)."""

    async def counted(request: Request) -> Response:
        try:
            response = await endpoint(request)
        except DATABASE_UNAVAILABLE:
            metrics.count_ingest_refused(503)
            raise
        if response.status_code != 202:
            metrics.count_ingest_refused(response.status_code)
        return response

    return counted
