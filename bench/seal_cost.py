"""Sealing CPU per leaf by seal size (not a test): the same events sealed in seals of
`--batches` leaves each, with and without a read of the events first (hint bits).

    DATABASE_URL=... python -m bench.seal_cost [--events 200000] [--batches 65536,4000,1000]

Each case generates `--events` events in SQL into a fresh database (one workspace,
spread over 13 monthly partitions, as bench/query_data.py does), then seals them with
`seal_workspace` until caught up, and prints the CPU of this process and its backend
per leaf and per seal.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import asyncpg

from auditlog.services import integrity as integrity_service
from bench.common import fresh_database, process_cpu
from bench.integrity import signer
from bench.query_data import BIG, BenchData, generate


async def case(events: int, batch: int, preread: bool) -> str:
    async with fresh_database("auditlog_bench_sealcost") as url:
        conn = await asyncpg.connect(url)
        try:
            await generate(conn, BenchData(total=events, big=events, workspaces=1))
            await conn.execute("CHECKPOINT")
            if preread:
                await conn.fetchval(
                    "SELECT count(*) FROM (SELECT payload FROM audit_events"
                    " WHERE workspace_id = $1) s",
                    BIG,
                )
            backend = conn.get_server_pid()
            note_signer = signer()
            cpu = time.process_time() + process_cpu(backend)
            started = time.perf_counter()
            seals = leaves = 0
            while True:
                sealed = await integrity_service.seal_workspace(conn, BIG, note_signer, batch=batch)
                if sealed is None:
                    break
                seals += 1
                leaves += sealed.leaves_added
            seconds = time.perf_counter() - started
            cpu = time.process_time() + process_cpu(backend) - cpu
        finally:
            await conn.close()
    return (
        f"batch {batch:>6} preread {preread!s:<5}: {leaves:,} leaves in {seals} seals, "
        f"{seconds:.2f} s, {cpu / leaves * 1e6:.2f} us CPU/leaf, "
        f"{cpu / seals * 1e3:.2f} ms CPU/seal"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batches", default="65536,4000,1000")
    args = parser.parse_args()
    for batch in (int(b) for b in args.batches.split(",")):
        for preread in (True, False):
            print(await case(args.events, batch, preread), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
