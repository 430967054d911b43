"""Prometheus metrics: what each process counts, and what a scrape reads from the database.

Counters and histograms live in prometheus-client's metrics. With several
server processes (`serve --workers N`) each writes its values to files in
PROMETHEUS_MULTIPROC_DIR, which must be set before prometheus-client is first
imported in every process: the parent sets it (and empties the folder) before
uvicorn starts the workers, and a scrape of any of them sums all of them.

Hot paths pay per batch, never per event: ingest counts once per request, the
live tail once per read, a destination once per batch sent. Gauges of this
process (pool, live subscribers) are sampled every SAMPLE_SECONDS and at each
scrape; those of the whole service (destination lags and states, sealing lag,
purge totals) are read from the database by the scrape, in one statement.
docs/operations.md lists every metric.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import glob
import logging
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

import asyncpg
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from auditlog.aio import cancel_and_wait
from auditlog.storage.metrics import DatabaseGauges, read_database_gauges


class _LiveTail(Protocol):
    def subscriber_count(self) -> int: ...


class ProcessState(Protocol):
    """What the process gauges read (the runtime's Services has both)."""

    @property
    def pool(self) -> asyncpg.Pool: ...

    @property
    def live(self) -> _LiveTail | None: ...


log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SAMPLE_SECONDS = 5.0
# lag_events counts at most this many per destination (as the API's lagEvents does).
LAG_CAP = 10_000
# A scrape waits this long for the database, then answers without its gauges.
DATABASE_TIMEOUT = 5.0

# `_created` samples double every series and are not kept across processes.
disable_created_metrics()  # type: ignore[no-untyped-call]
# prometheus-client chose its file-backed values on import if the variable is set;
# each metric below opens its file there: the folder must exist first.
if os.environ.get(MULTIPROC_ENV):
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)

INGEST_EVENTS = Counter(
    "auditlog_ingest_events",
    "Events of accepted ingest batches, by outcome (accepted: stored; duplicate: an id "
    "already stored or repeated in the batch)",
    ["outcome"],
)
INGEST_BYTES = Counter("auditlog_ingest_bytes", "Request body bytes of accepted ingest batches")
INGEST_BATCHES = Counter("auditlog_ingest_batches", "Accepted ingest batches (202)")
INGEST_REFUSALS = Counter(
    "auditlog_ingest_refusals", "Ingest requests refused, by reason", ["reason"]
)
HTTP_SECONDS = Histogram(
    "auditlog_http_request_duration_seconds",
    "HTTP request latency until the response is complete, by route",
    ["endpoint", "method"],
)
HTTP_REQUESTS = Counter(
    "auditlog_http_requests", "HTTP requests answered, by route and status", ["endpoint", "status"]
)
GRAPHQL_SECONDS = Histogram(
    "auditlog_graphql_operation_duration_seconds",
    "GraphQL query and mutation execution time, by operation type and name",
    ["type", "operation"],
)
LIVE_SUBSCRIBERS = Gauge(
    "auditlog_live_subscribers", "Live tail subscriptions open", multiprocess_mode="livesum"
)
LIVE_DELIVERIES = Counter("auditlog_live_deliveries", "Events handed to live tail subscribers")
DESTINATION_DELIVERIES = Counter(
    "auditlog_destination_deliveries",
    "Batches and checkpoints a destination acknowledged",
    ["workspace", "destination", "kind"],
)
DESTINATION_EVENTS = Counter(
    "auditlog_destination_delivered_events",
    "Events a destination acknowledged",
    ["workspace", "destination", "kind"],
)
DESTINATION_FAILURES = Counter(
    "auditlog_destination_failures",
    "Failed sends to a destination (each retry counts)",
    ["workspace", "destination", "kind"],
)
POOL_IN_USE = Gauge(
    "auditlog_db_pool_connections_in_use",
    "Database pool connections lent out",
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "auditlog_db_pool_waiting",
    "Tasks waiting for a database pool connection",
    multiprocess_mode="livesum",
)
POOL_MAX = Gauge(
    "auditlog_db_pool_connections_max", "Database pool size limit", multiprocess_mode="livesum"
)

# Refusals of POST /v1/events by status (its answers: docs/ingest.md).
_INGEST_REASONS = {
    400: "malformed",
    401: "unauthenticated",
    403: "forbidden",
    413: "too_large",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}


def count_ingested(accepted: int, duplicates: int, body_bytes: int) -> None:
    INGEST_BATCHES.inc()
    INGEST_EVENTS.labels("accepted").inc(accepted)
    if duplicates:
        INGEST_EVENTS.labels("duplicate").inc(duplicates)
    INGEST_BYTES.inc(body_bytes)


def count_ingest_refused(status: int) -> None:
    INGEST_REFUSALS.labels(_INGEST_REASONS.get(status, f"http_{status}")).inc()


def count_live_deliveries(count: int) -> None:
    if count:
        LIVE_DELIVERIES.inc(count)


def _destination(workspace_id: str, destination_id: object, kind: str) -> tuple[str, str, str]:
    return (workspace_id, str(destination_id), kind)


def count_delivered(workspace_id: str, destination_id: object, kind: str, events: int) -> None:
    labels = _destination(workspace_id, destination_id, kind)
    DESTINATION_DELIVERIES.labels(*labels).inc()
    if events:
        DESTINATION_EVENTS.labels(*labels).inc(events)


def count_delivery_failed(workspace_id: str, destination_id: object, kind: str) -> None:
    DESTINATION_FAILURES.labels(*_destination(workspace_id, destination_id, kind)).inc()


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    HTTP_SECONDS.labels(endpoint, method).observe(seconds)
    HTTP_REQUESTS.labels(endpoint, str(status)).inc()


# GraphQL operation names are the client's: a name is a label only while this
# process has seen fewer than MAX_OPERATION_NAMES, so no client can grow the
# series without bound.
MAX_OPERATION_NAMES = 200
_OPERATION_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")
_operation_names: set[str] = set()


def operation_label(name: str | None) -> str:
    if not name:
        return "anonymous"
    if name in _operation_names:
        return name
    if len(_operation_names) < MAX_OPERATION_NAMES and _OPERATION_NAME.fullmatch(name):
        _operation_names.add(name)
        return name
    return "other"


# Process gauges ------------------------------------------------------------


def sample_process(services: ProcessState) -> None:
    pool = services.pool
    POOL_IN_USE.set(pool.get_size() - pool.get_idle_size())
    POOL_MAX.set(pool.get_max_size())
    # asyncpg keeps its free connections in an asyncio.Queue and has no public
    # count of the acquirers blocked on it.
    queue = getattr(pool, "_queue", None)
    POOL_WAITING.set(len(getattr(queue, "_getters", None) or ()))
    if services.live is not None:
        LIVE_SUBSCRIBERS.set(services.live.subscriber_count())


@contextlib.asynccontextmanager
async def process_metrics(services: ProcessState) -> AsyncIterator[None]:
    """Samples this process's gauges while the app runs; its live gauges go with it."""

    async def sample() -> None:
        while True:
            try:
                sample_process(services)
            except Exception:
                log.exception("metrics sampling failed")
            await asyncio.sleep(SAMPLE_SECONDS)

    task = asyncio.get_running_loop().create_task(sample(), name="auditlog-metrics")
    try:
        yield
    finally:
        await cancel_and_wait(task)
        folder = os.environ.get(MULTIPROC_ENV)
        if folder:
            multiprocess.mark_process_dead(os.getpid(), folder)  # type: ignore[no-untyped-call]


# Several processes ---------------------------------------------------------


def prepare_multiprocess(*, workers: int) -> str | None:
    """Before `serve` starts serving: the folder the processes' values go to, emptied
    of earlier processes' files (a previous run's counts would be summed in). With
    several workers and no PROMETHEUS_MULTIPROC_DIR, a temporary one, removed at exit."""
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        os.makedirs(folder, exist_ok=True)
        mine = f"_{os.getpid()}.db"  # this process's own files, opened on import
        for path in glob.glob(os.path.join(folder, "*.db")):
            if not path.endswith(mine):
                os.remove(path)
    elif workers > 1:
        folder = tempfile.mkdtemp(prefix="auditlog-metrics-")
        atexit.register(shutil.rmtree, folder, True)
        os.environ[MULTIPROC_ENV] = folder
    return folder


# The scrape ----------------------------------------------------------------


class _Collected(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


class _Forward(Collector):
    """This process's own registry, within a scrape's registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


_STATUSES = ("ACTIVE", "PAUSED", "FAILING")


def database_metrics(gauges: DatabaseGauges | None) -> list[Metric]:
    up = GaugeMetricFamily(
        "auditlog_metrics_database_up",
        "1 when this scrape could read the database's gauges (destinations, sealing, purges)",
    )
    up.add_metric([], 0 if gauges is None else 1)
    if gauges is None:
        return [up]
    labels = ["workspace", "destination", "kind"]
    lag_events = GaugeMetricFamily(
        "auditlog_destination_lag_events",
        f"Events not yet delivered to a destination (counted up to {LAG_CAP})",
        labels=labels,
    )
    lag_seconds = GaugeMetricFamily(
        "auditlog_destination_lag_seconds",
        "Age of the oldest event not yet delivered to a destination (0: none)",
        labels=labels,
    )
    status = GaugeMetricFamily(
        "auditlog_destination_status",
        "1 for a destination's current status (ACTIVE, PAUSED, FAILING), 0 for the others",
        labels=[*labels, "status"],
    )
    attempts = GaugeMetricFamily(
        "auditlog_destination_consecutive_failures",
        "Failed sends in a row (0 after a success)",
        labels=labels,
    )
    for d in gauges.destinations:
        values = [d.workspace_id, str(d.id), d.kind]
        lag_events.add_metric(values, d.lag_events)
        lag_seconds.add_metric(values, d.lag_seconds)
        attempts.add_metric(values, d.attempts)
        for name in _STATUSES:
            status.add_metric([*values, name], 1 if d.status == name else 0)
    sealing = GaugeMetricFamily(
        "auditlog_integrity_sealing_lag_seconds",
        "Age of the oldest final event no integrity tree holds yet, of any workspace (0: none)",
    )
    sealing.add_metric([], gauges.sealing_lag_seconds)
    unsealed = GaugeMetricFamily(
        "auditlog_integrity_unsealed_workspaces", "Workspaces with final events not sealed yet"
    )
    unsealed.add_metric([], gauges.unsealed_workspaces)
    purged = CounterMetricFamily(
        "auditlog_retention_purged_events",
        "Events the retention purge removed, by method (rows, partition), as its log records",
        labels=["method"],
    )
    purges = CounterMetricFamily(
        "auditlog_retention_purges",
        "Purge log records (a workspace's rows purged, or a partition dropped), by method",
        labels=["method"],
    )
    for method in ("rows", "partition"):
        purged.add_metric([method], gauges.purged_events.get(method, 0))
        purges.add_metric([method], gauges.purge_records.get(method, 0))
    return [up, lag_events, lag_seconds, status, attempts, sealing, unsealed, purged, purges]


async def _read_gauges(services: ProcessState) -> DatabaseGauges | None:
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT), services.pool.acquire() as conn:
            return await read_database_gauges(conn, LAG_CAP)
    except Exception as exc:  # the scrape still answers, saying the database part is missing
        log.warning("metrics: database gauges unavailable: %s", exc)
        return None


async def render(services: ProcessState) -> bytes:
    """The exposition: every process's metrics, and the database's gauges."""
    sample_process(services)
    gauges = await _read_gauges(services)
    registry = CollectorRegistry()
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        multiprocess.MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward())
    registry.register(_Collected(database_metrics(gauges)))
    return generate_latest(registry)
