"""Integrity benchmark (not a test): sealing, what it costs ingest, time to a signed
checkpoint, proofs at 10,000,000 events, the tree's storage, an export's proof bundle.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python -m bench.integrity \\
        [--events 10000000] [--big 1000000] [--keep] [--only ingest,latency,export,proofs]

1. Ingest against raw COPY (bench/ingest.py's machinery: fresh databases, `auditlog
   serve` with enrichment, batches of 1,000 from 4 clients, then COPY of the stored
   rows), `--rounds` times in each of three server modes, their order rotated each
   round: `off` (`--no-background`), `idle` (background on, but the sealer's interval
   set to an hour, so only stream workers and maintenance run beside ingest: what
   sealing adds is `on` against this) and `on` (background as deployed, sealing every
   second). After each `off` run the backlog it left is sealed in-process with the
   service's seal functions: sealing leaves/s beside that run's ingest rate.
2. Time from 202 to a signed checkpoint: `serve` with background on, `--rate` events/s
   in batches of `--latency-batch`, sent on a fixed schedule for `--latency-seconds`;
   the latest checkpoint's tree size is polled from the database every 20 ms. Each
   event's leaf index is read from the tree afterwards; its latency is the first poll
   that saw a tree size above that index, minus its batch's 202.
3. A JSON export of `--export-events` events through GraphQL, its files and proof
   bundle downloaded, `auditlog verify` timed as a subprocess (skipped, saying so,
   while the schema has no `Export.proofUrl`).
4. `--events` events generated in SQL (bench/query_data.py, `--big` of them in one
   workspace) into `--db-name`, reused when it holds that many (kept with `--keep`),
   sealed with the service's seal functions (timed; the figure is recorded in the
   database and printed again when it is reused); then p50/p99 of `auditEvent(id)`
   over HTTP with and without `inclusionProof`, interleaved, on random events of the
   big workspace; and the tree's storage per leaf (tables, TOAST and indexes).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from auditlog.config import Settings
from auditlog.ingest.enrich import GeoIP
from auditlog.integrity import merkle
from auditlog.integrity.keys import load_signer
from auditlog.integrity.notes import NoteSigner
from auditlog.services import integrity as integrity_service
from auditlog.services import keys as key_service
from auditlog.services.ingest import Ingestor
from auditlog.storage import integrity as integrity_store
from auditlog.storage.database import create_pool
from bench.common import (
    fresh_database,
    percentile,
    process_cpu,
    server_process,
    server_url,
)
from bench.ingest import (
    SECRET_KEY,
    create_ingest_key,
    http_ingest,
    ingest_env,
    ingest_vs_copy,
    make_batches,
)
from bench.query import prepare_database
from bench.query_data import BIG, BenchData
from bench.query_measure import GraphQLClient, Timing, interleaved
from tests.geoip import build_city_mmdb

# A fixed seed: every server of the run signs with it, and the export's bundle is
# checked with its verifier key, known without asking the server.
SIGNING_SEED = base64.b64encode(bytes(range(32))).decode()
LOG_NAME = "auditlog.local"
WORKSPACE = "bench"
MODES = ("off", "idle", "on")
POLL_SECONDS = 0.02
TREE_TABLES = ("integrity_leaves", "integrity_nodes", "integrity_checkpoints")
# The export's filter leaves out the key's own audit_log.* event: exactly the
# generated events (bench/ingest.py's actions).
EXPORT_ACTIONS = ["user.*", "file.*", "workspace.*", "mailbox.*", "ai.*"]


def signer() -> NoteSigner:
    return load_signer(Settings(signing_key=SIGNING_SEED, log_name=LOG_NAME))


def server_env(mmdb: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **ingest_env(mmdb),
        "AUDITLOG_DATA_DIR": str(data_dir),
        "AUDITLOG_SIGNING_KEY": SIGNING_SEED,
        "AUDITLOG_LOG_NAME": LOG_NAME,
        **extra,
    }


def commit_id() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def tree_size(conn: asyncpg.Connection, workspace_id: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT coalesce(max(tree_size), 0) FROM integrity_checkpoints WHERE workspace_id = $1",
            workspace_id,
        )
    )


@dataclass(frozen=True)
class Storage:
    leaves: int
    runs: int  # rows of integrity_leaves
    checkpoints: int
    bytes_by_table: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.bytes_by_table.values())

    @property
    def per_leaf(self) -> float:
        return self.total / self.leaves if self.leaves else float("nan")

    def describe(self) -> str:
        parts = ", ".join(f"{t} {b:,}" for t, b in self.bytes_by_table.items())
        return (
            f"{self.total:,} bytes for {self.leaves:,} leaves (in {self.runs:,} runs) and "
            f"{self.checkpoints:,} checkpoints: {self.per_leaf:.1f} bytes/leaf ({parts})"
        )


async def tree_storage(conn: asyncpg.Connection) -> Storage:
    # VACUUM first: the visibility and free space maps count too, and are only
    # at their steady size once vacuumed (as autovacuum would, later).
    for table in TREE_TABLES:
        await conn.execute(f"VACUUM (ANALYZE) {table}")
    sizes = {
        t: int(await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", t))
        for t in TREE_TABLES
    }
    leaves = int(
        await conn.fetchval("SELECT coalesce(sum(length(hashes) / 32), 0) FROM integrity_leaves")
    )
    runs = int(await conn.fetchval("SELECT count(*) FROM integrity_leaves"))
    checkpoints = int(await conn.fetchval("SELECT count(*) FROM integrity_checkpoints"))
    return Storage(leaves, runs, checkpoints, sizes)


# 1. Sealing throughput and ingest with sealing on and off.


@dataclass
class ModeRuns:
    ratios: list[float] = field(default_factory=list)
    http_rates: list[float] = field(default_factory=list)
    copy_rates: list[float] = field(default_factory=list)
    # CPU per event of the server and its backends (`on`: until every event was
    # sealed), and per row of the COPY (this process and its backends).
    http_cpu_us: list[float] = field(default_factory=list)
    copy_cpu_us: list[float] = field(default_factory=list)


@dataclass
class IngestResult:
    events: int
    modes: dict[str, ModeRuns]
    seal_rates: list[float]  # leaves/s of each `off` run's backlog
    seal_cpu_us: list[float]  # CPU per leaf of that seal (this process and its backend)
    seal_over_ingest: list[float]  # each `off` run: sealing rate / its HTTP ingest rate
    backlog_on: list[int]  # events of `on` runs not sealed when the server stopped

    def median_ratio(self, mode: str) -> float:
        return statistics.median(self.modes[mode].ratios)

    def median_cpu_ratio(self, mode: str) -> float:
        """The ratio by CPU: the same rows' COPY costs the same in every mode, so its
        CPU is pooled over all runs (what differs between modes is then only ingest's)."""
        copy = statistics.median(c for m in self.modes.values() for c in m.copy_cpu_us)
        return copy / self.median_cpu_us(mode)

    def median_cpu_us(self, mode: str) -> float:
        return statistics.median(self.modes[mode].http_cpu_us)


async def seal_backlog(url: str) -> tuple[int, float, float]:
    """Seal every final event of `url` in-process; (leaves added, seconds, CPU seconds
    of this process and its backend)."""
    conn = await asyncpg.connect(url)
    try:
        backend = conn.get_server_pid()
        cpu = time.process_time() + process_cpu(backend)
        started = time.perf_counter()
        sealed = await integrity_service.seal_all(conn, signer())
        seconds = time.perf_counter() - started
        cpu = time.process_time() + process_cpu(backend) - cpu
    finally:
        await conn.close()
    if sealed.failed:
        raise RuntimeError(f"sealing failed: {sealed.failed}")
    return sealed.leaves_added, seconds, cpu


async def unsealed_events(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        events = await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE workspace_id = $1", WORKSPACE
        )
        return int(events) - await tree_size(conn, WORKSPACE)
    finally:
        await conn.close()


class AfterIngest:
    """Runs on the ingest database once its server stopped: `off` seals the backlog
    (timed), `on` counts what the background sealer had not reached yet."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sealed: tuple[int, float, float] | None = None
        self.backlog: int | None = None
        self.events = 0

    async def before_stop(self, url: str) -> None:
        """`on`: wait until the sealer reached every event, so the HTTP phase's CPU
        includes sealing all of them."""
        if self.mode == "on":
            self.backlog = await unsealed_events(url)
            await wait_sealed(url, self.events + 1)  # and the key's event

    async def __call__(self, url: str) -> None:
        if self.mode == "off":
            self.sealed = await seal_backlog(url)


async def ingest_section(tmp: Path, mmdb: Path, events: int, rounds: int) -> IngestResult:
    print(f"\n== 1/2. sealing and ingest: {events:,} events, {rounds} round(s) of {MODES}")
    batches = make_batches(events)
    result = IngestResult(events, {m: ModeRuns() for m in MODES}, [], [], [], [])
    envs = {
        "off": server_env(mmdb, tmp),
        "idle": server_env(mmdb, tmp, AUDITLOG_SEAL_INTERVAL_SECONDS="3600"),
        "on": server_env(mmdb, tmp),
    }
    for r in range(rounds):
        order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
        for mode in order:
            after = AfterIngest(mode)
            after.events = events
            run = await ingest_vs_copy(
                batches,
                tmp,
                mmdb,
                background=mode != "off",
                env=envs[mode],
                before_stop=after.before_stop,
                after_ingest=after,
                quiet=True,
            )
            http_rate, copy_rate = events / run.http_seconds, events / run.copy_seconds
            runs = result.modes[mode]
            runs.http_rates.append(http_rate)
            runs.copy_rates.append(copy_rate)
            runs.ratios.append(http_rate / copy_rate)
            runs.http_cpu_us.append(run.http_cpu / events * 1e6)
            runs.copy_cpu_us.append(run.copy_cpu / events * 1e6)
            line = (
                f"  round {r + 1} {mode:<4}: HTTP {http_rate:,.0f} events/s ({run.http_seconds:.1f}"
                f" s, {run.http_cpu / events * 1e6:.0f} us CPU/event), COPY {copy_rate:,.0f} "
                f"rows/s ({run.copy_seconds:.1f} s, {run.copy_cpu / events * 1e6:.0f} us CPU/row)"
                f", ratio {http_rate / copy_rate:.3f}, by CPU {run.copy_cpu / run.http_cpu:.3f}"
            )
            if after.sealed is not None:
                leaves, seconds, cpu = after.sealed
                rate = leaves / seconds
                result.seal_rates.append(rate)
                result.seal_cpu_us.append(cpu / leaves * 1e6)
                result.seal_over_ingest.append(rate / http_rate)
                line += (
                    f"; sealed its {leaves:,} leaves in {seconds:.2f} s ({cpu / leaves * 1e6:.1f}"
                    f" us CPU/leaf): {rate:,.0f} leaves/s = {rate / http_rate:.1f}x its ingest"
                )
            if after.backlog is not None:
                result.backlog_on.append(after.backlog)
                line += f"; unsealed at the last 202: {after.backlog:,}"
            print(line + f" (load {load_average()})", flush=True)
    return result


# 2. Time from 202 to a signed checkpoint covering the event.


@dataclass(frozen=True)
class LatencyResult:
    events: int
    sent_seconds: float
    latencies: list[float]
    uncovered: int
    post_p99: float
    storage: Storage

    @property
    def p99(self) -> float:
        return float("inf") if self.uncovered else percentile(self.latencies, 99)


async def latency_section(
    tmp: Path, mmdb: Path, rate: int, seconds: float, batch: int
) -> LatencyResult:
    total = int(rate * seconds)
    print(
        f"\n== 3. 202 to signed checkpoint: {rate:,} events/s in batches of {batch} for "
        f"{seconds:.0f} s ({total:,} events), background on (seal interval 1 s)"
    )
    batches = make_batches(total, seed=2, size=batch)
    ids = [[e["id"] for e in orjson.loads(b)] for b in batches]
    interval = batch / rate
    async with fresh_database("bench_seal_latency") as url:
        key = await create_ingest_key(url, tmp, mmdb)
        env = server_env(mmdb, tmp)
        async with server_process(url, env, background=True) as (base, _proc):
            accepted: dict[int, float] = {}
            post_seconds: list[float] = []
            polls: list[tuple[float, int]] = []
            done = asyncio.Event()
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

            async def post(http: httpx.AsyncClient, i: int) -> None:
                started = time.perf_counter()
                response = await http.post("/v1/events", content=batches[i], headers=headers)
                now = time.perf_counter()
                if response.status_code != 202:
                    raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
                accepted[i] = now
                post_seconds.append(now - started)

            async def produce() -> float:
                limits = httpx.Limits(max_connections=16)
                async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
                    tasks = []
                    start = time.perf_counter()
                    for i in range(len(batches)):
                        delay = start + i * interval - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        tasks.append(asyncio.create_task(post(http, i)))
                    await asyncio.gather(*tasks)
                    return time.perf_counter() - start

            async def poll() -> None:
                conn = await asyncpg.connect(url)
                try:
                    last = -1
                    deadline: float | None = None
                    while True:
                        size = await tree_size(conn, WORKSPACE)
                        now = time.perf_counter()
                        if size != last:
                            polls.append((now, size))
                            last = size
                        # Covered: every event and the key's own event.
                        if done.is_set():
                            deadline = deadline or now + 30
                            if size >= total + 1 or now > deadline:
                                return
                        await asyncio.sleep(POLL_SECONDS)
                finally:
                    await conn.close()

            poller = asyncio.create_task(poll())
            sent_seconds = await produce()
            done.set()
            await poller
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                """SELECT u.id::text AS id, r.start_index + u.o - 1 AS leaf
                   FROM integrity_leaves r CROSS JOIN LATERAL unnest(r.ids)
                        WITH ORDINALITY AS u(id, o)
                   WHERE r.workspace_id = $1""",
                WORKSPACE,
            )
            storage = await tree_storage(conn)
        finally:
            await conn.close()
    leaf_of = {r["id"]: r["leaf"] for r in rows}
    sizes = [s for _, s in polls]
    latencies: list[float] = []
    uncovered = 0
    for i, batch_ids in enumerate(ids):
        for event_id in batch_ids:
            leaf = leaf_of.get(event_id)
            if leaf is None:
                uncovered += 1
                continue
            # The first poll whose tree size is above the leaf index.
            k = bisect.bisect_right(sizes, leaf)
            if k == len(polls):
                uncovered += 1
                continue
            latencies.append(polls[k][0] - accepted[i])
    result = LatencyResult(
        total, sent_seconds, latencies, uncovered, percentile(post_seconds, 99), storage
    )
    print(
        f"  sent in {sent_seconds:.1f} s ({total / sent_seconds:,.0f} events/s); POST p99 "
        f"{result.post_p99 * 1000:.0f} ms; {len(polls)} distinct tree sizes seen"
    )
    print(
        f"  202 -> signed checkpoint: p50 {percentile(latencies, 50):.3f} s, p99 "
        f"{percentile(latencies, 99):.3f} s, max {max(latencies, default=float('nan')):.3f} s; "
        f"not covered within 30 s of the last 202: {uncovered}"
    )
    print(f"  tree storage after this run: {storage.describe()}")
    return result


# 3. An export's proof bundle and `auditlog verify`.


@dataclass(frozen=True)
class ExportResult:
    events: int
    files: int
    file_bytes: int
    bundle_bytes: int
    bundle_seconds: float
    verify_seconds: list[float]
    verify_output: str


async def wait_sealed(url: str, size: int, seconds: float = 60) -> None:
    conn = await asyncpg.connect(url)
    try:
        for _ in range(int(seconds / 0.1)):
            if await tree_size(conn, WORKSPACE) >= size:
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise RuntimeError(f"tree of {WORKSPACE} did not reach {size} leaves in {seconds:.0f} s")


EXPORT_SKIPPED = "SKIPPED, the schema has no Export.proofUrl"
EXPORT_FIELDS = '{ __type(name: "Export") { fields { name } } }'
CREATE_EXPORT = """mutation ($input: CreateExportInput!) {
  createExport(input: $input) { id rowCount files { part rowCount url } proofUrl } }"""


async def download(http: httpx.AsyncClient, url: str, path: Path) -> float:
    """GET url into path, retrying while the server answers 503 (bundle pending)."""
    started = time.perf_counter()
    for _ in range(30):
        response = await http.get(url)
        if response.status_code == 503:
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        response.raise_for_status()
        await asyncio.to_thread(path.write_bytes, response.content)
        return time.perf_counter() - started
    raise RuntimeError(f"{url}: still pending")


async def export_section(tmp: Path, mmdb: Path, events: int, runs: int) -> ExportResult | None:
    print(f"\n== 6. proof bundle of a {events:,}-event JSON export and `auditlog verify`")
    batches = make_batches(events, seed=3)
    async with fresh_database("bench_export_proof") as url:
        ingest_key = await create_ingest_key(url, tmp, mmdb)
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            admin = await key_service.create_key(
                pool, Ingestor(pool, GeoIP(None)), workspace_id=WORKSPACE, role="admin"
            )
        finally:
            await pool.close()
        async with server_process(url, server_env(mmdb, tmp), background=True) as (base, _):
            gql_headers = {"Authorization": f"Bearer {admin.key}"}
            async with httpx.AsyncClient(base_url=base, timeout=120) as http:

                async def gql(query: str, variables: dict[str, Any] | None = None) -> Any:
                    response = await http.post(
                        "/graphql",
                        json={"query": query, "variables": variables or {}},
                        headers=gql_headers,
                    )
                    body = response.json()
                    if body.get("errors"):
                        raise RuntimeError(str(body["errors"])[:500])
                    return body["data"]

                fields = {f["name"] for f in (await gql(EXPORT_FIELDS))["__type"]["fields"]}
                if "proofUrl" not in fields:
                    print(f"  {EXPORT_SKIPPED}: the proof bundle is not in this build yet;")
                    print("  run again once it is.")
                    return None
                await http_ingest(base, ingest_key, batches)
                # Sealed first, so the bundle's own wait for the sealer is not timed.
                await wait_sealed(url, events + 2)  # and the two keys' events
                created = (
                    await gql(
                        CREATE_EXPORT,
                        {"input": {"format": "JSON", "filter": {"actions": EXPORT_ACTIONS}}},
                    )
                )["createExport"]
                assert created["rowCount"] == events, created["rowCount"]
                out = tmp / "export"
                out.mkdir(exist_ok=True)
                parts = []
                for f in created["files"]:
                    path = out / f"part-{f['part']:03d}.json"
                    await download(http, f["url"], path)
                    parts.append(path)
                bundle = out / "bundle.json"
                bundle_seconds = await download(http, created["proofUrl"], bundle)
    verifier = signer().verifier.encode()
    command = [sys.executable, "-m", "auditlog.cli", "verify", "--verifier-key", verifier]
    command += [str(bundle), *map(str, parts)]
    seconds: list[float] = []
    output = ""
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds.append(time.perf_counter() - started)
        output = (done.stdout + done.stderr).strip()
        if done.returncode != 0:
            raise RuntimeError(f"auditlog verify failed ({done.returncode}): {output[:500]}")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import auditlog.cli"], check=True)
    startup = time.perf_counter() - started
    result = ExportResult(
        events,
        len(parts),
        sum(p.stat().st_size for p in parts),
        bundle.stat().st_size,
        bundle_seconds,
        seconds,
        output.splitlines()[-1] if output else "",
    )
    print(
        f"  {result.files} file(s), {result.file_bytes:,} bytes; bundle {result.bundle_bytes:,} "
        f"bytes ({result.bundle_bytes / events:,.0f} bytes/event), downloaded in "
        f"{bundle_seconds:.2f} s"
    )
    print(
        f"  auditlog verify, {runs} runs: median {statistics.median(seconds):.2f} s, max "
        f"{max(seconds):.2f} s (Python start-up and `import auditlog.cli` alone: {startup:.2f} s)"
    )
    print(f"  {result.verify_output}")
    return result


# 4/5. Proofs and storage at scale.


@dataclass(frozen=True)
class ScaleResult:
    events: int
    big: int
    seal_leaves: int
    seal_seconds: float
    seal_note: str
    plain: Timing
    leaf_index: Timing
    proof: Timing
    storage: Storage

    @property
    def proof_overhead_ms(self) -> float:
        return self.proof.p50_ms - self.plain.p50_ms


async def seal_database(url: str, total: int) -> tuple[int, float, str]:
    """Seal every workspace of the generated database; the figure is kept in it."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS bench_sealed
               (leaves bigint, seconds float8, at timestamptz, commit text)"""
        )
        recorded = await conn.fetchrow("SELECT * FROM bench_sealed ORDER BY at DESC LIMIT 1")
        if recorded is not None and recorded["leaves"] >= total:
            note = f"recorded when this database was sealed ({recorded['at']:%Y-%m-%d %H:%M} UTC, "
            note += f"commit {recorded['commit']})"
            print(f"  already sealed: {note}")
            return int(recorded["leaves"]), float(recorded["seconds"]), note
        workspaces = await integrity_store.read_workspaces_to_seal(conn)
        print(f"  sealing {len(workspaces):,} workspaces (load {load_average()})", flush=True)
        started = time.perf_counter()
        leaves = 0
        sign = signer()
        for n, workspace_id in enumerate(workspaces, 1):
            for r in await integrity_service.seal_until_caught_up(conn, workspace_id, sign):
                leaves += r.leaves_added
            if workspace_id == BIG or n % 200 == 0:
                print(
                    f"    {n:,} workspaces, {leaves:,} leaves, "
                    f"{time.perf_counter() - started:.0f} s",
                    flush=True,
                )
        seconds = time.perf_counter() - started
        await conn.execute(
            "INSERT INTO bench_sealed VALUES ($1, $2, now(), $3)", leaves, seconds, commit_id()
        )
        return leaves, seconds, "this run"
    finally:
        await conn.close()


async def random_events(conn: asyncpg.Connection, n: int) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        """SELECT e.id::text AS id, e.payload
           FROM (SELECT id, occurred_at FROM audit_event_ids WHERE workspace_id = $1
                 ORDER BY random() LIMIT $2) AS s
           JOIN audit_events e
             ON e.workspace_id = $1 AND e.id = s.id AND e.occurred_at = s.occurred_at""",
        BIG,
        n,
    )
    return [(r["id"], r["payload"]) for r in rows]


PLAIN = "query ($id: ID!) { auditEvent(id: $id) { id payload } }"
LEAF = "query ($id: ID!) { auditEvent(id: $id) { id payload leafIndex } }"
PROOF = """query ($id: ID!) { auditEvent(id: $id) { id payload
  inclusionProof { leafIndex treeSize hashes checkpoint { treeSize rootHash signedNote } } } }"""


def check_proof(payload: str, answer: dict[str, Any]) -> None:
    """The proof the server gave verifies against the root it names (a sanity check)."""
    proof = answer["data"]["auditEvent"]["inclusionProof"]
    leaf = merkle.leaf_hash(payload.encode())
    ok = merkle.verify_inclusion(
        leaf,
        proof["leafIndex"],
        proof["treeSize"],
        [base64.b64decode(h) for h in proof["hashes"]],
        base64.b64decode(proof["checkpoint"]["rootHash"]),
    )
    if not ok:
        raise RuntimeError(f"inclusion proof does not verify: {proof}")


async def scale_section(args: argparse.Namespace, tmp: Path) -> ScaleResult:
    print(
        f"\n== 4/5. proofs and storage at {args.events:,} events ({args.big:,} in {BIG}), "
        f"database {args.db_name}"
    )
    data = BenchData(total=args.events, big=args.big, workspaces=args.workspaces)
    url = await prepare_database(server_url(), args.db_name, data)
    try:
        leaves, seconds, note = await seal_database(url, args.events)
        print(
            f"  sealed {leaves:,} leaves in {seconds:.1f} s: {leaves / seconds:,.0f} leaves/s "
            f"({note})"
        )
        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            key = await key_service.create_key(
                pool, Ingestor(pool, GeoIP(None)), workspace_id=BIG, role="admin"
            )
        finally:
            await pool.close()
        conn = await asyncpg.connect(url)
        try:
            events = await random_events(conn, args.requests)
            storage = await tree_storage(conn)
        finally:
            await conn.close()
        env = {"AUDITLOG_SECRET_KEY": SECRET_KEY, "AUDITLOG_DATA_DIR": str(tmp)}
        env |= {"AUDITLOG_SIGNING_KEY": SIGNING_SEED, "AUDITLOG_LOG_NAME": LOG_NAME}
        async with server_process(url, env) as (base, _proc):
            client = GraphQLClient(base, key.key)
            for event_id, payload in events[:20]:
                status, content = client.post({"query": PROOF, "variables": {"id": event_id}})
                assert status == 200, content[:300]
                check_proof(payload, orjson.loads(content))
            runs = {
                name: cycling(client, query, [e for e, _ in events])
                for name, query in (("plain", PLAIN), ("leaf", LEAF), ("proof", PROOF))
            }
            timings = await interleaved(runs, args.requests)
            client.close()
    finally:
        if not args.keep:
            admin = await asyncpg.connect(server_url())
            await admin.execute(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
            await admin.close()
    result = ScaleResult(
        args.events,
        args.big,
        leaves,
        seconds,
        note,
        timings["plain"],
        timings["leaf"],
        timings["proof"],
        storage,
    )
    print(f"  auditEvent(id) over HTTP, {args.requests} random events of {BIG}, p50/p99 ms:")
    for label, t in (
        ("{ id payload }", result.plain),
        ("+ leafIndex", result.leaf_index),
        ("+ inclusionProof", result.proof),
    ):
        print(f"    {label:<18} {t.p50_ms:7.2f} / {t.p99_ms:7.2f}")
    print(f"  inclusionProof adds {result.proof_overhead_ms:.2f} ms at p50")
    print(f"  tree storage: {storage.describe()}")
    return result


def cycling(client: GraphQLClient, query: str, ids: list[str]) -> Callable[[], None]:
    """A run that asks for the next event of `ids` each time (every run sees the same ids)."""
    state = {"i": 0}

    def run() -> None:
        event_id = ids[state["i"] % len(ids)]
        state["i"] += 1
        status, content = client.post({"query": query, "variables": {"id": event_id}})
        if status != 200 or b'"errors"' in content or b'"auditEvent":null' in content:
            raise RuntimeError(f"{status} {content[:300]!r}")

    return run


# The final table.


def table(
    ingest: IngestResult | None,
    latency: LatencyResult | None,
    export: ExportResult | None,
    scale: ScaleResult | None,
    sections: set[str],
) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []

    def add(figure: str, value: str, target: str, met: bool | None) -> None:
        rows.append((figure, value, target, "-" if met is None else "yes" if met else "no"))

    if ingest is not None:
        over = statistics.median(ingest.seal_over_ingest)
        add(
            f"sealing / HTTP ingest, same run ({ingest.events:,}-event backlogs, median)",
            f"{over:.1f}x (sealing {statistics.median(ingest.seal_rates):,.0f} leaves/s, "
            f"ingest {statistics.median(ingest.modes['off'].http_rates):,.0f} events/s)",
            ">= 5x",
            over >= 5,
        )
        share = statistics.median(
            seal / cpu
            for seal, cpu in zip(ingest.seal_cpu_us, ingest.modes["off"].http_cpu_us, strict=True)
        )
        add(
            "sealing CPU/leaf over ingest CPU/event (each `off` run, median)",
            f"{share * 100:.1f}%",
            "<= 5%",
            share <= 0.05,
        )
        off, idle, on = (ingest.median_cpu_ratio(m) for m in MODES)
        add(
            "ingest/COPY by CPU, sealing on vs off",
            f"{on:.3f} vs {off:.3f} ({(on / off - 1) * 100:+.1f}%)",
            ">= -5%",
            on / off >= 0.95,
        )
        add(
            "ingest/COPY by CPU, sealing on vs idle",
            f"{on:.3f} vs {idle:.3f} ({(on / idle - 1) * 100:+.1f}%)",
            ">= -5%",
            on / idle >= 0.95,
        )
        add(
            "server+PostgreSQL CPU/event, off/idle/on",
            " / ".join(f"{ingest.median_cpu_us(m):.0f}" for m in MODES) + " us",
            "-",
            None,
        )
        off, idle, on = (ingest.median_ratio(m) for m in MODES)
        add(
            "ingest/COPY by time, sealing on vs off",
            f"{on:.3f} vs {off:.3f} ({(on / off - 1) * 100:+.1f}%)",
            ">= -5%",
            on / off >= 0.95,
        )
        add(
            "ingest/COPY by time, sealing on vs idle",
            f"{on:.3f} vs {idle:.3f} ({(on / idle - 1) * 100:+.1f}%)",
            ">= -5%",
            on / idle >= 0.95,
        )
    if latency is not None:
        add(
            f"202 -> signed checkpoint p99 at {latency.events / latency.sent_seconds:,.0f}/s",
            f"{latency.p99:.3f} s",
            "<= 10 s",
            latency.p99 <= 10,
        )
    if scale is not None:
        add(
            f"sealing {scale.seal_leaves:,} leaves",
            f"{scale.seal_seconds:.1f} s, {scale.seal_leaves / scale.seal_seconds:,.0f}/s",
            "-",
            None,
        )
        add(
            f"inclusionProof p50 over auditEvent ({scale.events:,} events)",
            f"+{scale.proof_overhead_ms:.2f} ms ({scale.proof.p50_ms:.2f} vs "
            f"{scale.plain.p50_ms:.2f})",
            "<= 5 ms",
            scale.proof_overhead_ms <= 5,
        )
        add(
            f"tree storage per leaf ({scale.storage.leaves:,} leaves)",
            f"{scale.storage.per_leaf:.1f} bytes",
            "<= 100 bytes",
            scale.storage.per_leaf <= 100,
        )
    if latency is not None:
        add(
            f"tree storage per leaf (live sealing, {latency.storage.leaves:,} leaves)",
            f"{latency.storage.per_leaf:.1f} bytes",
            "<= 100 bytes",
            latency.storage.per_leaf <= 100,
        )
    if export is None and "export" in sections:
        add("auditlog verify", EXPORT_SKIPPED, "< 2 s", None)
    if export is not None:
        verify = statistics.median(export.verify_seconds)
        add(
            f"proof bundle, {export.events:,} events",
            f"{export.bundle_bytes:,} bytes",
            "-",
            None,
        )
        add(f"auditlog verify, {export.events:,} events", f"{verify:.2f} s", "< 2 s", verify < 2)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events at scale (4/5)")
    parser.add_argument("--big", type=int, default=1_000_000, help="of them in one workspace")
    parser.add_argument("--workspaces", type=int, default=1000)
    parser.add_argument("--db-name", default="auditlog_bench_integrity")
    parser.add_argument("--keep", action="store_true", help="keep the generated database")
    parser.add_argument("--generate-only", action="store_true", help="generate, keep, stop")
    parser.add_argument("--requests", type=int, default=300, help="auditEvent requests per query")
    parser.add_argument("--ingest-events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2, help="ingest rounds of each mode")
    parser.add_argument("--rate", type=int, default=1000, help="events/s for the latency")
    parser.add_argument("--latency-seconds", type=float, default=60)
    parser.add_argument("--latency-batch", type=int, default=100)
    parser.add_argument("--export-events", type=int, default=10_000)
    parser.add_argument("--verify-runs", type=int, default=3)
    parser.add_argument(
        "--only",
        default="ingest,latency,export,scale",
        help="comma-separated sections: ingest, latency, export, scale",
    )
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.generate_only:
        data = BenchData(total=args.events, big=args.big, workspaces=args.workspaces)
        await prepare_database(server_url(), args.db_name, data)
        return
    sections = set(args.only.split(","))
    started = time.time()
    print(
        f"commit {commit_id()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"load average {load_average()}"
    )
    ingest = latency = export = scale = None
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        mmdb = build_city_mmdb(tmp / "city.mmdb")
        if "ingest" in sections:
            ingest = await ingest_section(tmp, mmdb, args.ingest_events, args.rounds)
        if "latency" in sections:
            latency = await latency_section(
                tmp, mmdb, args.rate, args.latency_seconds, args.latency_batch
            )
        if "export" in sections:
            export = await export_section(tmp, mmdb, args.export_events, args.verify_runs)
        if "scale" in sections:
            scale = await scale_section(args, tmp)
    rows = table(ingest, latency, export, scale, sections)
    widths = [
        max(len(r[i]) for r in [("figure", "value", "target", "met"), *rows]) for i in range(4)
    ]
    print()
    for r in [("figure", "value", "target", "met"), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"\nload average at the end {load_average()}; wall time {time.time() - started:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
