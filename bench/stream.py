"""Stream delivery: one `auditlog worker` process to a loopback webhook receiver.

1. Sustained throughput: a paused destination accumulates N events, is resumed,
   and the clock runs until the receiver has every event. Printed beside the
   floor measured in the same run: reading the same N events with
   read_events_since alone (what any delivery costs before sending).
2. Lag: ingest at a steady rate (default 1,000 events/s, batches of 100) and
   measure, per event, from the moment its ingest call returned (its commit)
   to the moment the receiver got it (the acknowledgement follows at once).

Usage: DATABASE_URL=postgresql://... [REDIS_URL=redis://...] python -m bench.stream
       [--events 50000] [--rate 1000] [--seconds 20]
With REDIS_URL the worker is woken by the LiveBus doorbell; without it, it polls.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from auditlog.config import Settings
from auditlog.model import Principal
from auditlog.runtime import open_services
from auditlog.services import workspaces as workspace_service
from auditlog.services.streams import StreamingAdmin, authorize
from auditlog.streaming.config import WebhookConfig
from bench.common import Timer, free_port, fresh_database, percentile, read_events_since

SECRET_KEY = "bench-secret-key-0123456789abcdef"


class Receiver:
    """Records when each event id arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}

    async def handle(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        now = time.time()
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


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=int, default=20)
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
                caller = await authorize(services.pool, Principal("bench", "admin", key_id="b"))
                created = await admin.create(
                    caller, "bench", None, WebhookConfig(url=f"http://127.0.0.1:{port}/hook")
                )
                dest_id = str(created.view.row.id)

                # 1. Sustained throughput from a backlog.
                await admin.set_paused(caller, dest_id, True)
                ids: list[str] = []
                for start in range(0, args.events, 1000):
                    batch = [make_event(n) for n in range(start, min(start + 1000, args.events))]
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
                print(
                    f"  sustained delivery: {rate:,.0f} events/s (target 10,000: x{rate / 1e4:.2f})"
                )
                print(
                    f"  floor, read_events_since alone: {len(ids) / floor.seconds:,.0f} events/s"
                    f" (delivery at {rate / (len(ids) / floor.seconds):.2f} of the floor)"
                )

                # 2. Lag from commit to acknowledgement under a steady ingest rate.
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
                    f" ({'doorbell via Redis' if redis_url else 'polling, no Redis'}):"
                )
                worst = max(lags)
                print(
                    f"  p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {worst * 1000:.0f} ms"
                    f" (target p99 <= 2 s: x{p99 / 2:.2f} of the budget)"
                )
        finally:
            worker.terminate()
            worker.wait(30)
            server.should_exit = True
            await serving


if __name__ == "__main__":
    asyncio.run(main())
