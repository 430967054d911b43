"""Live tail benchmark: 1,000 websocket subscribers on one server process.

Run: DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python bench/live.py
(REDIS_URL optional: with it the doorbells go through Redis, as in production.)

For each mode (identical subscriptions sharing one execution, then sharing off)
it starts a fresh `auditlog serve` on its own database, connects SUBSCRIBERS
websockets from CLIENT_PROCS separate client processes (mixed filters, many
identical), then ingests at rising rates. Latency is from just before the ingest
request (the event carries that time) to receipt by the client, so it includes
the ingest itself: an upper bound of commit-to-receipt. Printed: p50/p99 at 20
events/s, the highest sustained deliveries/s with p99 < 250 ms and nothing lost,
server memory per subscriber, the client processes' CPU, and the ratio.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import asyncpg
import httpx
import orjson
import websockets

SUBSCRIBERS = int(os.environ.get("BENCH_SUBSCRIBERS", "1000"))
CLIENT_PROCS = int(os.environ.get("BENCH_CLIENT_PROCS", "4"))
RATES = [int(r) for r in os.environ.get("BENCH_RATES", "20,50,100,200,400").split(",")]
STEP_SECONDS = float(os.environ.get("BENCH_STEP_SECONDS", "6"))
P99_LIMIT_MS = 250.0

DOC = """subscription Tail($filter: AuditEventFilter) {
  auditEvents(filter: $filter) {
    cursor
    node { id occurredAt receivedAt action category actor { type id name email }
           targets { type id name } ipAddress userAgent metadata anomalies }
  }
}"""
# Half unfiltered, a quarter logins only, a quarter files only: three sharing groups.
FILTERS: list[dict[str, Any] | None] = [
    None,
    None,
    {"categories": ["AUTHENTICATION"]},
    {"actions": ["file.*"]},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}" + (f"?{query}" if query else "")


def cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "auditlog.cli", *args], env=env, capture_output=True, check=True
    )
    return out.stdout.decode()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- client processes -------------------------------------------------------


async def _subscriber(
    url: str, key: str, flt: dict[str, Any] | None, lat: dict[int, list[float]]
) -> None:
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"], max_queue=None) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}})
        )
        await ws.recv()
        variables = {"filter": flt} if flt else {}
        await ws.send(
            json.dumps(
                {"id": "1", "type": "subscribe", "payload": {"query": DOC, "variables": variables}}
            )
        )
        async for raw in ws:
            now = time.time()
            msg = orjson.loads(raw)
            if msg.get("type") == "ping":
                await ws.send('{"type":"pong"}')
                continue
            if msg.get("type") != "next":
                continue
            meta = msg["payload"]["data"]["auditEvents"]["node"]["metadata"]
            lat.setdefault(meta["step"], []).append(now - meta["t"])


def client_main(
    url: str, key: str, indexes: list[int], ready: Any, results: Any, stop: Any
) -> None:
    async def run() -> None:
        lat: dict[int, list[float]] = {}
        tasks = []
        for i in indexes:
            tasks.append(asyncio.create_task(_subscriber(url, key, FILTERS[i % len(FILTERS)], lat)))
            if len(tasks) % 50 == 0:
                await asyncio.sleep(0.05)
        await asyncio.sleep(2)
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        for t in tasks:
            t.cancel()
        results.put({k: v for k, v in lat.items()})

    asyncio.run(run())


# ---- driver -----------------------------------------------------------------


def expected_per_event(action_is_login: bool) -> int:
    count = 0
    for i in range(SUBSCRIBERS):
        flt = FILTERS[i % len(FILTERS)]
        if flt is None or (("categories" in flt) == action_is_login):
            count += 1
    return count


async def ingest_step(
    http: httpx.AsyncClient, ingest_key: str, rate: int, step: int, seconds: float = STEP_SECONDS
) -> int:
    """Ingest `rate` events/s for `seconds` in 50 ms batches; returns events sent."""
    tick = 0.05
    ticks = int(seconds / tick)
    sent = 0
    start = time.monotonic()
    for k in range(ticks):
        due = int(rate * tick * (k + 1)) - sent
        batch = [
            {
                "occurredAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "action": "user.login.success" if (sent + i) % 2 == 0 else "file.uploaded",
                "actor": {"type": "USER", "id": "u_1", "name": "Ada", "email": "ada@acme.io"},
                "targets": [{"type": "file", "id": "f_9", "name": "q3.pdf"}],
                "ipAddress": "81.2.69.142",
                "metadata": {"t": time.time(), "step": step},
            }
            for i in range(due)
        ]
        if batch:
            r = await http.post(
                "/v1/events", json=batch, headers={"Authorization": f"Bearer {ingest_key}"}
            )
            r.raise_for_status()
            sent += len(batch)
        await asyncio.sleep(max(0.0, start + tick * (k + 1) - time.monotonic()))
    return sent


async def run_mode(server_url: str, sharing: bool) -> dict[str, Any]:
    name = f"auditlog_bench_live_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    env = {
        **os.environ,
        "DATABASE_URL": with_database(server_url, name),
        "AUDITLOG_SECRET_KEY": "bench-secret-key-0123456789abcdef",
        "AUDITLOG_LIVE_SHARING": "1" if sharing else "0",
    }
    port = free_port()
    proc = None
    try:
        cli(env, "migrate")
        cli(env, "workspaces", "create", "bench", "--plan", "enterprise")
        admin_key = json.loads(
            cli(env, "keys", "create", "--workspace", "bench", "--role", "admin", "--json")
        )["key"]
        ingest_key = json.loads(
            cli(env, "keys", "create", "--workspace", "bench", "--role", "ingest", "--json")
        )["key"]
        proc = subprocess.Popen(  # noqa: ASYNC220 (started once, before measuring)
            [
                sys.executable,
                "-m",
                "auditlog.cli",
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-background",
            ],
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            for _ in range(300):
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            await ingest_step(http, ingest_key, 20, -1, 1.0)  # warm up the server
            await asyncio.sleep(1)
            rss_before = rss_kib(proc.pid)
            ctx = mp.get_context("spawn")
            ready = [ctx.Event() for _ in range(CLIENT_PROCS)]
            stop = ctx.Event()
            results = ctx.Queue()
            url = base.replace("http://", "ws://") + "/graphql"
            clients = [
                ctx.Process(
                    target=client_main,
                    args=(
                        url,
                        admin_key,
                        list(range(i, SUBSCRIBERS, CLIENT_PROCS)),
                        ready[i],
                        results,
                        stop,
                    ),
                )
                for i in range(CLIENT_PROCS)
            ]
            for c in clients:
                c.start()
            for r in ready:
                await asyncio.get_running_loop().run_in_executor(None, r.wait, 120)
            await asyncio.sleep(1)
            rss_after = rss_kib(proc.pid)
            await ingest_step(http, ingest_key, 20, -1, 2.0)  # every subscription live
            await asyncio.sleep(1)
            client_cpu0 = sum(cpu_seconds(c.pid or 0) for c in clients)
            server_cpu0 = cpu_seconds(proc.pid)
            wall0 = time.monotonic()
            sent: dict[int, int] = {}
            for step, rate in enumerate(RATES):
                sent[step] = await ingest_step(http, ingest_key, rate, step)
            await asyncio.sleep(3)
            wall = time.monotonic() - wall0
            client_cpu = sum(cpu_seconds(c.pid or 0) for c in clients) - client_cpu0
            server_cpu = cpu_seconds(proc.pid) - server_cpu0
            stop.set()
            merged: dict[int, list[float]] = {}
            for _ in clients:
                for k, v in results.get(timeout=120).items():
                    merged.setdefault(k, []).extend(v)
            for c in clients:
                c.join(30)
        per_event = (expected_per_event(True) + expected_per_event(False)) / 2
        steps = []
        for step, rate in enumerate(RATES):
            lat = sorted(merged.get(step, []))
            expected = int(sent[step] * per_event)
            p50 = statistics.median(lat) * 1000 if lat else float("nan")
            p99 = lat[int(len(lat) * 0.99) - 1] * 1000 if lat else float("nan")
            steps.append(
                {
                    "rate": rate,
                    "deliveries_per_s": len(lat) / STEP_SECONDS,
                    "received": len(lat),
                    "expected": expected,
                    "p50_ms": p50,
                    "p99_ms": p99,
                }
            )
        return {
            "sharing": sharing,
            "steps": steps,
            "rss_per_subscriber_kib": (rss_after - rss_before) / SUBSCRIBERS,
            "client_cpu_share": client_cpu / wall,
            "server_cpu_share": server_cpu / wall,
        }
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def best_sustained(result: dict[str, Any]) -> float:
    ok = [
        s["deliveries_per_s"]
        for s in result["steps"]
        if s["p99_ms"] < P99_LIMIT_MS and s["received"] >= s["expected"]
    ]
    return max(ok, default=0.0)


def report(result: dict[str, Any]) -> None:
    label = "shared" if result["sharing"] else "unshared"
    for s in result["steps"]:
        print(
            f"  {label:8} {s['rate']:4} ev/s: {s['deliveries_per_s']:9.0f} deliveries/s "
            f"({s['received']}/{s['expected']})  "
            f"p50 {s['p50_ms']:7.1f} ms  p99 {s['p99_ms']:7.1f} ms"
        )
    print(
        f"  {label:8} best sustained (p99 < {P99_LIMIT_MS:.0f} ms, none lost): "
        f"{best_sustained(result):.0f} deliveries/s;"
        f" server RSS {result['rss_per_subscriber_kib']:.1f} KiB/subscriber;"
        f" server CPU {result['server_cpu_share']:.0%} of a core,"
        f" clients {result['client_cpu_share']:.0%} of a core"
    )


async def main() -> None:
    server_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    print(
        f"{SUBSCRIBERS} subscribers in {CLIENT_PROCS} client processes, "
        f"rates {RATES} events/s, {STEP_SECONDS:.0f} s each"
    )
    shared = await run_mode(server_url, True)
    report(shared)
    unshared = await run_mode(server_url, False)
    report(unshared)
    base = best_sustained(unshared)
    ratio = best_sustained(shared) / base if base else float("inf")
    print(f"  ratio shared/unshared best sustained deliveries/s: {ratio:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
