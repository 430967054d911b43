"""Export benchmark (not a test): download speed against raw COPY, and server memory.

1. A 10,000-row CSV part downloaded over HTTP from `auditlog serve`, against raw
   `COPY (SELECT payload ... the same rows ...) TO STDOUT`, measured alternately
   in the same run; the ratio of medians is the figure (target: at most 2).
2. A 1,000,000-row export downloaded in full (every part) while the server's
   RSS is sampled from /proc every 10 ms: peak growth over the RSS before the
   download (target: at most 50 MB).

The server runs as a subprocess (`auditlog serve --no-background`) on a fresh
database created on DATABASE_URL's server and dropped afterwards. 1,000 events
are ingested through the real ingest path (validation, enrichment), then
replicated in SQL with new ids and shifted times up to --events rows.

    DATABASE_URL=postgresql://... python -m bench.export [--events 1000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from auditlog.config import Settings
from auditlog.runtime import open_services
from auditlog.services import keys as key_service
from auditlog.services import workspaces as workspace_service
from auditlog.storage import exports as export_store
from auditlog.storage.database import create_pool
from bench.common import fresh_database, server_process

SECRET = "bench-secret-key-0123456789abcdef"
WORKSPACE = "bench"
TEMPLATES = 1000
ACTIONS = [
    "user.login.success",
    "user.login.failed",
    "file.uploaded",
    "file.deleted",
    "folder.created",
    "file.share.created",
    "workspace.user.invited",
    "ai.workflow.created",
]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
]
# The same rows rendered to CSV columns by PostgreSQL itself (no neutralisation):
# the alternative to encoding in Python, measured beside it.
PG_CSV = """SELECT e.id, e."occurredAt", e.category, e.action, e.actor ->> 'type',
    e.actor ->> 'id', e.actor ->> 'name', e.actor ->> 'email', e.targets::text, e."ipAddress",
    e.location ->> 'city', e.location ->> 'region', e.location ->> 'country',
    e.device ->> 'browser', e.device ->> 'os', e.device ->> 'device', e."userAgent",
    e.metadata::text
FROM ({part}) part, json_to_record(part.payload::json) AS e(id text, "occurredAt" text,
    category text, action text, actor json, targets json, "ipAddress" text, location json,
    device json, "userAgent" text, metadata json)"""
CREATE = """mutation ($input: CreateExportInput!) {
  createExport(input: $input) { id rowCount files { part rowCount url } } }"""


def _template(i: int, when: datetime) -> dict[str, Any]:
    user = i % 200
    return {
        "id": str(uuid.uuid4()),
        "occurredAt": when.isoformat(),
        "action": ACTIONS[i % len(ACTIONS)],
        "actor": {
            "type": "USER",
            "id": f"u_{user}",
            "name": f"User {user}",
            "email": f"user{user}@acme.io",
        },
        "targets": [{"type": "file", "id": f"f_{i}", "name": f"report-{i}.pdf"}],
        "ipAddress": random.choice(["81.2.69.142", "2.125.160.216", "89.160.20.112"]),
        "userAgent": AGENTS[i % len(AGENTS)],
        "metadata": {"requestId": str(uuid.uuid4()), "size": i * 17, "reason": "bench"},
    }


async def load(url: str, data_dir: Path, events: int) -> tuple[str, datetime]:
    """Ingest the templates for real, replicate them in SQL; return (admin key, newest)."""
    settings = Settings(
        database_url=url,
        data_dir=data_dir,
        secret_key=SECRET,
        geoip_db=Path(os.environ["AUDITLOG_GEOIP_DB"])
        if os.environ.get("AUDITLOG_GEOIP_DB")
        else None,
    )
    newest = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    async with open_services(settings, pool_size=4) as services:
        await workspace_service.create_workspace(services.pool, WORKSPACE, "enterprise", None)
        key = await key_service.create_key(
            services.pool, services.ingestor, workspace_id=WORKSPACE, role="admin"
        )
        raw = [_template(i, newest - timedelta(seconds=i)) for i in range(TEMPLATES)]
        await services.ingestor.ingest(raw, WORKSPACE)
    copies = -(-events // TEMPLATES) - 1
    conn = await asyncpg.connect(url, server_settings={"TimeZone": "UTC"})
    try:
        oldest = newest - timedelta(seconds=TEMPLATES * (copies + 1))
        day = oldest.date()
        while day <= newest.date():
            await conn.execute("SELECT auditlog_ensure_partition($1)", day)
            day += timedelta(days=1)
        for first in range(1, copies + 1, 100):
            last = min(copies, first + 99)
            started = time.perf_counter()
            await conn.execute(
                """INSERT INTO audit_events (workspace_id, occurred_at, id, received_at, action,
                       category, actor_type, actor_id, actor_email, ip, target_ids, payload)
                   SELECT workspace_id, at, nid, received_at, action, category, actor_type,
                       actor_id, actor_email, ip, target_ids,
                       replace(replace(payload, id::text, nid::text),
                               '"occurredAt":"' || to_char(occurred_at, $5) || '"',
                               '"occurredAt":"' || to_char(at, $5) || '"')
                   FROM (SELECT t.*, gen_random_uuid() AS nid,
                                t.occurred_at - g * $4::interval AS at
                         FROM audit_events t, generate_series($2::int, $3::int) g
                         WHERE t.workspace_id = $1 AND t.occurred_at <= $6
                           AND t.occurred_at > $6 - $4::interval  -- the templates only
                        ) copies""",
                WORKSPACE,
                first,
                last,
                timedelta(seconds=TEMPLATES),
                'YYYY-MM-DD"T"HH24:MI:SS.US"Z"',
                newest,
            )
            print(
                f"  loaded copies {first}-{last} in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        await conn.execute("ANALYZE audit_events")
    finally:
        await conn.close()
    return key.key, newest


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class PeakSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.01)


async def fetch(client: httpx.AsyncClient, url: str) -> tuple[float, int, int]:
    """(seconds, bytes, CRLF-terminated records) of one streamed download."""
    started = time.perf_counter()
    size = records = 0
    async with client.stream("GET", url) as response:
        response.raise_for_status()
        last = b""
        async for chunk in response.aiter_raw():
            size += len(chunk)
            records += chunk.count(b"\r\n") + (last == b"\r" and chunk[:1] == b"\n")
            last = chunk[-1:]
    return time.perf_counter() - started, size, records


async def raw_copy(conn: asyncpg.Connection, sql: str, args: list[object], **options: Any) -> float:
    size = 0

    async def sink(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)

    started = time.perf_counter()
    await conn.copy_from_query(sql, *args, output=sink, **options)
    return time.perf_counter() - started


async def create(
    client: httpx.AsyncClient, base: str, key: str, file_format: str, newest: datetime
) -> dict[str, Any]:
    variables = {
        "input": {
            "format": file_format,
            "filter": {"occurredTo": (newest + timedelta(seconds=1)).isoformat()},
        }
    }
    started = time.perf_counter()
    answer = await client.post(
        f"{base}/graphql",
        json={"query": CREATE, "variables": variables},
        headers={"Authorization": f"Bearer {key}"},
    )
    export: dict[str, Any] = answer.json()["data"]["createExport"]
    print(
        f"createExport ({file_format}) of {export['rowCount']:,} rows in "
        f"{len(export['files'])} files answered in {time.perf_counter() - started:.2f} s"
    )
    return export


async def compare_first_part(
    client: httpx.AsyncClient, url: str, csv_export: dict[str, Any], json_url: str, rounds: int
) -> None:
    """Download part 1 (10,000 rows) and COPY the same rows, alternately, `rounds` times."""
    pool = await create_pool(url, min_size=1, max_size=1)
    async with pool.acquire() as conn:
        row = await export_store.read_export(conn, WORKSPACE, uuid.UUID(csv_export["id"]))
        assert row is not None
        sql, args = export_store.part_query(row, 1)
        csv_url = csv_export["files"][0]["url"]
        await fetch(client, csv_url)
        await raw_copy(conn, sql, args)
        times: dict[str, list[float]] = {"csv": [], "json": [], "copy": [], "pg_csv": []}
        for _ in range(rounds):
            seconds, size, records = await fetch(client, csv_url)
            assert records == 10_001, records
            times["csv"].append(seconds)
            times["json"].append((await fetch(client, json_url))[0])
            times["copy"].append(await raw_copy(conn, sql, args))
            times["pg_csv"].append(
                await raw_copy(conn, PG_CSV.format(part=sql), args, format="csv")
            )
    await pool.close()
    ms = {name: statistics.median(values) * 1000 for name, values in times.items()}
    print(
        f"10,000-row part, median of {rounds}: raw COPY {ms['copy']:.0f} ms; "
        f"CSV download {ms['csv']:.0f} ms ({size / 1e6:.1f} MB), ratio "
        f"{ms['csv'] / ms['copy']:.2f} (target <= 2); JSON download {ms['json']:.0f} ms, "
        f"ratio {ms['json'] / ms['copy']:.2f}"
    )
    print(
        f"  for reference, COPY of the same rows rendered to CSV by PostgreSQL "
        f"(json_to_record): {ms['pg_csv']:.0f} ms"
    )


async def download_all(client: httpx.AsyncClient, export: dict[str, Any], pid: int) -> None:
    """Every part of the export, while the server's RSS is sampled."""
    before = rss_kib(pid)
    sampler = PeakSampler(pid)
    sampler.start()
    started = time.perf_counter()
    total_rows = total_bytes = 0
    for file in export["files"]:
        _, size, records = await fetch(client, file["url"])
        assert records - 1 == file["rowCount"], (records, file["rowCount"])
        total_rows += records - 1
        total_bytes += size
    elapsed = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    print(
        f"full CSV download: {total_rows:,} rows, {total_bytes / 1e6:.0f} MB in "
        f"{len(export['files'])} files, {elapsed:.1f} s ({total_rows / elapsed:,.0f} rows/s)"
    )
    print(
        f"server RSS before {before / 1024:.1f} MB, peak {sampler.peak / 1024:.1f} MB: "
        f"growth {(sampler.peak - before) / 1024:.1f} MB (target <= 50 MB)"
    )


async def measure(url: str, base: str, key: str, newest: datetime, rounds: int, pid: int) -> None:
    async with httpx.AsyncClient(timeout=900) as client:
        csv_export = await create(client, base, key, "CSV", newest)
        json_export = await create(client, base, key, "JSON", newest)
        json_url = json_export["files"][0]["url"]
        await compare_first_part(client, url, csv_export, json_url, rounds)
        await download_all(client, csv_export, pid)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    async with fresh_database("auditlog_bench_exports") as url:
        with tempfile.TemporaryDirectory(prefix="auditlog-bench-") as tmp:
            started = time.perf_counter()
            key, newest = await load(url, Path(tmp), options.events)
            print(f"loaded {options.events:,} events in {time.perf_counter() - started:.0f} s")
        async with server_process(url, env={"AUDITLOG_SECRET_KEY": SECRET}) as (base, process):
            await measure(url, base, key, newest, options.rounds, process.pid)


if __name__ == "__main__":
    asyncio.run(main())
