"""Scaling out on one machine: 1 against 2 API processes, 1 against 2 workers.

    DATABASE_URL=postgresql://postgres@127.0.0.1/postgres [REDIS_URL=redis://...] \\
        python -m bench.scale [--events 30000] [--subscribers 100] [--live-events 3000]
        [--stream-events 5000] [--destinations 20]

Each phase runs with 1 process, then with 2, on a fresh database each time, and
prints both side by side with the ratio, and the CPU each process (and the
PostgreSQL backends, and this script's own clients and receivers) used in the
measured window, as % of one core (the machine has `os.cpu_count()` of them):

1. Ingest: `--events` events in batches of 500 from 8 concurrent HTTP clients,
   spread evenly over the `serve --no-background` processes. events/s.
2. Live deliveries: `--subscribers` websocket subscribers (in a client process
   of their own) spread over the API processes, then `--live-events` events
   ingested (spread too); deliveries/s = events x subscribers / the time from
   the first ingest call to the last delivery. With REDIS_URL each process's
   tail is rung by the others' ingest; without it, it polls every 0.2 s.
3. Stream delivery: `--destinations` webhook destinations (one loopback
   receiver in this process, a path per destination), paused while
   `--stream-events` events are ingested, then resumed; the clock runs from the
   resume until every destination holds every event. `auditlog worker`
   processes: 1, then 2. events delivered/s (events x destinations / time).

Not a test: it prints figures. The machine may be shared; say so beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.common import backend_cpu, cpu_since, free_port, fresh_database, process_cpu
from bench.ingest import make_batches, post_batches

SECRET_KEY = "bench-secret-key-0123456789abcdef"
INGEST_CLIENTS = 8
INGEST_BATCH = 500
LIVE_BATCH = 100
LIVE_DOC = """subscription ($filter: AuditEventFilter) {
  auditEvents(filter: $filter) { cursor node { id action payload } } }"""
LIVE_FILTER = {"actions": ["file.uploaded", "file.deleted"]}


# --- processes ---------------------------------------------------------------------------


def base_env(database_url: str, data_dir: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "AUDITLOG_SECRET_KEY": SECRET_KEY,
        "AUDITLOG_DATA_DIR": data_dir,
        "AUDITLOG_ALLOW_PRIVATE_DESTINATIONS": "1",
        "AUDITLOG_INGEST_EVENTS_PER_SECOND": "0",
        "AUDITLOG_EXPORTS_PER_MINUTE": "0",
        # Every subscriber uses one admin key (the default allows 50 sockets a key).
        "AUDITLOG_WS_MAX_SOCKETS_PER_KEY": "100000",
    }
    if not os.environ.get("REDIS_URL"):
        env["AUDITLOG_LIVE_POLL_SECONDS"] = "0.2"
    return env


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "auditlog.cli", *args],
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    )
    return done.stdout.decode()


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    base_url: str = ""


@asynccontextmanager
async def started(
    env: dict[str, str], apis: int, workers: int, tmp: str
) -> AsyncIterator[list[Proc]]:
    procs: list[Proc] = []
    logs = []
    try:
        for i in range(apis):
            port = free_port()
            log = Path(tmp, f"api{i}.log").open("wb")  # noqa: SIM115 (closed in finally)
            logs.append(log)
            argv = ["serve", "--no-background", "--port", str(port), "--log-level", "warning"]
            p = subprocess.Popen(
                [sys.executable, "-m", "auditlog.cli", *argv],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            procs.append(Proc(f"api{i + 1}", p, f"http://127.0.0.1:{port}"))
        for i in range(workers):
            log = Path(tmp, f"worker{i}.log").open("wb")  # noqa: SIM115 (closed in finally)
            logs.append(log)
            p = subprocess.Popen(
                [sys.executable, "-m", "auditlog.cli", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            procs.append(Proc(f"worker{i + 1}", p))
        async with httpx.AsyncClient(timeout=5) as http:
            for p in procs:
                if not p.base_url:
                    continue
                for _ in range(600):
                    try:
                        if (await http.get(f"{p.base_url}/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if p.proc.poll() is not None:
                        raise RuntimeError(f"{p.name} exited; see {tmp}")
                    await asyncio.sleep(0.1)
        await asyncio.sleep(1.0 if workers else 0)  # workers: started and listening
        yield procs
    finally:
        for p in procs:
            p.proc.terminate()
        for p in procs:
            try:
                p.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.proc.kill()
        for log in logs:
            log.close()


# --- CPU ---------------------------------------------------------------------------------


def run_queue_wait(pid: int) -> float:
    """Seconds a process's main thread spent runnable but waiting for a CPU so far."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy() -> tuple[float, float]:
    """(busy, iowait) CPU seconds of the whole machine so far, every process of
    every user (the other engineers' too)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / ticks, iowait / ticks


WAITS = """SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') AS what
           FROM pg_stat_activity
           WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'"""


@dataclass
class CpuWindow:
    """What the processes did between start() and stop(): CPU used by each named
    process, the PostgreSQL backends of one database and this script (% of one
    core over the window); the whole machine's busy CPU (other users included);
    how long our processes waited for a CPU (run queue); and what the active
    backends were doing, sampled every 20 ms (CPU or their wait event)."""

    procs: dict[str, int]
    conn: asyncpg.Connection
    url: str
    before: dict[str, float] = field(default_factory=dict)
    queued: dict[int, float] = field(default_factory=dict)
    backends: dict[int, float] = field(default_factory=dict)
    machine: tuple[float, float] = (0.0, 0.0)
    started_at: float = 0.0
    shares: dict[str, float] = field(default_factory=dict)
    notes: str = ""
    _waits: dict[str, int] = field(default_factory=dict)
    _sampler: asyncio.Task[None] | None = None
    _sampler_pid: int = 0  # its own backend: not counted

    async def start(self) -> None:
        self.before = {n: process_cpu(pid) for n, pid in self.procs.items()}
        self.before["bench"] = time.process_time()
        self.backends = await backend_cpu(self.conn)
        self.queued = {pid: run_queue_wait(pid) for pid in self._pids()}
        self.machine = machine_busy()
        self.started_at = time.monotonic()
        self._sampler = asyncio.create_task(self._sample())

    def _pids(self) -> list[int]:
        return [*self.procs.values(), os.getpid(), *self.backends]

    async def _sample(self) -> None:
        conn = await asyncpg.connect(self.url)
        self._sampler_pid = conn.get_server_pid()
        try:
            while True:
                for r in await conn.fetch(WAITS):
                    self._waits[r["what"]] = self._waits.get(r["what"], 0) + 1
                await asyncio.sleep(0.02)
        finally:
            await conn.close()

    async def stop(self) -> dict[str, float]:
        seconds = time.monotonic() - self.started_at
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
        after = {n: process_cpu(pid) for n, pid in self.procs.items()}
        after["bench"] = time.process_time()
        now_backends = await backend_cpu(self.conn)
        now_backends.pop(self._sampler_pid, None)
        pg = cpu_since(self.backends, now_backends)
        self.shares = {n: 100 * (after[n] - self.before[n]) / seconds for n in after}
        self.shares["postgres"] = 100 * pg / seconds
        busy, iowait = machine_busy()
        busy_share = 100 * (busy - self.machine[0]) / seconds
        io_share = 100 * (iowait - self.machine[1]) / seconds
        ours = sum(self.shares.values())
        pids = {**self.procs, "bench": os.getpid()}
        queued = {n: 100 * (run_queue_wait(p) - self.queued.get(p, 0.0)) / seconds
                  for n, p in pids.items()}  # fmt: skip
        queued["postgres"] = (
            100 * sum(run_queue_wait(p) - self.queued.get(p, 0.0) for p in now_backends) / seconds
        )
        samples = sum(self._waits.values()) or 1
        top = sorted(self._waits.items(), key=lambda kv: -kv[1])[:4]
        self.notes = (
            f"machine busy {busy_share:.0f}% (ours {ours:.0f}%, other users' "
            f"{max(0.0, busy_share - ours):.0f}%), iowait {io_share:.0f}%; "
            "waited for a CPU: "
            + ", ".join(f"{n} {v:.0f}%" for n, v in queued.items())
            + "; active backends: "
            + ", ".join(f"{w} {100 * c / samples:.0f}%" for w, c in top)
        )
        return self.shares


def cpu_text(shares: dict[str, float]) -> str:
    return ", ".join(f"{n} {v:.0f}%" for n, v in shares.items())


def busiest(shares: dict[str, float]) -> str:
    name, value = max(shares.items(), key=lambda kv: kv[1])
    total = sum(shares.values())
    cores = (os.cpu_count() or 1) * 100
    return f"busiest: {name} {value:.0f}% of a core; all together {total:.0f}% of {cores}%"


# --- workspace ---------------------------------------------------------------------------


@dataclass
class Workspace:
    id: str
    ingest_key: str
    admin_key: str


def make_workspace(env: dict[str, str]) -> Workspace:
    ws = f"bench-{uuid.uuid4().hex[:8]}"
    cli(env, "workspaces", "create", ws, "--plan", "enterprise")
    ingest = json.loads(cli(env, "keys", "create", "--workspace", ws, "--role", "ingest", "--json"))
    admin = json.loads(cli(env, "keys", "create", "--workspace", ws, "--role", "admin", "--json"))
    return Workspace(ws, ingest["key"], admin["key"])


async def gql(base: str, key: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        response = await http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {key}"},
        )
    body: dict[str, Any] = response.json()
    if "errors" in body:
        raise RuntimeError(body["errors"])
    return body["data"]


def simple_events(count: int, action: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "id": str(uuid.uuid4()),
            "occurredAt": now,
            "action": action,
            "actor": {"type": "USER", "id": f"u_{n % 50}", "email": f"user{n % 50}@acme.io"},
            "targets": [{"type": "file", "id": f"f_{n}", "name": f"report-{n}.pdf"}],
            "ipAddress": "81.2.69.142",
            "metadata": {"n": n},
        }
        for n in range(count)
    ]


# --- phase 1: ingest ---------------------------------------------------------------------


async def ingest_phase(apis: int, events: int) -> dict[str, Any]:
    async with fresh_database("auditlog_bench_scale") as url:
        tmp = tempfile.mkdtemp(prefix="bench-scale-")
        env = base_env(url, tmp)
        ws = make_workspace(env)
        batches = make_batches(events, seed=apis, size=INGEST_BATCH)
        async with started(env, apis, 0, tmp) as procs:
            bases = [p.base_url for p in procs]
            await post_batches(bases, ws.ingest_key, make_batches(2000, seed=99), 4)  # warm-up
            conn = await asyncpg.connect(url)
            try:
                window = CpuWindow({p.name: p.proc.pid for p in procs}, conn, url)
                await window.start()
                t0 = time.perf_counter()
                await post_batches(bases, ws.ingest_key, batches, INGEST_CLIENTS)
                seconds = time.perf_counter() - t0
                shares = await window.stop()
            finally:
                await conn.close()
    return {"rate": events / seconds, "seconds": seconds, "cpu": shares, "notes": window.notes}


# --- phase 2: live deliveries ------------------------------------------------------------


def subscribers_child(urls: list[str], key: str, count: int, expect: int) -> None:
    """A client process: `count` subscribers over `urls`; prints 'warm' once each got a
    warm-up event, then one JSON line when each has `expect` measured events."""
    import websockets

    async def run() -> None:
        got = [0] * count
        warm = [asyncio.Event() for _ in range(count)]
        last = [0.0] * count
        done = asyncio.Event()
        remaining = [count]

        async def one(i: int) -> None:
            url = urls[i % len(urls)].replace("http://", "ws://") + "/graphql"
            async with websockets.connect(
                url,
                subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                max_queue=None,
                open_timeout=60,
            ) as ws:
                init = {"authorization": f"Bearer {key}"}
                await ws.send(json.dumps({"type": "connection_init", "payload": init}))
                await ws.recv()
                payload = {"query": LIVE_DOC, "variables": {"filter": LIVE_FILTER}}
                await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
                async for raw in ws:
                    data = raw if isinstance(raw, bytes) else raw.encode()
                    if b'"ping"' in data[:20]:
                        await ws.send('{"type":"pong"}')
                        continue
                    if b"file.uploaded" in data:
                        got[i] += 1
                        if got[i] == expect:
                            last[i] = time.time()
                            remaining[0] -= 1
                            if not remaining[0]:
                                done.set()
                    else:
                        warm[i].set()

        tasks = [asyncio.create_task(one(i)) for i in range(count)]
        warmed = asyncio.ensure_future(asyncio.gather(*(w.wait() for w in warm)))
        await asyncio.wait([warmed, *tasks], timeout=300, return_when=asyncio.FIRST_COMPLETED)
        if not warmed.done():  # a subscriber failed (its socket refused or closed), or time ran out
            failed = [t.exception() for t in tasks if t.done() and not t.cancelled()]
            sys.exit(f"subscribers did not all start: {failed[:1]}")
        print("warm", flush=True)
        try:
            await asyncio.wait_for(done.wait(), 300)
        finally:
            print(json.dumps({"last": max(last), "got": sum(got)}), flush=True)
            for t in tasks:
                t.cancel()

    asyncio.run(run())


async def live_phase(apis: int, subscribers: int, events: int) -> dict[str, Any]:
    async with fresh_database("auditlog_bench_scale") as url:
        tmp = tempfile.mkdtemp(prefix="bench-scale-")
        env = base_env(url, tmp)
        ws = make_workspace(env)
        async with started(env, apis, 0, tmp) as procs:
            bases = [p.base_url for p in procs]
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.scale",
                "--_subscribers",
                json.dumps([bases, ws.admin_key, subscribers, events]),
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": os.getcwd()},
            )
            assert child.stdout is not None

            async def warm_up() -> None:
                while True:  # new ids each time: a repeated id is stored (and shown) once
                    warm = [orjson.dumps(simple_events(1, "file.deleted")) for _ in bases]
                    await post_batches(bases, ws.ingest_key, warm, len(bases))
                    await asyncio.sleep(0.3)

            warming = asyncio.create_task(warm_up())
            line = await asyncio.wait_for(child.stdout.readline(), 300)
            warming.cancel()
            assert line.strip() == b"warm", line
            await asyncio.sleep(1.0)
            batches = [
                orjson.dumps(simple_events(LIVE_BATCH, "file.uploaded"))
                for _ in range(events // LIVE_BATCH)
            ]
            conn = await asyncpg.connect(url)
            try:
                names = {p.name: p.proc.pid for p in procs}
                names["subscribers"] = child.pid
                window = CpuWindow(names, conn, url)
                await window.start()
                t0 = time.time()
                await post_batches(bases, ws.ingest_key, batches, 2 * len(bases))
                line = await asyncio.wait_for(child.stdout.readline(), 320)
                shares = await window.stop()
            finally:
                await conn.close()
            await child.wait()
            result = json.loads(line)
            if result["got"] < events * subscribers:
                raise RuntimeError(f"only {result['got']} of {events * subscribers} deliveries")
            seconds = result["last"] - t0
    return {
        "rate": events * subscribers / seconds,
        "seconds": seconds,
        "cpu": shares,
        "notes": window.notes,
    }


# --- phase 3: stream delivery ------------------------------------------------------------

CREATE_DEST = """mutation ($input: CreateStreamingDestinationInput!) {
  createStreamingDestination(input: $input) { destination { id } } }"""
PAUSE = "mutation ($id: ID!) { pauseStreamingDestination(id: $id) { id } }"
RESUME = "mutation ($id: ID!) { resumeStreamingDestination(id: $id) { id } }"


class HookReceiver:
    """Records the distinct event ids each path (destination) received."""

    def __init__(self) -> None:
        self.ids: dict[str, set[str]] = {}
        self.last = 0.0

    async def handle(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        if body.get("type") == "audit_log.events":
            seen = self.ids.setdefault(request.url.path, set())
            seen.update(e["id"] for e in body["data"])
            self.last = time.monotonic()
        return Response(status_code=204)


async def stream_phase(workers: int, destinations: int, events: int) -> dict[str, Any]:
    receiver = HookReceiver()
    port = free_port()
    app = Starlette(routes=[Route("/{path:path}", receiver.handle, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    try:
        async with fresh_database("auditlog_bench_scale") as url:
            tmp = tempfile.mkdtemp(prefix="bench-scale-")
            env = base_env(url, tmp)
            ws = make_workspace(env)
            async with started(env, 1, workers, tmp) as procs:
                api = procs[0].base_url
                ids = []
                for d in range(destinations):
                    config = {"webhook": {"url": f"http://127.0.0.1:{port}/d{d}"}}
                    data = await gql(
                        api,
                        ws.admin_key,
                        CREATE_DEST,
                        {"input": {"name": f"d{d}", "config": config}},
                    )
                    dest = data["createStreamingDestination"]["destination"]["id"]
                    await gql(api, ws.admin_key, PAUSE, {"id": dest})
                    ids.append(dest)
                batches = [
                    orjson.dumps(simple_events(INGEST_BATCH, "file.uploaded"))
                    for _ in range(events // INGEST_BATCH)
                ]
                wanted = set()
                for b in batches:
                    wanted.update(e["id"] for e in orjson.loads(b))
                await post_batches([api], ws.ingest_key, batches, 4)
                conn = await asyncpg.connect(url)
                try:
                    names = {p.name: p.proc.pid for p in procs if p.name.startswith("worker")}
                    window = CpuWindow(names, conn, url)
                    await window.start()
                    t0 = time.monotonic()
                    await asyncio.gather(*(gql(api, ws.admin_key, RESUME, {"id": i}) for i in ids))
                    deadline = t0 + 600
                    paths = [f"/d{d}" for d in range(destinations)]
                    while not all(wanted <= receiver.ids.get(p, set()) for p in paths):
                        if time.monotonic() > deadline:
                            raise RuntimeError("not every destination got every event in 600 s")
                        await asyncio.sleep(0.05)
                    seconds = receiver.last - t0
                    shares = await window.stop()
                finally:
                    await conn.close()
    finally:
        server.should_exit = True
        await serving
    return {
        "rate": events * destinations / seconds,
        "seconds": seconds,
        "cpu": shares,
        "notes": window.notes,
    }


# --- report ------------------------------------------------------------------------------


def line(what: str, unit: str, one: dict[str, Any], two: dict[str, Any], label: str) -> None:
    ratio = two["rate"] / one["rate"]
    first = f"1 {label} {one['rate']:,.0f} {unit} ({one['seconds']:.1f} s)"
    second = f"2 {label}s {two['rate']:,.0f} {unit} ({two['seconds']:.1f} s)"
    print(f"{what}: {first} | {second} | ratio {ratio:.2f}")
    for n, r in (("1", one), ("2", two)):
        print(f"    CPU with {n}: {cpu_text(r['cpu'])}; {busiest(r['cpu'])}")
        print(f"      CPU per unit: {per_unit(r, unit)}")
        print(f"      {r['notes']}")


def per_unit(result: dict[str, Any], unit: str) -> str:
    """Microseconds of CPU per event (or delivery), by kind of process: what sizing uses."""
    kinds: dict[str, float] = {}
    for name, share in result["cpu"].items():
        kind = name.rstrip("0123456789")
        kinds[kind] = kinds.get(kind, 0.0) + share
    one = {"events/s": "event", "deliveries/s": "delivery"}.get(unit, unit)
    return (
        ", ".join(f"{k} {1e4 * v / result['rate']:.0f} us" for k, v in kinds.items())
        + f" per {one}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--live-events", type=int, default=3_000)
    parser.add_argument("--stream-events", type=int, default=5_000)
    parser.add_argument("--destinations", type=int, default=20)
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"bench.scale: {os.cpu_count()} cores, load average before {load[0]:.2f} "
        f"(the machine is shared); bus: {'Redis' if os.environ.get('REDIS_URL') else 'polling'}"
    )
    one = await ingest_phase(1, args.events)
    two = await ingest_phase(2, args.events)
    line(f"ingest, {args.events} events, batches of {INGEST_BATCH}, {INGEST_CLIENTS} clients",
         "events/s", one, two, "API")  # fmt: skip
    one = await live_phase(1, args.subscribers, args.live_events)
    two = await live_phase(2, args.subscribers, args.live_events)
    line(f"live, {args.subscribers} subscribers x {args.live_events} events",
         "deliveries/s", one, two, "API")  # fmt: skip
    one = await stream_phase(1, args.destinations, args.stream_events)
    two = await stream_phase(2, args.destinations, args.stream_events)
    line(f"streams, {args.destinations} webhook destinations x {args.stream_events} events",
         "events/s", one, two, "worker")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_subscribers":
        urls, key, count, expect = json.loads(sys.argv[2])
        subscribers_child(urls, key, count, expect)
    else:
        asyncio.run(main())
