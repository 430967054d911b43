"""create_app(settings): routes and the lifespan that opens every shared resource."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route, WebSocketRoute

from auditlog.access_log import redact_access_log
from auditlog.config import Settings
from auditlog.endpoints.common import DATABASE_UNAVAILABLE, database_unavailable
from auditlog.endpoints.console import console_routes
from auditlog.endpoints.exports import download_export_part, download_export_proof
from auditlog.endpoints.health import healthz, readyz
from auditlog.endpoints.ingest import ingest_events
from auditlog.endpoints.integrity import verifier_keys
from auditlog.endpoints.metrics import counting_refusals, metrics_endpoint
from auditlog.graphql_app import AuditLogGraphQL
from auditlog.jobs.scheduler import MaintenanceScheduler
from auditlog.jobs.sealer import Sealer
from auditlog.metrics import process_metrics
from auditlog.middleware import RequestContext
from auditlog.resolvers.root import schema
from auditlog.runtime import open_services
from auditlog.services.service_events import ServiceEventWriter
from auditlog.streaming.tail import open_live_hub
from auditlog.streaming.worker import running_worker
from auditlog.ws_registry import open_socket_registry

log = logging.getLogger(__name__)

# The young generation is collected after this many allocations (Python's
# default: 700). See _settle_heap.
GC_YOUNG_THRESHOLD = 50_000


_heap_settled = False


def _settle_heap() -> None:
    """Once per process, after start-up: move everything alive so far (the schema,
    the catalog, the parsers' rules, imported modules) out of the collector's
    sight, and collect the young generation less often. A batch of 1,000 events
    allocates tens of thousands of short-lived objects (nearly all freed by
    reference counting, not by the collector); with the defaults every batch set
    off collections that walked the long-lived heap again: `orjson.loads` of a
    batch showed 12% of the server's samples, 3% with the heap frozen
    (docs/benchmarks.md, ingest)."""
    global _heap_settled
    if _heap_settled:
        return
    _heap_settled = True
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def create_app_from_env() -> Starlette:
    """The app for each process of `serve --workers N`: settings from the environment
    (the parent puts the resolved database URL and secret key there)."""
    return create_app(background=os.environ.get("AUDITLOG_BACKGROUND", "1") != "0")


def create_app(settings: Settings | None = None, *, background: bool = True) -> Starlette:
    """The ASGI app. `background=False` runs no stream workers or maintenance (tests, `worker`)."""
    settings = settings or Settings.from_env()
    redact_access_log()  # download links are signed in their query string
    graphql = AuditLogGraphQL(schema, keep_alive=True, keep_alive_interval=15)
    graphql.max_subscriptions_per_connection = settings.ws_max_operations

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            services = await stack.enter_async_context(open_services(settings))
            app.state.services = services
            services.live = await stack.enter_async_context(
                open_live_hub(services.pool, services.bus, services.settings, services.read_pool)
            )
            services.sockets = await stack.enter_async_context(
                open_socket_registry(services.pool, services.bus, services.settings)
            )
            await stack.enter_async_context(process_metrics(services))
            app.state.background = background
            if background:
                await stack.enter_async_context(
                    running_worker(
                        services.pool, services.bus, services.settings, record=ServiceEventWriter()
                    )
                )
                app.state.maintenance = await stack.enter_async_context(
                    MaintenanceScheduler(
                        services.database_url, grace_days=services.settings.retention_grace_days
                    ).running()
                )
                app.state.sealer = await stack.enter_async_context(
                    Sealer(
                        services.pool,
                        services.signing_keys,
                        interval=services.settings.seal_interval_seconds,
                    ).running()
                )
            _settle_heap()
            yield

    return Starlette(
        routes=[
            Route("/v1/events", counting_refusals(ingest_events), methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            Route("/v1/integrity/verifier-keys", verifier_keys, methods=["GET"]),
            # Before the part route, which would take "proof" for a part and refuse it.
            Route("/v1/exports/{workspace_id}/{export_id}/proof", download_export_proof),
            Route("/v1/exports/{workspace_id}/{export_id}/{part}", download_export_part),
            WebSocketRoute("/graphql", graphql),
            *console_routes(),
        ],
        lifespan=lifespan,
        middleware=[Middleware(RequestContext)],
        exception_handlers={exc: database_unavailable for exc in DATABASE_UNAVAILABLE},
    )
