"""Query benchmark: auditEvents over HTTP against two floors, on millions of events.

    python bench/query.py --total 10000000 --big 1000000 --workspaces 1000

Generates the data once into its own database (reused on the next run when it
holds the same number of events), starts `auditlog serve` on it, and for the
1,000,000-event workspace measures p50/p99 over HTTP of the first page of 50
(unfiltered and with each filter) and of page 1,000 reached by cursors. In the
same run: the same SQL through asyncpg (the database floor) and Strawberry
alone executing the same document over the same rows in memory (the GraphQL
floor: Strawberry's stock execution, and beside it the service's own execution
context, schema/execution.py), with the ratios. Requests go through http.client
on one keep-alive connection; httpx's cost is printed once for comparison.
Then EXPLAIN (ANALYZE, BUFFERS) of every query, also on the sixth run of a
prepared statement, to show pruning and index use.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditlog.cursors import CursorCodec
from auditlog.ingest.enrich import GeoIP
from auditlog.model import TimePosition
from auditlog.runtime import migrate
from auditlog.schema.inputs import AuditEventFilter
from auditlog.services import keys as key_service
from auditlog.services.ingest import Ingestor
from auditlog.storage.database import create_pool
from auditlog.storage.events import page_connection
from bench.common import server_process, with_database
from bench.query_data import BIG, BenchData, generate, loaded_count
from bench.query_measure import (
    Case,
    GraphQLClient,
    Run,
    Timing,
    _snake,
    cursor_of_page,
    explain_prepared,
    http_run,
    interleaved,
    measure_sync,
    page_position,
    page_sql,
    sql_run,
    strawberry_run,
)

SECRET_KEY = "bench-query-secret-key-0123456789abcdef"
# The Strawberry-alone floor: Strawberry's own execution, as the issue measures it
# (parser and validation caches on). "executor" is the service's execution context
# (schema/execution.py), which completes plain leaves without graphql-core's
# per-field machinery; both run the service's schema and extensions.
STOCK_EXECUTION = StrawberryGraphQLCoreExecutionContext
OUT = Path(__file__).resolve().parent / "out"


async def prepare_database(server_url: str, name: str, data: BenchData) -> str:
    """The bench database holding exactly `data` (created and generated when needed)."""
    admin = await asyncpg.connect(server_url)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        url = with_database(server_url, name)
        if exists:
            conn = await asyncpg.connect(url)
            try:
                if await loaded_count(conn) == data.total:
                    print(f"reusing {name} with {data.total:,} events")
                    return url
            finally:
                await conn.close()
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    await migrate(url)
    print(f"generating {data.total:,} events ({data.big:,} in one workspace) into {name}")
    conn = await asyncpg.connect(url)
    try:
        await generate(conn, data)
    finally:
        await conn.close()
    return url


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--total", type=int, default=10_000_000)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--workspaces", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--db-name", default="auditlog_bench_query")
    parser.add_argument(
        "--server-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--deep-page", type=int, default=1000)
    parser.add_argument("--generate-only", action="store_true")
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = BenchData(total=args.total, big=args.big, workspaces=args.workspaces)
    url = await prepare_database(args.server_url, args.db_name, data)
    if args.generate_only:
        return
    await run_benchmark(url, args.requests, args.deep_page)


def cases(deep_cursor: str, deep_page: int) -> list[Case]:
    day = (datetime.now(UTC) - timedelta(days=100)).replace(hour=0, minute=0, second=0)
    day = day.replace(microsecond=0)
    return [
        Case("first page, unfiltered", {}),
        Case("actorEmail", {"actorEmail": f"user42@{BIG}.example"}),
        Case("category", {"categories": ["AUTHENTICATION"]}),
        Case("action prefix", {"actions": ["user.login.*"]}),
        Case("CIDR", {"ipAddress": "81.2.69.0/24"}),
        Case(
            "one day",
            {
                "occurredFrom": day.isoformat(),
                "occurredTo": (day + timedelta(days=1)).isoformat(),
            },
        ),
        Case(f"page {deep_page:,} by cursors", {}, after=deep_cursor),
    ]


def row(name: str, *cells: object) -> str:
    return f"{name:<24}" + "".join(f"{c!s:>14}" for c in cells)


def ms(t: Timing) -> str:
    return f"{t.p50_ms:.2f}/{t.p99_ms:.2f}"


async def run_benchmark(url: str, requests: int, deep_page: int) -> None:
    OUT.mkdir(exist_ok=True)
    pool = await create_pool(url, min_size=1, max_size=2)
    codec = CursorCodec(SECRET_KEY)
    try:
        async with pool.acquire() as conn:
            mode = await conn.fetchval("SHOW plan_cache_mode")
            partitions = await conn.fetchval(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_events'::regclass"
            )
            in_big = await conn.fetchval(
                "SELECT count(*) FROM audit_event_ids WHERE workspace_id = $1", BIG
            )
        print(f"\npool plan_cache_mode = {mode}; {partitions} partitions; {in_big:,} in {BIG}")
        key = await key_service.create_key(
            pool, Ingestor(pool, GeoIP(None)), workspace_id=BIG, role="admin"
        )
        env = {
            "AUDITLOG_SECRET_KEY": SECRET_KEY,
            "AUDITLOG_DATA_DIR": tempfile.mkdtemp(prefix="auditlog-bench-"),
        }
        async with server_process(url, env) as (base, _process):
            client = GraphQLClient(base, key.key)
            started = time.perf_counter()
            deep = cursor_of_page(client, deep_page)
            print(f"walked to page {deep_page:,} in {time.perf_counter() - started:.1f} s")
            typename = {"query": "{ __typename }"}
            fixed = measure_sync(lambda: client.post(typename), requests)
            print(f"HTTP + authentication alone ({{ __typename }}): {ms(fixed)} ms p50/p99")
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key.key}"}) as hx:
                heavy = measure_sync(lambda: hx.post("/graphql", json=typename), requests)
            print(f"  the same through httpx instead of http.client: {ms(heavy)} ms p50/p99")
            print(
                "\n"
                + row(
                    "p50/p99 ms",
                    "HTTP",
                    "SQL floor",
                    "Strawberry",
                    "executor",
                    "HTTP/SQL",
                    "HTTP/SB",
                    "HTTP/exec",
                )
            )
            todo = cases(deep, deep_page)
            runs: dict[str, Run] = {}
            positions = [page_position(codec, BIG, case.after) for case in todo]
            for i, (case, after) in enumerate(zip(todo, positions, strict=True)):
                read = sql_run(pool, BIG, case, after)
                runs[f"http{i}"] = http_run(client, case)
                runs[f"sql{i}"] = read
                rows = await read()
                runs[f"gql{i}"] = strawberry_run(codec, BIG, rows, case, STOCK_EXECUTION)
                runs[f"exe{i}"] = strawberry_run(codec, BIG, rows, case)
            timings = await interleaved(runs, requests)
            results = []
            for i, (case, after) in enumerate(zip(todo, positions, strict=True)):
                e2e, sql, gql = timings[f"http{i}"], timings[f"sql{i}"], timings[f"gql{i}"]
                exe = timings[f"exe{i}"]
                results.append((case, e2e, sql, gql, after))
                print(
                    row(
                        case.name,
                        ms(e2e),
                        ms(sql),
                        ms(gql),
                        ms(exe),
                        f"{e2e.p50_ms / sql.p50_ms:.1f}x",
                        f"{e2e.p50_ms / gql.p50_ms:.2f}x",
                        f"{e2e.p50_ms / exe.p50_ms:.2f}x",
                    ),
                    flush=True,
                )
            first_page = results[0][1].p50_ms
            print(f"\npage {deep_page:,} / page 1 (p50): {results[-1][1].p50_ms / first_page:.2f}x")
            client.close()
        await explain_all(pool, [(c, a) for c, _, _, _, a in results])
    finally:
        await pool.close()


async def explain_all(pool: asyncpg.Pool, todo: list[tuple[Case, TimePosition | None]]) -> None:
    print("\nEXPLAIN (ANALYZE, BUFFERS) as the service runs it (runtime role, and the plan")
    print("mode page_plans chooses: generic plans unless a filter's values decide the plan):")
    print(row("query", "mode", "parts 1st", "parts 7th", "ms 7th") + "  indexes (7th run)")
    for case, after in todo:
        sql, args = page_sql(BIG, case, after)
        flt = AuditEventFilter(**_snake(case.filter)).to_filter()
        async with page_connection(pool, flt) as conn:
            mode = await conn.fetchval("SHOW plan_cache_mode")
            first, seventh = await explain_prepared(conn, sql, args)
        slug = case.name.split(",")[0].replace(" ", "-")
        (OUT / f"explain-{slug}.txt").write_text(f"{sql}\n{args}\n\n{seventh.text}\n")
        kind = "generic" if re.search(r"\$[1-9]", seventh.text) else "custom"
        print(
            row(case.name, kind, first.partitions, seventh.partitions, seventh.execution_ms)
            + "  "
            + ", ".join(seventh.indexes)
            + ("" if mode != "force_generic_plan" or kind == "generic" else "  (!)")
        )
    print(f"plans written to {OUT}/explain-*.txt")


if __name__ == "__main__":
    asyncio.run(main())
