"""Soak: mixed load for `--minutes` (default 30) against one `auditlog serve`.

    DATABASE_URL=postgresql://... REDIS_URL=redis://... python -m bench.soak [--minutes 30]
        [--rate N] [--subscribers 200] [--client-procs 2]

One `auditlog serve --no-background` process (API, ingest, GraphQL, live tail,
exports) and one `auditlog worker` process (the 3 destinations and the sealer),
Redis doorbells. (With the worker inside serve, a 2-minute trial fell behind:
webhook p99 80 s, destinations drained 36 s after the load stopped.) Against them:

- Ingest: batches every 100 ms at `--rate` events/s (default: half the maximum
  measured first, 10 s of batches of 1,000 from 4 clients as fast as it goes).
- 200 live subscribers: real websockets (graphql-transport-ws) in
  `--client-procs` separate processes, in 4 filter groups (actorEmail
  live<g>@soak.io, 50 each: identical subscriptions share one execution). Every
  ingest batch carries one event of each group, so each subscriber should get
  10 events/s; the rest of the stream matches none of them.
- 3 destinations of every category: a signed webhook, a Splunk HEC and S3
  (moto in server mode, its own process). Every event of the soak must reach
  each of them (checked per event id: the ids carry the event's number).
- GraphQL queries every second (auditEvents, first 50, filtered; then
  streamingDestinations with lagEvents), and a createExport (NDJSON, the last
  minute) every minute.

Printed: the achieved ingest rate, RSS of both processes at start, after 5 min and
every 5 min to the end (target: growth at most 10% after the first 5 minutes);
errors (target 0: ingest answers other than 202, GraphQL errors, exports that
failed, subscriber errors or closed sockets, ERROR lines in the serve and worker
logs; a send that failed and was retried shows only in the destinations' lastError);
events lost by any subscriber or destination (target 0); and p99 latencies per 5
minutes: ingest POST; subscriber (from just before the POST to receipt, so it
includes the ingest); webhook and HEC (from the 202 to receipt); query; export.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.common import free_port, fresh_database, percentile

SECRET_KEY = "bench-soak-secret-key-0123456789abcdef"
GROUPS = 4
KEY_SOCKETS = 50  # websockets one key may hold
WINDOW = 300.0  # seconds: one row of figures
TICK = 0.1
HEC_TOKEN = "soak-hec-token-0123456789"
SUBSCRIPTION = """subscription Tail($filter: AuditEventFilter) {
  auditEvents(filter: $filter) { cursor node { id occurredAt action actor { email } } }
}"""
QUERY = """query Q($email: String!) {
  auditEvents(first: 50, filter: {actorEmail: $email}) { edges { node { id } } }
}"""
DESTINATIONS = "{ streamingDestinations { id name status lagEvents lastError } }"
EXPORT = """mutation ($input: CreateExportInput!) {
  createExport(input: $input) { id status rowCount } }"""
CREATE_DESTINATION = """mutation ($input: CreateStreamingDestinationInput!) {
  createStreamingDestination(input: $input) { destination { id } } }"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Ids:
    """Event ids that carry the event's number: <prefix>-xxxx-xxxxxxxxxxxx, the last 64
    bits being n, so receivers find them with one regex and mark a bitmap."""

    def __init__(self) -> None:
        self.high = uuid.uuid4().int >> 64
        text = str(uuid.UUID(int=self.high << 64))
        self.prefix = text[:19]
        self.pattern = re.compile(
            rb'"id":"' + self.prefix.encode() + rb'([0-9a-f]{4})-([0-9a-f]{12})"'
        )

    def make(self, n: int) -> str:
        return str(uuid.UUID(int=(self.high << 64) | n))

    def numbers(self, body: bytes) -> list[int]:
        return [int(a + b, 16) for a, b in self.pattern.findall(body)]


class Seen:
    """Which event numbers arrived (a bitmap) and when they first did."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.bits = bytearray(capacity)
        self.first = array("d", [0.0]) * capacity
        self.requests = 0

    def mark(self, numbers: list[int], now: float) -> None:
        self.requests += 1
        for n in numbers:
            if n < len(self.bits) and not self.bits[n]:
                self.bits[n] = 1
                self.first[n] = now

    def missing(self, upto: int) -> int:
        return upto - sum(self.bits[:upto])

    def lags(self, upto: int, soak: Soak) -> dict[int, list[float]]:
        """202 -> first receipt per 5-minute window (computed at the end: an event can
        reach a receiver in this process before its 202 is handled here)."""
        out: dict[int, list[float]] = defaultdict(list)
        for n in range(upto):
            accepted = soak.accepted_at(n)
            if self.bits[n] and accepted is not None:
                out[int((accepted - soak.start) // WINDOW)].append(self.first[n] - accepted)
        return out


# --- subscribers: separate processes -------------------------------------------------


def subscriber_proc(
    url: str, keys: list[str], count: int, first: int, prefix: str, start: float, conn: Any
) -> None:
    """`count` subscribers (numbers first..first+count-1, group = number % GROUPS); at the
    end sends back per subscriber (group, numbers received, errors) and latencies."""
    pattern = re.compile(prefix + r"([0-9a-f]{4})-([0-9a-f]{12})")

    async def run() -> None:
        received: list[set[int]] = [set() for _ in range(count)]
        errors = [0] * count
        lags: dict[int, array[float]] = defaultdict(lambda: array("d"))
        stop = asyncio.Event()

        async def one(index: int) -> None:
            group = (first + index) % GROUPS
            key = keys[(first + index) // KEY_SOCKETS]
            init = {"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}}
            try:
                async with websockets.connect(
                    url,
                    subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                    max_queue=None,
                    open_timeout=60,
                ) as ws:
                    await ws.send(json.dumps(init))
                    ack = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    assert ack["type"] == "connection_ack", ack
                    sub = {
                        "id": "1",
                        "type": "subscribe",
                        "payload": {
                            "query": SUBSCRIPTION,
                            "variables": {"filter": {"actorEmail": f"live{group}@soak.io"}},
                        },
                    }
                    await ws.send(json.dumps(sub))
                    while not stop.is_set():
                        try:
                            raw = await asyncio.wait_for(ws.recv(), 1.0)
                        except TimeoutError:
                            continue
                        now = time.time()
                        message = orjson.loads(raw)
                        kind = message.get("type")
                        if kind == "ping":
                            await ws.send(json.dumps({"type": "pong"}))
                            continue
                        if kind != "next" or "errors" in message["payload"]:
                            errors[index] += 1
                            print(f"subscriber {first + index}: {message}", file=sys.stderr)
                            continue
                        node = message["payload"]["data"]["auditEvents"]["node"]
                        match = pattern.fullmatch(node["id"])
                        if match is None or node["actor"]["email"] != f"live{group}@soak.io":
                            errors[index] += 1
                            continue
                        n = int(match[1] + match[2], 16)
                        received[index].add(n)
                        sent = datetime.fromisoformat(node["occurredAt"]).timestamp()
                        lags[int((sent - start) // WINDOW)].append(now - sent)
            except Exception as exc:  # a closed socket or a failed handshake is an error
                errors[index] += 1
                print(f"subscriber {first + index}: {type(exc).__name__}: {exc}", file=sys.stderr)

        tasks = []
        for index in range(count):
            tasks.append(asyncio.create_task(one(index)))
            await asyncio.sleep(0.01)  # not all handshakes at once
        conn.send("connected")
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        stop.set()
        await asyncio.gather(*tasks)
        conn.send(
            {
                "subscribers": [
                    ((first + i) % GROUPS, sorted(received[i]), errors[i]) for i in range(count)
                ],
                "lags": {w: list(v) for w, v in lags.items()},
            }
        )

    asyncio.run(run())


# --- the soak ---------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, rate: int) -> None:
        self.args = args
        self.ids = Ids()
        self.per_tick = max(GROUPS + 1, round(rate * TICK))
        ticks = int(args.minutes * 60 / TICK) + 10
        self.capacity = ticks * self.per_tick
        self.accepted = array("d", [0.0]) * ticks  # 202 time of each tick's batch
        self.start = 0.0
        self.next_n = 0
        self.live_sent: list[int] = [0] * GROUPS  # events of each group accepted
        self.errors: dict[str, int] = defaultdict(int)
        self.lat: dict[str, dict[int, array[float]]] = defaultdict(
            lambda: defaultdict(lambda: array("d"))
        )
        self.webhook = Seen("webhook", self.capacity)
        self.hec = Seen("splunk hec", self.capacity)

    def accepted_at(self, n: int) -> float | None:
        at = self.accepted[n // self.per_tick]
        return at or None

    def batch(self, tick: int, sent: float) -> bytes:
        occurred = datetime.fromtimestamp(sent, UTC).isoformat()
        events: list[dict[str, Any]] = []
        for i in range(self.per_tick):
            n = tick * self.per_tick + i
            email = f"live{i}@soak.io" if i < GROUPS else f"user{n % 997}@acme.io"
            events.append(
                {
                    "id": self.ids.make(n),
                    "occurredAt": occurred,
                    "action": "file.uploaded" if i % 3 else "user.login.success",
                    "actor": {"type": "USER", "id": f"u_{n % 997}", "email": email},
                    "targets": [{"type": "file", "id": f"f_{n}", "name": f"report-{n}.pdf"}],
                    "ipAddress": f"81.2.69.{n % 250 + 1}",
                    "metadata": {"size": n},
                }
            )
        return orjson.dumps(events)

    # receivers (in this process) ------------------------------------------------------

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        self.webhook.mark(self.ids.numbers(body), time.time())
        return Response(status_code=204)

    async def hec_event(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Splunk {HEC_TOKEN}":
            return Response('{"text":"Invalid token","code":4}', status_code=403)
        body = await request.body()
        self.hec.mark(self.ids.numbers(body), time.time())
        return Response('{"text":"Success","code":0}', media_type="application/json")

    # load -----------------------------------------------------------------------------

    async def ingest(self, base: str, key: str, until: float) -> None:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        limit = asyncio.Semaphore(8)

        async def post(http: httpx.AsyncClient, tick: int, body: bytes, sent: float) -> None:
            try:
                response = await http.post("/v1/events", content=body, headers=headers)
            except httpx.HTTPError as exc:
                self.errors["ingest"] += 1
                print(f"ingest: {type(exc).__name__}: {exc}", file=sys.stderr)
                return
            finally:
                limit.release()
            now = time.time()
            self.lat["ingest POST"][int((sent - self.start) // WINDOW)].append(now - sent)
            if response.status_code != 202:
                self.errors["ingest"] += 1
                print(f"ingest: {response.status_code} {response.text[:200]}", file=sys.stderr)
                return
            self.accepted[tick] = now
            for g in range(GROUPS):
                self.live_sent[g] += 1

        pending: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            tick = 0
            while time.time() < until:
                due = self.start + tick * TICK
                if due > time.time():
                    await asyncio.sleep(due - time.time())
                await limit.acquire()
                sent = time.time()
                task = asyncio.create_task(post(http, tick, self.batch(tick, sent), sent))
                pending.add(task)
                task.add_done_callback(pending.discard)
                tick += 1
                self.next_n = tick * self.per_tick
            await asyncio.gather(*pending)

    async def graphql(
        self, http: httpx.AsyncClient, name: str, query: str, variables: dict[str, Any]
    ) -> dict[str, Any] | None:
        started = time.time()
        try:
            answer = await http.post("/graphql", json={"query": query, "variables": variables})
            data = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            self.errors[name] += 1
            print(f"{name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return None
        self.lat[name][int((started - self.start) // WINDOW)].append(time.time() - started)
        if answer.status_code != 200 or data.get("errors"):
            self.errors[name] += 1
            print(f"{name}: {answer.status_code} {str(data)[:300]}", file=sys.stderr)
            return None
        result: dict[str, Any] = data["data"]
        return result

    async def queries(self, http: httpx.AsyncClient, until: float) -> None:
        i = 0
        while time.time() < until:
            await self.graphql(http, "query", QUERY, {"email": f"user{i % 997}@acme.io"})
            await self.graphql(http, "query", DESTINATIONS, {})
            i += 1
            await asyncio.sleep(1.0)

    async def exports(self, http: httpx.AsyncClient, until: float) -> None:
        while time.time() < until:
            await asyncio.sleep(60.0)
            now = datetime.now(UTC)
            variables = {
                "input": {
                    "format": "NDJSON",
                    "filter": {
                        "occurredFrom": (now - timedelta(seconds=60)).isoformat(),
                        "occurredTo": now.isoformat(),
                    },
                }
            }
            data = await self.graphql(http, "export", EXPORT, variables)
            if data is not None and data["createExport"]["status"] == "FAILED":
                self.errors["export"] += 1

    async def sample_rss(
        self, pids: tuple[int, int], until: float, rss: dict[str, tuple[float, float]]
    ) -> None:
        """RSS of (serve, worker) every 5 minutes."""
        marks = [m * 60.0 for m in range(5, int(self.args.minutes) + 1, 5)]
        for mark in marks:
            wait = self.start + mark - time.time()
            if wait > 0 and self.start + mark <= until + 1:
                await asyncio.sleep(wait)
                rss[f"{mark / 60:.0f} min"] = (rss_mib(pids[0]), rss_mib(pids[1]))


async def measure_max(base: str, key: str) -> float:
    """Events/s of 10 s of batches of 1,000 from 4 clients as fast as they go."""
    total = 0
    deadline = time.time() + 10
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def client(c: int) -> None:
        nonlocal total
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            k = 0
            while time.time() < deadline:
                occurred = datetime.now(UTC).isoformat()
                events = [
                    {
                        "id": str(uuid.uuid4()),
                        "occurredAt": occurred,
                        "action": "file.uploaded",
                        "actor": {"type": "USER", "id": f"u_{i}", "email": f"warm{i}@acme.io"},
                        "targets": [{"type": "file", "id": f"f_{c}_{k}_{i}"}],
                        "ipAddress": f"81.2.69.{i % 250 + 1}",
                    }
                    for i in range(1000)
                ]
                answer = await http.post(
                    "/v1/events", content=orjson.dumps(events), headers=headers
                )
                answer.raise_for_status()
                total += 1000
                k += 1

    started = time.time()
    await asyncio.gather(*(client(c) for c in range(4)))
    return total / (time.time() - started)


async def setup_workspace(url: str, data_dir: str, subscribers: int) -> tuple[str, str, list[str]]:
    """Workspace `soak`; an ingest key, an admin key, and another admin key for every 50
    subscribers (a key holds at most 50 websockets)."""
    from auditlog.config import Settings
    from auditlog.runtime import open_services
    from auditlog.services import keys as key_service
    from auditlog.services import workspaces as workspace_service

    settings = Settings(database_url=url, data_dir=Path(data_dir), secret_key=SECRET_KEY)
    async with open_services(settings, pool_size=2, run_migrations=False) as services:
        await workspace_service.create_workspace(services.pool, "soak", "enterprise")
        ingest = await key_service.create_key(
            services.pool, services.ingestor, workspace_id="soak", role="ingest"
        )
        admin = await key_service.create_key(
            services.pool, services.ingestor, workspace_id="soak", role="admin"
        )
        members = [
            (
                await key_service.create_key(
                    services.pool, services.ingestor, workspace_id="soak", role="admin"
                )
            ).key
            for _ in range(-(-subscribers // KEY_SOCKETS))
        ]
    return ingest.key, admin.key, members


async def read_s3(endpoint: str, bucket: str, soak: Soak) -> tuple[Seen, int]:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    seen = Seen("s3", soak.capacity)
    objects = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            if not item["Key"].endswith(".ndjson.gz"):
                continue
            objects += 1
            body = gzip.decompress(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            seen.mark(soak.ids.numbers(body), 0.0)  # receipt times unknown: read at the end
    return seen, objects


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=int, default=0, help="events/s; 0: half the measured max")
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--client-procs", type=int, default=2)
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL")
    print(
        f"soak: {args.minutes:g} min, started {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC", flush=True
    )

    async with fresh_database("auditlog_bench_soak") as url:
        data_dir = tempfile.mkdtemp(prefix="bench-soak-")
        ingest_key, admin_key, member_keys = await setup_workspace(url, data_dir, args.subscribers)
        s3_port = free_port()
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = free_port()
        log_path = Path(tempfile.gettempdir()) / f"bench-soak-serve-{port}.log"
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "AUDITLOG_SECRET_KEY": SECRET_KEY,
            "AUDITLOG_ALLOW_PRIVATE_DESTINATIONS": "1",
            "AUDITLOG_DATA_DIR": data_dir,
            "AUDITLOG_INGEST_EVENTS_PER_SECOND": "0",
        }
        log = log_path.open("wb")
        serve = subprocess.Popen(
            [sys.executable, "-m", "auditlog.cli", "serve", "--port", str(port),
             "--no-background", "--log-level", "warning"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        # Delivery and sealing in their own process, as `auditlog worker` is deployed
        # beside `serve --no-background` (its RSS is reported too).
        worker_log_path = log_path.with_name(log_path.stem + "-worker.log")
        worker_log = worker_log_path.open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "auditlog.cli", "worker"],
            env=env, stdout=worker_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        procs: list[tuple[Any, Any]] = []
        receiver_server: uvicorn.Server | None = None
        serving: asyncio.Task[None] | None = None
        try:
            async with httpx.AsyncClient() as probe:
                for _ in range(300):
                    with contextlib.suppress(httpx.TransportError):
                        if (await probe.get(f"{base}/readyz")).status_code == 200:
                            break
                    if serve.poll() is not None:
                        raise SystemExit(f"server exited; see {log_path}")
                    await asyncio.sleep(0.1)
                for _ in range(100):
                    with contextlib.suppress(httpx.TransportError):
                        await probe.get(f"http://127.0.0.1:{s3_port}/")
                        break
                    await asyncio.sleep(0.1)
            print(f"server pid {serve.pid}, log {log_path}; Redis: {bool(redis_url)}", flush=True)

            rate = args.rate
            if not rate:
                best = await measure_max(base, ingest_key)
                rate = int(best / 2)
                print(
                    f"measured max ingest: {best:,.0f} events/s; soak rate {rate:,}/s", flush=True
                )
            soak = Soak(args, rate)
            print(
                f"ingest {soak.per_tick * 10:,} events/s ({soak.per_tick} every 100 ms,"
                f" {GROUPS} of them for the subscribers)",
                flush=True,
            )

            # Receivers and destinations.
            receiver_port = free_port()
            app = Starlette(
                routes=[
                    Route("/hook", soak.hook, methods=["POST"]),
                    Route("/services/collector/event", soak.hec_event, methods=["POST"]),
                ]
            )
            receiver_server = uvicorn.Server(
                uvicorn.Config(
                    app, host="127.0.0.1", port=receiver_port, log_level="warning", lifespan="off"
                )
            )
            serving = asyncio.create_task(receiver_server.serve())
            import boto3

            boto3.client(
                "s3",
                endpoint_url=f"http://127.0.0.1:{s3_port}",
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            ).create_bucket(Bucket="soak")
            http = httpx.AsyncClient(
                base_url=base, timeout=120, headers={"Authorization": f"Bearer {admin_key}"}
            )
            receiver = f"http://127.0.0.1:{receiver_port}"
            configs = [
                ("webhook", {"webhook": {"url": f"{receiver}/hook"}}),
                ("splunk", {"splunkHec": {"url": receiver, "token": HEC_TOKEN}}),
                (
                    "s3",
                    {
                        "s3": {
                            "bucket": "soak",
                            "region": "us-east-1",
                            "prefix": "audit",
                            "accessKeyId": "testing",
                            "secretAccessKey": "testing",
                            "endpointUrl": f"http://127.0.0.1:{s3_port}",
                        }
                    },
                ),
            ]
            for name, config in configs:
                created = await soak.graphql(
                    http, "setup", CREATE_DESTINATION, {"input": {"name": name, "config": config}}
                )
                if created is None:
                    raise SystemExit(f"could not create the {name} destination")

            # Subscribers.
            ctx = mp.get_context("spawn")
            per_proc = -(-args.subscribers // args.client_procs)
            soak.start = time.time() + 5.0  # the schedule's origin, also the clients'
            ws_url = base.replace("http://", "ws://") + "/graphql"
            for p in range(args.client_procs):
                count = min(per_proc, args.subscribers - p * per_proc)
                ours, theirs = ctx.Pipe()
                proc = ctx.Process(
                    target=subscriber_proc,
                    args=(
                        ws_url,
                        member_keys,
                        count,
                        p * per_proc,
                        soak.ids.prefix,
                        soak.start,
                        theirs,
                    ),
                )
                proc.start()
                procs.append((proc, ours))
            loop = asyncio.get_running_loop()
            for _, pipe in procs:
                await loop.run_in_executor(None, pipe.recv)
            await asyncio.sleep(2.0)  # the last subscriptions start
            soak.start = max(soak.start, time.time())
            await asyncio.sleep(max(0.0, soak.start - time.time()))
            pids = (serve.pid, worker.pid)
            rss: dict[str, tuple[float, float]] = {
                "start": (rss_mib(serve.pid), rss_mib(worker.pid))
            }
            print(
                f"{args.subscribers} subscribers connected; RSS start serve"
                f" {rss['start'][0]:.1f} MiB, worker {rss['start'][1]:.1f} MiB",
                flush=True,
            )

            until = soak.start + args.minutes * 60
            await asyncio.gather(
                soak.ingest(base, ingest_key, until),
                soak.queries(http, until),
                soak.exports(http, until),
                soak.sample_rss(pids, until, rss),
            )
            rss["end (load stopped)"] = (rss_mib(serve.pid), rss_mib(worker.pid))
            ended = time.time()
            upto = soak.next_n
            print(
                f"load stopped after {ended - soak.start:.0f} s; {upto:,} events sent", flush=True
            )

            # Drain: destinations and subscribers get what is left.
            accepted_ticks = sum(1 for t in soak.accepted[: upto // soak.per_tick] if t)
            expected = accepted_ticks * soak.per_tick
            deadline = time.time() + 300
            while time.time() < deadline:
                if all(s.missing(upto) <= upto - expected for s in (soak.webhook, soak.hec)):
                    break
                await asyncio.sleep(1.0)
            drained = time.time() - ended
            await asyncio.sleep(5.0)
            for _, pipe in procs:
                pipe.send("stop")
            results = [await loop.run_in_executor(None, pipe.recv) for _, pipe in procs]
            s3_seen, objects = await read_s3(f"http://127.0.0.1:{s3_port}", "soak", soak)
            status = await soak.graphql(http, "query", DESTINATIONS, {})
            await http.aclose()

            # Report.
            log.flush()
            worker_log.flush()
            server_errors = sum(
                1 for path in (log_path, worker_log_path)
                for line in path.read_text(errors="replace").splitlines()
                if " ERROR " in line or line.startswith("ERROR") or "Traceback" in line
            )  # fmt: skip
            lost_subscribers = 0
            worst = 0
            for result in results:
                for group, got, errors in result["subscribers"]:
                    want = soak.live_sent[group]
                    missing = want - len(got)
                    lost_subscribers += max(0, missing)
                    worst = max(worst, missing)
                    soak.errors["subscriber"] += errors
                for w, values in result["lags"].items():
                    soak.lat["subscriber"][int(w)].extend(values)
            for seen in (soak.webhook, soak.hec):
                for w, values in seen.lags(upto, soak).items():
                    soak.lat[seen.name][w].extend(values)
            print()
            print(
                "RSS (MiB) of serve --no-background (API, ingest, GraphQL, live tail, exports)"
                " / auditlog worker (3 destinations, sealer):"
            )
            print("  " + ", ".join(f"{k} {a:.1f} / {b:.1f}" for k, (a, b) in rss.items()))
            marks = [k for k in rss if k.endswith(" min")]
            if "5 min" in rss and len(marks) > 1:
                for i, name in enumerate(("serve", "worker")):
                    at5, last = rss["5 min"][i], rss[marks[-1]][i]
                    print(
                        f"  {name}: growth from 5 min to {marks[-1]}:"
                        f" {(last - at5) / at5 * 100:+.1f}% (target <= +10%)"
                    )
            errors_total = sum(soak.errors.values()) + server_errors
            print(
                f"errors: {errors_total} (target 0): "
                + ", ".join(f"{k} {v}" for k, v in sorted(soak.errors.items()))
                + f", ERROR lines in the serve and worker logs {server_errors}"
            )
            print(
                f"events: {upto:,} sent, {expected:,} accepted:"
                f" {expected / (ended - soak.start):,.0f} events/s achieved of"
                f" {soak.per_tick * 10:,} scheduled (at most 8 requests in flight);"
                f" {sum(soak.live_sent):,} for the subscribers ({soak.live_sent[0]:,} a group)"
            )
            print(
                f"lost (target 0): subscribers {lost_subscribers} (worst subscriber {worst}),"
                f" webhook {soak.webhook.missing(upto) - (upto - expected)},"
                f" splunk hec {soak.hec.missing(upto) - (upto - expected)},"
                f" s3 {s3_seen.missing(upto) - (upto - expected)} ({objects} objects);"
                f" destinations drained {drained:.0f} s after the load stopped"
            )
            if status is not None:
                for d in status["streamingDestinations"]:
                    print(
                        f"  destination {d['name']}: {d['status']}, lag {d['lagEvents']},"
                        f" lastError {d['lastError']}"
                    )
            names = ["ingest POST", "subscriber", "webhook", "splunk hec", "query", "export"]
            windows = sorted({w for name in names for w in soak.lat[name]})
            print("p99 latency per 5 minutes (ms; count):")
            print("  window   " + "".join(f"{name:>22}" for name in names))
            for w in windows:
                cells = []
                for name in names:
                    values = soak.lat[name].get(w)
                    cells.append(
                        f"{percentile(values, 99) * 1000:>12,.0f} ({len(values):>7,})"
                        if values
                        else f"{'-':>22}"
                    )
                label = f"{w * 5:>3}-{(w + 1) * 5}m" if w * 5 < args.minutes else "drain"
                print(f"  {label:<9}" + "".join(f"{c:>22}" for c in cells))
        finally:
            for proc, _ in procs:
                if proc.is_alive():
                    proc.terminate()
                proc.join(10)
            if receiver_server is not None and serving is not None:
                receiver_server.should_exit = True
                await serving
            for process in (worker, serve):
                process.terminate()
                process.wait(30)
            log.close()
            worker_log.close()
            moto.terminate()
            moto.wait(30)


if __name__ == "__main__":
    asyncio.run(main())
