"""Measurements for bench/query.py: HTTP end to end, the asyncpg floor, the
Strawberry-alone floor, and EXPLAIN of every query (also as a prepared
statement after its sixth execution)."""

from __future__ import annotations

import http.client
import inspect
import ipaddress
import re
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import strawberry

from auditlog.cursors import CursorCodec
from auditlog.model import TimePosition
from auditlog.paging import Page
from auditlog.resolvers.events import connection_from_page
from auditlog.resolvers.root import build_schema
from auditlog.schema.inputs import AuditEventFilter
from auditlog.schema.types import AuditEventConnection, EventCategory
from auditlog.storage.events import (
    PageBounds,
    StoredEvent,
    block_window_query,
    bounded_block,
    page_connection,
    page_query,
    read_events_page,
)
from bench.common import percentile

FULL_PAGE = """query($filter: AuditEventFilter, $first: Int, $after: String) {
  auditEvents(filter: $filter, first: $first, after: $after) {
    edges { cursor node {
      id occurredAt receivedAt action category
      actor { type id name email } targets { type id name } ipAddress userAgent
      location { city region country countryCode latitude longitude }
      device { browser browserVersion os osVersion device }
      metadata payload anomalies } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""
CURSORS_ONLY = """query($first: Int, $after: String) {
  auditEvents(first: $first, after: $after) { pageInfo { hasNextPage endCursor } }
}"""


@dataclass(frozen=True)
class Case:
    name: str
    filter: dict[str, Any]
    after: str | None = None


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p99_ms: float


def timing(samples: list[float]) -> Timing:
    return Timing(statistics.median(samples) * 1000, percentile(samples, 99) * 1000)


def measure_sync(run: Callable[[], object], n: int, warmup: int = 20) -> Timing:
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return timing(samples)


Run = Callable[[], Awaitable[object] | object]


async def interleaved(runs: dict[str, Run], n: int, warmup: int = 20) -> dict[str, Timing]:
    """Time every run once per round, round after round, so that the load other
    processes put on the machine falls on all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for round_number in range(warmup + n):
        for name, run in runs.items():
            started = time.perf_counter()
            result = run()
            if inspect.isawaitable(result):
                await result
            if round_number >= warmup:
                samples[name].append(time.perf_counter() - started)
    return {name: timing(values) for name, values in samples.items()}


class GraphQLClient:
    """POSTs GraphQL documents over one keep-alive HTTP/1.1 connection, with the
    standard library's http.client: httpx spends more than the server on a
    small request here (its own cost is printed beside, for `{ __typename }`)."""

    def __init__(self, base_url: str, token: str) -> None:
        host, _, port = base_url.removeprefix("http://").partition(":")
        self._address = (host, int(port))
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._conn = http.client.HTTPConnection(*self._address, timeout=60)

    def post(self, body: dict[str, Any]) -> tuple[int, bytes]:
        raw = orjson.dumps(body)
        for attempt in (1, 2):
            try:
                self._conn.request("POST", "/graphql", body=raw, headers=self._headers)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.RemoteDisconnected):
                # The server closes a connection idle past its keep-alive timeout.
                self._conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._conn.close()


def http_run(client: GraphQLClient, case: Case) -> Run:
    body: dict[str, Any] = {"query": FULL_PAGE, "variables": {"filter": case.filter, "first": 50}}
    if case.after:
        body["variables"]["after"] = case.after

    def run() -> None:
        status, content = client.post(body)
        if status != 200 or b'"errors"' in content:
            raise RuntimeError(f"{case.name}: {status} {content[:300]!r}")

    return run


def cursor_of_page(client: GraphQLClient, page_number: int, size: int = 50) -> str:
    """The `after` cursor that reaches page `page_number`, walked page by page."""
    after: str | None = None
    for _ in range(page_number - 1):
        _, content = client.post(
            {"query": CURSORS_ONLY, "variables": {"first": size, "after": after}}
        )
        after = orjson.loads(content)["data"]["auditEvents"]["pageInfo"]["endCursor"]
    assert after is not None
    return after


def page_position(codec: CursorCodec, workspace_id: str, cursor: str | None) -> TimePosition | None:
    if cursor is None:
        return None
    decoded = codec.decode(workspace_id, cursor, "after")
    return TimePosition(decoded.occurred_at, decoded.seq)


def sql_run(
    pool: asyncpg.Pool, workspace_id: str, case: Case, after: TimePosition | None
) -> Callable[[], Awaitable[list[StoredEvent]]]:
    """The page's statement as the service sends it (51 rows: the extra one tells
    whether there is a next page), through the same pool settings and plan mode
    (`page_connection`)."""
    flt = AuditEventFilter(**_snake(case.filter)).to_filter()

    async def run() -> list[StoredEvent]:
        async with page_connection(pool, flt) as conn:
            return await read_events_page(
                conn, workspace_id, flt, limit=51, older_than=after, workspace_retention=True
            )

    return run


def _snake(flt: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flt.items():
        name = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)
        if name in ("occurred_from", "occurred_to"):
            value = datetime.fromisoformat(value)
        if name == "categories":
            value = [EventCategory(v) for v in value]
        out[name] = value
    return out


def strawberry_run(
    codec: CursorCodec,
    workspace_id: str,
    rows: list[StoredEvent],
    case: Case,
    executor: type | None = None,
) -> Run:
    """The same document, the same schema types and extensions, over rows in memory;
    with `executor`, that execution context instead of the service's."""
    page = Page(rows[:50], has_next=True, has_previous=case.after is not None)

    @strawberry.type
    class MemoryQuery:
        @strawberry.field
        def audit_events(
            self,
            filter: AuditEventFilter | None = None,
            first: int | None = None,
            after: str | None = None,
        ) -> AuditEventConnection:
            return connection_from_page(codec, workspace_id, page)

    schema = build_schema(MemoryQuery)
    if executor is not None:
        schema.execution_context_class = executor
    variables = {"filter": case.filter, "first": 50, "after": case.after}

    async def run() -> None:
        result = await schema.execute(FULL_PAGE, variable_values=variables)
        if result.errors:
            raise RuntimeError(result.errors)

    return run


def literal(value: object) -> str:
    """A SQL literal for EXPLAIN EXECUTE (bench values only: no quotes inside)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    if isinstance(value, list):
        return "'{" + ",".join(str(v) for v in value) + "}'"
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network | ipaddress.IPv4Address):
        return f"'{value}'"
    return f"'{value}'"


@dataclass(frozen=True)
class PlanSummary:
    partitions: int
    indexes: list[str]
    execution_ms: float
    text: str


def summarize(plan_lines: list[str]) -> PlanSummary:
    text = "\n".join(plan_lines)
    scanned = {
        m.group(1)
        for line in plan_lines
        if "never executed" not in line
        for m in [re.search(r" on (audit_events_\d{4}_\d{2})", line)]
        if m
    }
    # One name per partitioned index: audit_events_2026_11_pkey -> pkey.
    indexes = sorted(
        {re.sub(r"^audit_events_\d{4}_\d{2}_", "", i) for i in re.findall(r"using (\w+)", text)}
    )
    ms = re.search(r"Execution Time: ([\d.]+) ms", text)
    return PlanSummary(len(scanned), indexes, float(ms.group(1)) if ms else -1.0, text)


async def explain_prepared(
    conn: asyncpg.Connection, sql: str, args: list[object], runs_before: int = 6
) -> tuple[PlanSummary, PlanSummary]:
    """EXPLAIN (ANALYZE, BUFFERS) of the first run and of the run after `runs_before`
    executions of the same server-side prepared statement."""
    await conn.execute(f"PREPARE bench_page AS {sql}")
    call = "EXECUTE bench_page(" + ", ".join(literal(a) for a in args) + ")"
    first = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {call}")
    for _ in range(runs_before - 1):
        await conn.fetch(call)
    later = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {call}")
    await conn.execute("DEALLOCATE bench_page")
    return summarize([r[0] for r in first]), summarize([r[0] for r in later])


def page_sql(workspace_id: str, case: Case, after: TimePosition | None) -> tuple[str, list[object]]:
    """The page's first statement as the service sends it (for an address block,
    the window read, which a page that it fills never goes past)."""
    flt = AuditEventFilter(**_snake(case.filter)).to_filter()
    bounds = PageBounds(limit=51, older_than=after, workspace_retention=True)
    if bounded_block(flt):
        return block_window_query(workspace_id, flt, bounds)
    return page_query(workspace_id, flt, bounds)
