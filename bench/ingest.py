"""Ingest benchmark: HTTP ingest against raw COPY of the same rows, side by side.

    DATABASE_URL=postgresql://postgres@127.0.0.1/postgres python -m bench.ingest [--events N]

1. A fresh database; `auditlog serve` as a subprocess with enrichment on (a City
   .mmdb built like the tests' one; `--geoip default`: no City database, so DB-IP's
   packaged country database; `--geoip none`: no location at all); N events in
   batches of 1,000 over HTTP from 4 concurrent clients. Prints events/s.
2. The rows that ingest stored are read back and COPYed with asyncpg's
   copy_records_to_table into the same table of a second fresh database, in the
   same batches from 4 concurrent connections. Prints rows/s: the floor.
3. Prints the ratio (target: at least 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from auditlog.storage.events import INSERT_COLUMNS
from bench.common import (
    Timer,
    backend_cpu,
    cpu_since,
    fresh_database,
    process_cpu,
    server_process,
    tree_cpu,
)
from tests.geoip import build_city_mmdb

BATCH = 1000
CLIENTS = 4

_UAS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36 Edg/{v}.0.0.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
]
_ACTIONS = [
    "user.login.success", "user.login.failed", "file.uploaded", "file.deleted",
    "file.share.created", "workspace.user.invited", "mailbox.created", "ai.api_key.used",
]  # fmt: skip


def make_batches(total: int, seed: int = 1, size: int = BATCH) -> list[bytes]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    prefixes = ["81.2.69", "89.160.20", "175.16.199", "216.160.83", "203.0.113", "198.51.100"]
    batches: list[bytes] = []
    for start in range(0, total, size):
        events: list[dict[str, Any]] = []
        for _ in range(min(size, total - start)):
            user = rng.randint(1, 2000)
            action = rng.choice(_ACTIONS)
            events.append(
                {
                    "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "occurredAt": (now - timedelta(seconds=rng.randint(0, 20 * 86400))).isoformat(),
                    "action": action,
                    "actor": {
                        "type": "USER",
                        "id": f"u_{user}",
                        "name": f"User {user}",
                        "email": f"user{user}@acme.io",
                    },
                    "targets": [
                        {"type": "file", "id": f"f_{rng.randint(1, 10**6)}", "name": "report.pdf"}
                    ],
                    "ipAddress": f"{rng.choice(prefixes)}.{rng.randint(1, 254)}",
                    "userAgent": rng.choice(_UAS).format(v=rng.randint(110, 131)),
                    "metadata": {"requestId": uuid.uuid4().hex, "size": rng.randint(1, 10**7)},
                }
            )
        batches.append(orjson.dumps(events))
    return batches


async def post_batches(bases: Sequence[str], key: str, batches: list[bytes], clients: int) -> None:
    """Every batch, from `clients` concurrent clients, client i on API i mod len(bases)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in batches:
        queue.put_nowait(body)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def client(base: str) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            while not queue.empty():
                body = queue.get_nowait()
                response = await http.post("/v1/events", content=body, headers=headers)
                if response.status_code != 202:
                    raise RuntimeError(f"{response.status_code}: {response.text[:300]}")

    await asyncio.gather(*(client(bases[i % len(bases)]) for i in range(clients)))


async def http_ingest(base: str, key: str, batches: list[bytes]) -> float:
    """Seconds to post every batch to `base` from CLIENTS concurrent clients."""
    with Timer() as timer:
        await post_batches([base], key, batches, CLIENTS)
    return timer.seconds


async def raw_copy(url: str, rows: list[tuple[Any, ...]]) -> tuple[float, float]:
    """COPY of `rows` in batches from 4 connections; (seconds, CPU seconds of this
    process and the 4 backends)."""
    days = sorted({r[1].date().replace(day=1) for r in rows})
    conns = [await asyncpg.connect(url) for _ in range(CLIENTS)]
    for day in days:
        await conns[0].execute("SELECT auditlog_ensure_partition($1)", day)
    chunks = [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]
    queue: asyncio.Queue[list[tuple[Any, ...]]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)

    async def worker(conn: asyncpg.Connection) -> None:
        while not queue.empty():
            chunk = queue.get_nowait()
            await conn.copy_records_to_table("audit_events", records=chunk, columns=INSERT_COLUMNS)

    pids = [conn.get_server_pid() for conn in conns]
    cpu = time.process_time() - sum(process_cpu(pid) for pid in pids)
    with Timer() as timer:
        await asyncio.gather(*(worker(c) for c in conns))
    cpu = time.process_time() + sum(process_cpu(pid) for pid in pids) - cpu
    for conn in conns:
        await conn.close()
    return timer.seconds, cpu


SECRET_KEY = "b" * 32


@dataclass(frozen=True)
class IngestRun:
    http_seconds: float
    copy_seconds: float
    # CPU seconds on this machine: the server process and its database backends
    # during the HTTP phase; this process and its backends during the COPY.
    http_cpu: float
    copy_cpu: float


def ingest_env(mmdb: Path) -> dict[str, str]:
    """The server's environment for ingest with enrichment on. The per-key rate limit
    (5,000 events/s by default) is off: it would measure itself."""
    return {
        "AUDITLOG_GEOIP_DB": str(mmdb),
        "AUDITLOG_SECRET_KEY": SECRET_KEY,
        "AUDITLOG_INGEST_EVENTS_PER_SECOND": "0",
    }


async def create_ingest_key(
    url: str, data_dir: Path, mmdb: Path | None, workspace: str = "bench", role: str = "ingest"
) -> str:
    """Workspace `workspace` (enterprise plan) and a key of `role` for it."""
    from auditlog.config import Settings
    from auditlog.runtime import open_services
    from auditlog.services import keys as key_service
    from auditlog.services import workspaces as workspace_service

    settings = Settings(database_url=url, data_dir=data_dir, secret_key=SECRET_KEY, geoip_db=mmdb)
    async with open_services(settings, pool_size=2) as services:
        await workspace_service.create_workspace(services.pool, workspace, "enterprise")
        key = await key_service.create_key(
            services.pool, services.ingestor, workspace_id=workspace, role=role
        )
    return key.key


async def read_ingested_rows(url: str, total: int) -> list[tuple[Any, ...]]:
    """The rows ingest stored for workspace `bench`, as COPY records (the key's event left out)."""
    conn = await asyncpg.connect(url)
    stored = await conn.fetch(
        f"SELECT {', '.join(INSERT_COLUMNS)} FROM audit_events WHERE workspace_id = "
        "'bench' AND action <> 'audit_log.api_key.created' ORDER BY seq"
    )
    await conn.close()
    rows = [tuple(r.values()) for r in stored]
    assert len(rows) == total, (len(rows), total)
    return rows


async def ingest_vs_copy(
    batches: list[bytes],
    data_dir: Path,
    mmdb: Path,
    *,
    server_workers: int = 1,
    background: bool = False,
    env: dict[str, str] | None = None,
    before_stop: Callable[[str], Awaitable[None]] | None = None,
    after_ingest: Callable[[str], Awaitable[None]] | None = None,
    quiet: bool = False,
) -> IngestRun:
    """HTTP ingest of `batches` into a fresh database, then raw COPY of the rows it
    stored into another. `before_stop(url)` runs once the last batch was accepted,
    inside the HTTP phase's CPU count (not its time); `after_ingest(url)` once the
    server stopped, before the rows are read back."""
    total = sum(len(orjson.loads(b)) for b in batches)
    async with fresh_database("bench_ingest") as url_a, fresh_database("bench_copy") as url_b:
        key = await create_ingest_key(url_a, data_dir, mmdb)
        full_env = {**ingest_env(mmdb), **(env or {})}
        workers = ["--workers", str(server_workers)]
        probe = await asyncpg.connect(url_a)
        async with server_process(url_a, full_env, workers, background=background) as (
            base,
            proc,
        ):
            if not quiet:
                print(
                    f"HTTP ingest: {len(batches)} batches of {BATCH}, {CLIENTS} clients", flush=True
                )
            server_before, backends_before = tree_cpu(proc.pid), await backend_cpu(probe)
            http_seconds = await http_ingest(base, key, batches)
            if before_stop is not None:
                await before_stop(url_a)
            http_cpu = tree_cpu(proc.pid) - server_before
            http_cpu += cpu_since(backends_before, await backend_cpu(probe))
        await probe.close()
        if after_ingest is not None:
            await after_ingest(url_a)
        rows = await read_ingested_rows(url_a, total)
        if not quiet:
            print(f"raw COPY of the same {len(rows):,} rows, {CLIENTS} connections", flush=True)
        copy_seconds, copy_cpu = await raw_copy(url_b, rows)
    return IngestRun(http_seconds, copy_seconds, http_cpu, copy_cpu)


async def main(total: int, server_workers: int, geoip: str = "city") -> None:
    print(f"generating {total:,} events ...", flush=True)
    batches = make_batches(total)
    with tempfile.TemporaryDirectory() as tmp:
        mmdb = build_city_mmdb(Path(tmp) / "city.mmdb")
        # `--geoip default`: no City database, so the packaged country default.
        env = {} if geoip == "city" else {"AUDITLOG_GEOIP_DB": "" if geoip == "default" else "none"}
        print(f"location from: {geoip}", flush=True)
        run = await ingest_vs_copy(batches, Path(tmp), mmdb, server_workers=server_workers, env=env)
    http_rate = total / run.http_seconds
    copy_rate = total / run.copy_seconds
    print(f"HTTP ingest : {http_rate:,.0f} events/s ({run.http_seconds:.1f} s)")
    print(f"raw COPY    : {copy_rate:,.0f} rows/s ({run.copy_seconds:.1f} s)")
    print(f"ratio       : {http_rate / copy_rate:.2f} (target >= 0.5)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--server-workers", type=int, default=1, help="`serve --workers N`")
    parser.add_argument(
        "--geoip",
        choices=["city", "default", "none"],
        default="city",
        help="the test City .mmdb, the packaged country database, or no location",
    )
    args = parser.parse_args()
    started = time.time()
    asyncio.run(main(args.events, args.server_workers, args.geoip))
    print(f"total wall time {time.time() - started:.0f} s")
