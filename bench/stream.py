"""Stream delivery: one `auditlog worker` process to a loopback webhook receiver.

1. Sustained throughput: a paused destination accumulates N events, is resumed,
   and the clock runs until the receiver has every event. Printed beside the
   floor measured in the same run: reading the same N events with
   read_events_since alone (what any delivery costs before sending).
2. Lag: ingest at a steady rate (default 1,000 events/s, batches of 100) and
   measure, per event, from the moment its ingest call returned (its commit)
   to the moment the receiver got it (the acknowledgement follows at once).
3. Full ingest: `auditlog serve --no-background` in its own process takes
   batches of 1,000 over HTTP from `--clients` concurrent clients as fast as it
   can, while the same worker delivers. Printed: the ingest rate (events over
   the time from the first request to the last 202), the delivery rate (events
   over the time from the first request to the last receipt) and their ratio
   (target >= 0.95: the stream keeps up), lag from each batch's 202 to each of
   its events' receipt (target p99 <= 5 s), and the CPU each process used.

Usage: DATABASE_URL=postgresql://... [REDIS_URL=redis://...] python -m bench.stream
       [--events 50000] [--rate 1000] [--seconds 20] [--full-events 100000] [--clients 4]
With REDIS_URL the worker is woken by the LiveBus doorbell (the server of step 3
rings it); without it, it polls. `--events 0`, `--seconds 0` or `--full-events 0`
skips that step.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from auditlog.config import Settings
from auditlog.model import Principal, Role
from auditlog.runtime import open_services
from auditlog.services import keys as key_service
from auditlog.services import workspaces as workspace_service
from auditlog.services.streams import Caller, StreamingAdmin
from auditlog.streaming.config import WebhookConfig
from bench.common import (
    Timer,
    backend_cpu,
    cpu_since,
    free_port,
    fresh_database,
    percentile,
    process_cpu,
    read_events_since,
)
from bench.ingest import make_batches

SECRET_KEY = "bench-secret-key-0123456789abcdef"


class Receiver:
    """Records when each event id arrived; acknowledges checkpoints."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}

    async def handle(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        now = time.time()
        if body["type"] != "audit_log.events":
            return Response(status_code=204)  # a signed checkpoint (the worker's sealer)
        for item in body["data"]:
            self.arrived.setdefault(item["id"], now)
        return Response(status_code=204)


def make_event(n: int) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "occurredAt": datetime.now(UTC).isoformat(),
        "action": "file.uploaded",
        "actor": {"type": "USER", "id": f"u_{n % 50}", "email": f"user{n % 50}@acme.io"},
        "targets": [{"type": "file", "id": f"f_{n}", "name": f"report-{n}.pdf"}],
        "ipAddress": "81.2.69.142",
        "metadata": {"size": n},
    }


async def wait_for_all(receiver: Receiver, ids: list[str], limit: float) -> None:
    deadline = time.monotonic() + limit
    last = ids[-1]
    while last not in receiver.arrived or not all(i in receiver.arrived for i in ids):
        if time.monotonic() > deadline:
            missing = sum(1 for i in ids if i not in receiver.arrived)
            raise SystemExit(f"{missing} events not delivered within {limit}s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def serve_process(url: str, env: dict[str, str]) -> AsyncIterator[tuple[str, int]]:
    """`auditlog serve --no-background` on a free port, with REDIS_URL kept (unlike
    bench.common.server_process) so that its ingest rings the worker's doorbell."""
    port = free_port()
    log_path = Path(tempfile.gettempdir()) / f"bench-stream-serve-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "auditlog.cli", "serve", "--port", str(port),
             "--no-background", "--log-level", "warning"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient() as client:
                for _ in range(300):
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get(f"{base}/readyz")).status_code == 200:
                            break
                    if proc.poll() is not None:
                        raise RuntimeError(f"server exited; see {log_path}")
                    await asyncio.sleep(0.1)
            yield base, proc.pid
        finally:
            proc.terminate()
            proc.wait(timeout=30)


async def full_ingest(
    base: str, key: str, batches: list[bytes], clients: int
) -> tuple[dict[str, float], float, float]:
    """Post every batch as fast as `clients` concurrent clients can; (the 202 time of
    each event id, the start, the last 202), all time.time()."""
    queue: asyncio.Queue[tuple[bytes, list[str]]] = asyncio.Queue()
    for body in batches:
        queue.put_nowait((body, [e["id"] for e in orjson.loads(body)]))
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    accepted: dict[str, float] = {}

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            while not queue.empty():
                body, ids = queue.get_nowait()
                response = await http.post("/v1/events", content=body, headers=headers)
                if response.status_code != 202:
                    raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
                now = time.time()
                accepted.update((i, now) for i in ids)

    started = time.time()
    await asyncio.gather(*(client() for _ in range(clients)))
    return accepted, started, max(accepted.values())


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--full-events", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL")

    async with fresh_database("auditlog_bench_stream") as url:
        tmp = tempfile.mkdtemp(prefix="bench-stream-")
        settings = Settings(
            database_url=url,
            redis_url=redis_url,
            data_dir=Path(tmp),
            secret_key=SECRET_KEY,
            allow_private_destinations=True,
        )
        receiver = Receiver()
        port = free_port()
        app = Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])])
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        )
        serving = asyncio.create_task(server.serve())
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "AUDITLOG_SECRET_KEY": SECRET_KEY,
            "AUDITLOG_ALLOW_PRIVATE_DESTINATIONS": "1",
            "AUDITLOG_DATA_DIR": tmp,
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "auditlog.cli", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            async with open_services(settings, run_migrations=False) as services:
                await workspace_service.create_workspace(services.pool, "bench", "enterprise")
                admin = StreamingAdmin(services.pool, services.ingestor, settings)
                caller = Caller("bench", Principal("bench", Role.ADMIN, key_id="b").as_actor())
                created = await admin.create(
                    caller, "bench", None, WebhookConfig(url=f"http://127.0.0.1:{port}/hook")
                )

                # 1. Sustained throughput from a backlog.
                if args.events:
                    await backlog(services, admin, caller, created, receiver, args.events)
                # 2. Lag from commit to acknowledgement under a steady ingest rate.
                if args.seconds:
                    await steady(services, receiver, args, redis_url is not None)
                # 3. Full ingest over HTTP from another process while the worker delivers.
                if args.full_events:
                    key = await key_service.create_key(
                        services.pool, services.ingestor, workspace_id="bench", role="ingest"
                    )
                    serve_env = {**env, "AUDITLOG_INGEST_EVENTS_PER_SECOND": "0"}
                    async with serve_process(url, serve_env) as (base, serve_pid):
                        await full(
                            services.pool, base, key.key, receiver, args, serve_pid, worker.pid
                        )
        finally:
            worker.terminate()
            worker.wait(30)
            server.should_exit = True
            await serving


async def backlog(
    services: Any, admin: StreamingAdmin, caller: Any, created: Any, receiver: Receiver, n: int
) -> None:
    dest_id = str(created.view.row.id)
    await admin.set_paused(caller, dest_id, True)
    ids: list[str] = []
    for start in range(0, n, 1000):
        batch = [make_event(i) for i in range(start, min(start + 1000, n))]
        ids += (await services.ingestor.ingest(batch, "bench")).ids
    async with services.pool.acquire() as conn:
        cursor = created.view.row.cursor_xid, created.view.row.cursor_seq
        with Timer() as floor:
            while True:
                rows = await read_events_since(
                    conn, "bench", after_xid=cursor[0], after_seq=cursor[1], limit=5000
                )
                if not rows:
                    break
                cursor = rows[-1].xid, rows[-1].seq
    with Timer() as delivery:
        await admin.set_paused(caller, dest_id, False)
        await wait_for_all(receiver, ids, limit=600)
    rate = len(ids) / delivery.seconds
    print(f"backlog of {len(ids)} events delivered in {delivery.seconds:.2f} s")
    print(f"  sustained delivery: {rate:,.0f} events/s (target 10,000: x{rate / 1e4:.2f})")
    print(
        f"  floor, read_events_since alone: {len(ids) / floor.seconds:,.0f} events/s"
        f" (delivery at {rate / (len(ids) / floor.seconds):.2f} of the floor)"
    )


async def steady(services: Any, receiver: Receiver, args: Any, doorbell: bool) -> None:
    committed: dict[str, float] = {}
    per_tick = max(1, args.rate // 10)
    started = time.monotonic()
    n = args.events
    for tick in range(args.seconds * 10):
        batch = [make_event(n + i) for i in range(per_tick)]
        n += per_tick
        result = await services.ingestor.ingest(batch, "bench")
        now = time.time()
        committed.update((i, now) for i in result.ids)
        pause = started + (tick + 1) / 10 - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
    achieved = len(committed) / (time.monotonic() - started)
    await wait_for_all(receiver, list(committed), limit=120)
    lags = [receiver.arrived[i] - t for i, t in committed.items()]
    p50, p99 = percentile(lags, 50), percentile(lags, 99)
    print(
        f"lag commit->ack at {achieved:,.0f} events/s for {args.seconds} s"
        f" ({'doorbell via Redis' if doorbell else 'polling, no Redis'}):"
    )
    worst = max(lags)
    print(
        f"  p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {worst * 1000:.0f} ms"
        f" (target p99 <= 2 s: x{p99 / 2:.2f} of the budget)"
    )


async def full(
    pool: Any, base: str, key: str, receiver: Receiver, args: Any, serve_pid: int, worker_pid: int
) -> None:
    batches = make_batches(args.full_events, seed=7)
    async with pool.acquire() as probe:
        backends_before = await backend_cpu(probe)
    pids = {"serve": serve_pid, "worker": worker_pid, "bench (clients, receiver)": os.getpid()}
    cpu_before = {name: process_cpu(pid) for name, pid in pids.items()}
    accepted, started, last_accepted = await full_ingest(base, key, batches, args.clients)
    ingest_cpu = {name: process_cpu(pid) - cpu_before[name] for name, pid in pids.items()}
    await wait_for_all(receiver, list(accepted), limit=600)
    last_receipt = max(receiver.arrived[i] for i in accepted)
    cpu = {name: process_cpu(pid) - cpu_before[name] for name, pid in pids.items()}
    async with pool.acquire() as probe:
        cpu["postgres backends"] = cpu_since(backends_before, await backend_cpu(probe))
    n = len(accepted)
    ingest_rate = n / (last_accepted - started)
    delivery_rate = n / (last_receipt - started)
    lags = [receiver.arrived[i] - t for i, t in accepted.items()]
    ratio = delivery_rate / ingest_rate
    print(
        f"full ingest: {n:,} events over HTTP, batches of 1,000 from {args.clients} clients,"
        f" one worker delivering"
    )
    print(f"  ingest {ingest_rate:,.0f} events/s ({last_accepted - started:.2f} s to the last 202)")
    print(
        f"  delivery {delivery_rate:,.0f} events/s ({last_receipt - started:.2f} s to the last"
        f" receipt): x{ratio:.3f} of ingest (target >= 0.95)"
    )
    print(
        f"  lag 202->receipt p50 {percentile(lags, 50) * 1000:.0f} ms,"
        f" p99 {percentile(lags, 99) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms"
        f" (target p99 <= 5 s)"
    )
    # Where the lag goes: a transaction's events are final (readable below the safe
    # watermark) only once every transaction with a smaller xid has committed too.
    # Commit time ~ the batch's 202; final time of xid x ~ the latest commit of any
    # transaction with an xid <= x.
    async with pool.acquire() as probe:
        xids = {
            r["id"]: r["xid"]
            for r in await probe.fetch(
                "SELECT id::text AS id, xid::text::bigint AS xid FROM audit_events"
                " WHERE workspace_id = 'bench' AND id = ANY($1::uuid[])",
                list(accepted),
            )
        }
    committed_at: dict[int, float] = {}
    for event_id, at in accepted.items():
        committed_at[xids[event_id]] = at
    final_at: dict[int, float] = {}
    latest = 0.0
    for xid in sorted(committed_at):
        latest = max(latest, committed_at[xid])
        final_at[xid] = latest
    held = [final_at[xids[i]] - t for i, t in accepted.items()]
    sent = [receiver.arrived[i] - final_at[xids[i]] for i in accepted]
    print(
        f"  of which 202->final (an older transaction still open) p50"
        f" {percentile(held, 50) * 1000:.0f} ms, p99 {percentile(held, 99) * 1000:.0f} ms;"
        f" final->receipt p50 {percentile(sent, 50) * 1000:.0f} ms,"
        f" p99 {percentile(sent, 99) * 1000:.0f} ms ({len(committed_at)} transactions)"
    )
    wall = last_receipt - started
    print(
        f"  CPU seconds over the {wall:.2f} s (while ingest ran): "
        + ", ".join(
            f"{name} {cpu[name]:.1f}" + (f" ({ingest_cpu[name]:.1f})" if name in ingest_cpu else "")
            for name in cpu
        )
        + f"; {os.cpu_count()} cores = {wall * (os.cpu_count() or 1):.1f} CPU seconds"
    )


if __name__ == "__main__":
    asyncio.run(main())
