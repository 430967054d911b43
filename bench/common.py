"""Shared helpers for benchmarks: a fresh database, a server subprocess, percentiles."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx

from auditlog.runtime import migrate
from auditlog.storage.events import INGEST_ORDER_AFTER, StoredEvent


def server_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("set DATABASE_URL to a PostgreSQL server the benchmark may create databases on")
    return url


def with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}" + (f"?{query}" if query else "")


@asynccontextmanager
async def fresh_database(prefix: str, keep: bool = False) -> AsyncIterator[str]:
    """A new migrated database, dropped afterwards unless keep."""
    root = server_url()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(root)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = with_database(root, name)
    await migrate(url)
    try:
        yield url
    finally:
        if not keep:
            conn = await asyncpg.connect(root)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def server_process(
    database_url: str,
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    *,
    background: bool = False,
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """`auditlog serve` as a subprocess on a free port; yields (base_url, process).

    `--no-background` unless `background`: then the server also runs its sealer,
    stream workers and maintenance, as deployed."""
    port = free_port()
    full_env = {**os.environ, "DATABASE_URL": database_url, **(env or {})}
    full_env.pop("REDIS_URL", None)
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-serve-{port}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditlog.cli", "serve", "--port", str(port),
         *([] if background else ["--no-background"]), "--log-level", "warning", *args],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                try:
                    if (await client.get(f"{base}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited; see {log_path}")
                await asyncio.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process used so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live children (`serve --workers N`)."""
    total = process_cpu(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            total += process_cpu(int(stat.parent.name))
    return total


async def backend_cpu(conn: asyncpg.Connection) -> dict[int, float]:
    """CPU seconds so far of every other PostgreSQL backend on conn's database (the
    server runs on this machine)."""
    pids = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    return {r["pid"]: process_cpu(r["pid"]) for r in pids}


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU the backends used between two samples (a backend new since `before`: all of it)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


async def read_events_since(
    conn: asyncpg.Connection,
    workspace_id: str,
    *,
    after_xid: int,
    after_seq: int,
    limit: int,
    retention_start: datetime | None = None,
) -> list[StoredEvent]:
    """Events in ingest order after (xid, seq), only below the safe watermark: the
    read every stream delivery starts with, without the filter columns.

    Everything returned is final: no transaction that could still add an event
    before the last row returned is running.
    """
    records = await conn.fetch(
        f"""SELECT workspace_id, occurred_at, seq, xid::text::bigint AS xid, payload
            {INGEST_ORDER_AFTER}""",
        workspace_id,
        str(after_xid),
        after_seq,
        limit,
        retention_start,
    )
    return [StoredEvent.from_record(r) for r in records]
