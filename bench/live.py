"""Live tail benchmark: 1,000 websocket subscribers on one server process.

Run: DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python -m bench.live
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
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx
import orjson
import websockets

from bench.common import free_port, fresh_database, percentile

SUBSCRIBERS = int(os.environ.get("BENCH_SUBSCRIBERS", "1000"))
CLIENT_PROCS = int(os.environ.get("BENCH_CLIENT_PROCS", "4"))
RATES = [int(r) for r in os.environ.get("BENCH_RATES", "20,30,45,70,100").split(",")]
# Without sharing the server saturates far sooner: step up from lower rates.
RATES_UNSHARED = [int(r) for r in os.environ.get("BENCH_RATES_UNSHARED", "2,5,10,20").split(",")]
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
    url: str,
    key: str,
    flt: dict[str, Any] | None,
    lat: dict[int, list[float]],
    gate: asyncio.Semaphore,
    warm: asyncio.Event,
) -> None:
    """One websocket, one subscription; `warm` is set on its first (warm-up) event."""
    init = json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}})
    subscribe = json.dumps(
        {
            "id": "1",
            "type": "subscribe",
            "payload": {"query": DOC, "variables": {"filter": flt} if flt else {}},
        }
    )
    while True:  # the server is busy accepting hundreds of sockets: retry
        try:
            async with gate:
                ws = await websockets.connect(
                    url,
                    subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                    max_queue=None,
                    open_timeout=60,
                )
                await ws.send(init)
                await ws.recv()
                await ws.send(subscribe)
            break
        except (OSError, TimeoutError, websockets.WebSocketException):
            await asyncio.sleep(0.5)
    async with ws:
        async for raw in ws:
            now = time.time()
            msg = orjson.loads(raw)
            if msg.get("type") == "ping":
                await ws.send('{"type":"pong"}')
                continue
            if msg.get("type") != "next":
                continue
            meta = msg["payload"]["data"]["auditEvents"]["node"]["metadata"]
            warm.set()
            lat.setdefault(meta["step"], []).append(now - meta["t"])


def client_main(
    url: str, key: str, indexes: list[int], ready: Any, results: Any, stop: Any
) -> None:
    async def run() -> None:
        lat: dict[int, list[float]] = {}
        gate = asyncio.Semaphore(25)
        warm = [asyncio.Event() for _ in indexes]
        tasks = [
            asyncio.create_task(
                _subscriber(url, key, FILTERS[i % len(FILTERS)], lat, gate, warm[n])
            )
            for n, i in enumerate(indexes)
        ]
        for event in warm:
            await event.wait()
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        for t in tasks:
            t.cancel()
        lat.pop(-1, None)
        results.put(lat)

    asyncio.run(run())


# ---- driver -----------------------------------------------------------------


def expected_per_event(action_is_login: bool) -> int:
    count = 0
    for i in range(SUBSCRIBERS):
        flt = FILTERS[i % len(FILTERS)]
        if flt is None or (("categories" in flt) == action_is_login):
            count += 1
    return count


INGEST_SECONDS: dict[int, list[float]] = {}  # POST durations per step


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
            INGEST_SECONDS.setdefault(step, []).append(time.time() - batch[0]["metadata"]["t"])
            r.raise_for_status()
            sent += len(batch)
        await asyncio.sleep(max(0.0, start + tick * (k + 1) - time.monotonic()))
    return sent


async def run_mode(sharing: bool) -> dict[str, Any]:
    async with fresh_database("auditlog_bench_live") as database_url:
        return await _run_mode(database_url, sharing)


async def _run_mode(database_url: str, sharing: bool) -> dict[str, Any]:
    rates = RATES if sharing else RATES_UNSHARED
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "AUDITLOG_SECRET_KEY": "bench-secret-key-0123456789abcdef",
        "AUDITLOG_LIVE_SHARING": "1" if sharing else "0",
        # Every subscriber uses the same key: above the per-key socket limit (50).
        "AUDITLOG_WS_MAX_SOCKETS_PER_KEY": str(SUBSCRIBERS + 100),
    }
    port = free_port()
    proc = None
    try:
        cli(env, "workspaces", "create", "bench", "--plan", "enterprise")
        admin_key = json.loads(
            cli(env, "keys", "create", "--workspace", "bench", "--role", "admin", "--json")
        )["key"]
        ingest_key = json.loads(
            cli(env, "keys", "create", "--workspace", "bench", "--role", "ingest", "--json")
        )["key"]
        proc = subprocess.Popen(
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
            # Warm-up events until every subscriber has received one: all are live.
            deadline = time.monotonic() + 300
            while not all(r.is_set() for r in ready) and time.monotonic() < deadline:
                await ingest_step(http, ingest_key, 5, -1, 1.0)
            if not all(r.is_set() for r in ready):
                raise RuntimeError("not every subscriber connected within 5 minutes")
            await asyncio.sleep(2)
            rss_after = rss_kib(proc.pid)
            client_cpu0 = sum(cpu_seconds(c.pid or 0) for c in clients)
            server_cpu0 = cpu_seconds(proc.pid)
            wall0 = time.monotonic()
            sent: dict[int, int] = {}
            for step, rate in enumerate(rates):
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
        for step, rate in enumerate(rates):
            lat = sorted(merged.get(step, []))
            expected = int(sent[step] * per_event)
            p50 = statistics.median(lat) * 1000 if lat else float("nan")
            p99 = percentile(lat, 99) * 1000
            steps.append(
                {
                    "rate": rate,
                    "deliveries_per_s": len(lat) / STEP_SECONDS,
                    "received": len(lat),
                    "expected": expected,
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "ingest_p99_ms": percentile(INGEST_SECONDS.pop(step, []), 99) * 1000,
                }
            )
        return {
            "sharing": sharing,
            "steps": steps,
            "rss_per_subscriber_kib": (rss_after - rss_before) / SUBSCRIBERS,
            "client_cpu_share": client_cpu / wall,
            "server_cpu_share": server_cpu / wall,
            "server_cpu_us_per_delivery": server_cpu
            / max(1, sum(len(v) for v in merged.values()))
            * 1e6,
        }
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:  # still draining a backlog: stop it
                proc.kill()
                proc.wait()


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
            f"  (of which the ingest POST itself, p99: {s['ingest_p99_ms']:.0f} ms)"
        )
    print(
        f"  {label:8} best sustained (p99 < {P99_LIMIT_MS:.0f} ms, none lost): "
        f"{best_sustained(result):.0f} deliveries/s;"
        f" server RSS {result['rss_per_subscriber_kib']:.1f} KiB/subscriber;"
        f" server CPU {result['server_cpu_share']:.0%} of a core"
        f" ({result['server_cpu_us_per_delivery']:.0f} us per delivery),"
        f" clients {result['client_cpu_share']:.0%} of a core"
    )


async def main() -> None:
    print(
        f"{SUBSCRIBERS} subscribers in {CLIENT_PROCS} client processes, "
        f"rates {RATES} (unshared {RATES_UNSHARED}) events/s, {STEP_SECONDS:.0f} s each"
    )
    shared = await run_mode(True)
    report(shared)
    unshared = await run_mode(False)
    report(unshared)
    base = best_sustained(unshared)
    ratio = best_sustained(shared) / base if base else float("inf")
    print(f"  ratio shared/unshared best sustained deliveries/s: {ratio:.2f}x")
    cpu_ratio = unshared["server_cpu_us_per_delivery"] / shared["server_cpu_us_per_delivery"]
    print(f"  ratio unshared/shared server CPU per delivery: {cpu_ratio:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
