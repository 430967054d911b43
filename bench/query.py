"""Query benchmark: auditEvents over HTTP against two floors, on millions of events.

    python bench/query.py --total 10000000 --big 1000000 --workspaces 1000

Generates the data once into its own database (reused on the next run when it
holds the same number of events), starts `auditlog serve` on it, and for the
1,000,000-event workspace measures p50/p99 over HTTP of the first page of 50
(unfiltered and with each filter) and of page 1,000 reached by cursors. In the
same run: the same SQL through asyncpg (the database floor) and Strawberry
alone executing the same document over the same rows in memory (the GraphQL
floor), with the ratios. Then EXPLAIN (ANALYZE, BUFFERS) of every query, also
on the sixth run of a prepared statement, to show pruning and index use.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditlog.runtime import migrate
from bench.query_data import BenchData, generate, loaded_count


def _database_url(server_url: str, name: str) -> str:
    base, _, query = server_url.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}" + (f"?{query}" if query else "")


async def prepare_database(server_url: str, name: str, data: BenchData) -> str:
    """The bench database holding exactly `data` (created and generated when needed)."""
    admin = await asyncpg.connect(server_url)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        url = _database_url(server_url, name)
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
    parser.add_argument("--generate-only", action="store_true")
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = BenchData(total=args.total, big=args.big, workspaces=args.workspaces)
    url = await prepare_database(args.server_url, args.db_name, data)
    if args.generate_only:
        return


if __name__ == "__main__":
    asyncio.run(main())
