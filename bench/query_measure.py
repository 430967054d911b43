"""Measurements for bench/query.py: HTTP end to end, the asyncpg floor, the
Strawberry-alone floor, and EXPLAIN of every query (also as a prepared
statement after its sixth execution)."""

from __future__ import annotations

import ipaddress
import re
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import strawberry

from auditlog.cursors import CursorCodec
from auditlog.paging import Page
from auditlog.resolvers.events import connection_from_page
from auditlog.schema.inputs import AuditEventFilter
from auditlog.schema.root import build_schema
from auditlog.schema.types import AuditEventConnection, EventCategory
from auditlog.storage.events import (
    PageBounds,
    StoredEvent,
    TimePosition,
    page_query,
    read_events_page,
)

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
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return Timing(statistics.median(ordered) * 1000, p99 * 1000)


async def measure(run: Callable[[], Awaitable[object]], n: int, warmup: int = 20) -> Timing:
    for _ in range(warmup):
        await run()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await run()
        samples.append(time.perf_counter() - started)
    return timing(samples)


def measure_sync(run: Callable[[], object], n: int, warmup: int = 20) -> Timing:
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return timing(samples)


def http_timing(client: httpx.Client, case: Case, n: int) -> Timing:
    body = {"query": FULL_PAGE, "variables": {"filter": case.filter, "first": 50}}
    if case.after:
        body["variables"]["after"] = case.after

    def run() -> None:
        response = client.post("/graphql", json=body)
        if response.status_code != 200 or b'"errors"' in response.content:
            raise RuntimeError(f"{case.name}: {response.status_code} {response.text[:300]}")

    return measure_sync(run, n)


def cursor_of_page(client: httpx.Client, page_number: int, size: int = 50) -> str:
    """The `after` cursor that reaches page `page_number`, walked page by page."""
    after: str | None = None
    for _ in range(page_number - 1):
        response = client.post(
            "/graphql", json={"query": CURSORS_ONLY, "variables": {"first": size, "after": after}}
        )
        after = response.json()["data"]["auditEvents"]["pageInfo"]["endCursor"]
    assert after is not None
    return after


def page_position(codec: CursorCodec, workspace_id: str, cursor: str | None) -> TimePosition | None:
    if cursor is None:
        return None
    decoded = codec.decode(workspace_id, cursor, "after")
    return TimePosition(decoded.occurred_at, decoded.seq)


async def sql_timing(
    pool: asyncpg.Pool, workspace_id: str, case: Case, after: TimePosition | None, n: int
) -> tuple[Timing, list[StoredEvent]]:
    flt = AuditEventFilter(**_snake(case.filter)).to_filter()
    rows: list[StoredEvent] = []

    async def run() -> None:
        nonlocal rows
        async with pool.acquire() as conn:
            rows = await read_events_page(conn, workspace_id, flt, limit=51, older_than=after)

    return await measure(run, n), rows[:50]


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


async def strawberry_floor(
    codec: CursorCodec, workspace_id: str, rows: list[StoredEvent], case: Case, n: int
) -> Timing:
    """The same document, the same schema types and extensions, over rows in memory."""
    page = Page(rows, has_next=True, has_previous=case.after is not None)

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
    variables = {"filter": case.filter, "first": 50, "after": case.after}

    async def run() -> None:
        result = await schema.execute(FULL_PAGE, variable_values=variables)
        if result.errors:
            raise RuntimeError(result.errors)

    return await measure(run, n)


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
    await conn.execute("DEALLOCATE ALL")
    await conn.execute(f"PREPARE bench_page AS {sql}")
    call = "EXECUTE bench_page(" + ", ".join(literal(a) for a in args) + ")"
    first = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {call}")
    for _ in range(runs_before - 1):
        await conn.fetch(call)
    later = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {call}")
    await conn.execute("DEALLOCATE bench_page")
    return summarize([r[0] for r in first]), summarize([r[0] for r in later])


def page_sql(workspace_id: str, case: Case, after: TimePosition | None) -> tuple[str, list[object]]:
    flt = AuditEventFilter(**_snake(case.filter)).to_filter()
    return page_query(workspace_id, flt, PageBounds(limit=51, older_than=after))
