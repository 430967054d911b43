"""Retention purge under ingest load (not a test; prints figures).

A fresh database on DATABASE_URL's server gets TOTAL events: EXPIRING of one
workspace spread over 100-400 days ago (sharing every month with nine
unlimited workspaces, so they go row by row), ALONE events of another
workspace 450-510 days ago (months nobody else uses: dropped whole), and the
rest spread over the nine unlimited workspaces, 0-400 days ago. The real
service (`auditlog serve`) then takes RATE events/s on POST /v1/events in
batches of 100, sent open-loop (on schedule, whatever the previous answer
time), and the real `auditlog maintain` runs beside it:

1. baseline: ingest alone (after a checkpoint of the loaded data);
2. partition drop: the ALONE workspace downgraded to EARLY_ACCESS, maintain;
3. row purge: the EXPIRING workspace downgraded to EARLY_ACCESS, maintain;
4. after purge: ingest alone again.

The ratio compares the p99 during each pass with the p99 of phases 1 and 4 together.

Usage: DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python -m bench.retention
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson

from bench.common import fresh_database, percentile, server_process
from bench.datagen import ensure_months, generate_events

KEEPERS = [f"keep-{i}" for i in range(9)]
BATCH = 100
SECRET = "bench-secret-key-0123456789abcdef"


def cli_env(url: str, data_dir: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": url, "AUDITLOG_DATA_DIR": data_dir}
    env["AUDITLOG_SECRET_KEY"] = SECRET
    env["AUDITLOG_RETENTION_GRACE_DAYS"] = "0"  # the downgrades below purge at once
    env.pop("REDIS_URL", None)
    return env


async def run_cli(env: dict[str, str], *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "auditlog.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"auditlog {' '.join(args)} failed: {err.decode()[-2000:]}")
    return out.decode()


async def load_data(conn: asyncpg.Connection, total: int, expiring: int, alone: int) -> None:
    now = datetime.now(UTC)
    await conn.execute(
        "INSERT INTO workspaces (id, plan, retention_days) SELECT w, 'ENTERPRISE', NULL "
        "FROM unnest($1::text[]) AS w",
        ["expiring", "alone", "live", *KEEPERS],
    )
    await ensure_months(conn, now, 520)
    started = time.perf_counter()
    await generate_events(conn, "alone", alone, now - timedelta(days=450), 60)
    await generate_events(conn, "expiring", expiring, now - timedelta(days=100), 300)
    each = (total - expiring - alone) // len(KEEPERS)
    for ws in KEEPERS:
        await generate_events(conn, ws, each, now, 400)
    print(f"generated {total:,} events in {time.perf_counter() - started:.0f} s", flush=True)
    await conn.execute("VACUUM ANALYZE audit_events")
    await conn.execute("VACUUM ANALYZE audit_event_ids")


class IngestLoad:
    """RATE events/s in batches of BATCH, open loop; latencies by phase."""

    def __init__(self, base_url: str, key: str, rate: int) -> None:
        self.client = httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )
        self.interval = BATCH / rate
        self.phase = "warmup"
        self.latencies: dict[str, list[float]] = {}
        self.failures = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _body(self) -> bytes:
        now = datetime.now(UTC).isoformat()
        return orjson.dumps([
            {"id": str(uuid.uuid4()), "occurredAt": now, "action": "file.uploaded",
             "actor": {"type": "USER", "id": f"u_{i}", "email": f"u{i}@acme.io"},
             "targets": [{"type": "file", "id": f"f_{i}"}], "ipAddress": "81.2.69.142",
             "metadata": {"size": i}}
            for i in range(BATCH)
        ])  # fmt: skip

    async def _send(self, phase: str) -> None:
        started = time.perf_counter()
        response = await self.client.post(
            "/v1/events", content=self._body(), headers={"content-type": "application/json"}
        )
        if response.status_code != 202:
            self.failures += 1
            return
        self.latencies.setdefault(phase, []).append(time.perf_counter() - started)

    async def run(self, stop: asyncio.Event) -> None:
        next_at = time.perf_counter()
        while not stop.is_set():
            task = asyncio.create_task(self._send(self.phase))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.gather(*self._tasks)
        await self.client.aclose()


def p99_ms(values: list[float]) -> float:
    return percentile(values, 99) * 1000


async def downgrade(owner: asyncpg.Connection, workspace_id: str) -> None:
    await owner.execute(
        "UPDATE workspaces SET plan = 'EARLY_ACCESS', retention_days = 90 WHERE id = $1",
        workspace_id,
    )


async def timed_maintain(env: dict[str, str], load: IngestLoad, phase: str) -> tuple[float, str]:
    load.phase = phase
    started = time.perf_counter()
    out = await run_cli(env, "maintain")
    elapsed = time.perf_counter() - started
    return elapsed, out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--total", type=int, default=3_000_000)
    parser.add_argument("--expiring", type=int, default=1_000_000)
    parser.add_argument("--alone", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--baseline-seconds", type=float, default=40)
    args = parser.parse_args()
    async with fresh_database("auditlog_bench_retention") as url:
        env = cli_env(url, tempfile.mkdtemp(prefix="auditlog-bench-"))
        owner = await asyncpg.connect(url)
        await load_data(owner, args.total, args.expiring, args.alone)
        created = await run_cli(
            env, "keys", "create", "--workspace", "live", "--role", "ingest", "--json"
        )
        async with server_process(url, env=env) as (base, _):
            load = IngestLoad(base, orjson.loads(created)["key"], args.rate)
            stop = asyncio.Event()
            runner = asyncio.create_task(load.run(stop))
            # The load leaves dirty pages behind: write them now, not during the baseline.
            await owner.execute("CHECKPOINT")
            await asyncio.sleep(5)
            load.phase = "baseline"
            await asyncio.sleep(args.baseline_seconds)
            await downgrade(owner, "alone")
            drop_s, drop_out = await timed_maintain(env, load, "partition drop")
            await downgrade(owner, "expiring")
            purge_s, purge_out = await timed_maintain(env, load, "row purge")
            # Ingest alone again: the purge's dead rows and their vacuum included.
            load.phase = "after purge"
            await asyncio.sleep(args.baseline_seconds)
            stop.set()
            await runner
        left = await owner.fetchval(
            "SELECT count(*) FROM audit_events WHERE workspace_id IN ('expiring', 'alone')"
        )
        await owner.close()
    print(drop_out.strip())
    print(purge_out.strip())
    print(
        f"\nevents: {args.total:,} total; purged {args.expiring:,} by row "
        f"and {args.alone:,} by partition drop; left of theirs: {left}"
    )
    print(f"ingest: {args.rate} events/s in batches of {BATCH}; failures {load.failures}")
    print(
        f"partition drop pass: {drop_s:.1f} s   row purge pass: {purge_s:.1f} s "
        f"({args.expiring / purge_s:,.0f} events/s)"
    )
    report(load)


def report(load: IngestLoad) -> None:
    without = load.latencies["baseline"] + load.latencies["after purge"]
    print(f"{'phase':<16}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for phase in ("baseline", "partition drop", "row purge", "after purge"):
        lat = load.latencies.get(phase, [])
        if lat:
            print(
                f"{phase:<16}{len(lat):>9}{statistics.median(lat) * 1000:>9.1f}"
                f"{p99_ms(lat):>9.1f}{max(lat) * 1000:>9.1f}"
            )
    for phase in ("partition drop", "row purge"):
        if load.latencies.get(phase):
            ratio = p99_ms(load.latencies[phase]) / p99_ms(without)
            print(
                f"ingest p99 during {phase} / without (before and after together): "
                f"{ratio:.2f}x (target <= 2)"
            )


if __name__ == "__main__":
    asyncio.run(main())
