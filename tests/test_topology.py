"""Beyond one process: two `auditlog serve --no-background` and two `auditlog worker`
processes on one PostgreSQL and one Redis, all of the test's own (never the shared
servers), with a real webhook receiver, a real Splunk HEC receiver and S3 on moto.

Ingest is spread over both APIs; live subscribers (real websocket clients) on
both. Mid-run one worker and one API process are killed with SIGKILL; the dead
API's subscribers reconnect to the other and resume from their last cursor, its
producers retry their batches there (same ids). At the end: every subscriber
saw every event of its filter in ingest order with no gap and no duplicate,
every destination received every event (at least once), and one signed tree
covers every event of the workspace.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import httpx
import pytest
import websockets
from moto.server import ThreadedMotoServer
from websockets.exceptions import WebSocketException

from auditlog.config import Settings
from auditlog.runtime import open_services
from tests import integrity_verifier as v
from tests.conftest import WorkspaceKeys, create_workspace_keys, event, free_port, make_settings
from tests.faults import cli_env, start_cli, stop_process, stored_ids, wait_ready
from tests.integrity_support import payloads_in_ingest_order
from tests.live_client import ws_url
from tests.postgres_server import PostgresServer, unavailable_reason
from tests.streaming.gql import create_destination
from tests.streaming.receivers import HecReceiver, Receiver, wait_until, webhook_events
from tests.test_live_redis import RedisServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    # redis-py and botocore leave sockets to the garbage collector (ResourceWarning).
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

SIGNING_KEY = base64.b64encode(bytes(range(32))).decode()
PRODUCERS = 4
BATCHES = 12  # per producer
BATCH = 25
FILTERS = {
    "files": {"actions": ["file.uploaded"]},
    "logins": {"categories": ["AUTHENTICATION"]},
}
SUBSCRIBE = """subscription ($filter: AuditEventFilter, $after: String) {
  auditEvents(filter: $filter, after: $after) { cursor node { id action category } } }"""
SEED = """query { auditEvents(first: 1, filter: {actions: ["workspace.domain.added"]}) {
  edges { cursor } } }"""
INTEGRITY = """{ integrity { verifierKey latest { treeSize rootHash signedNote } } }"""


def matches(name: str, payload: dict[str, Any]) -> bool:
    if name == "files":
        return payload["action"] == "file.uploaded"
    return payload["category"] == "AUTHENTICATION"


@dataclass
class Subscriber:
    """A graphql-transport-ws client that, when its socket ends, reconnects to the
    next API in its list and resumes after the last cursor it was given."""

    name: str
    urls: list[str]
    key: str
    cursor: str
    ids: list[str] = field(default_factory=list)
    connects: list[str] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        turn = 0
        while True:
            url = self.urls[turn % len(self.urls)]
            with contextlib.suppress(OSError, TimeoutError, WebSocketException):
                await self._session(url)
            turn += 1
            await asyncio.sleep(0.2)

    async def _session(self, base_url: str) -> None:
        async with websockets.connect(
            ws_url(base_url),
            subprotocols=["graphql-transport-ws"],
            open_timeout=5,  # type: ignore[list-item]
        ) as ws:
            init = {"authorization": f"Bearer {self.key}"}
            await ws.send(json.dumps({"type": "connection_init", "payload": init}))
            ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert ack["type"] == "connection_ack", ack
            variables = {"filter": FILTERS[self.name.split("@")[0]], "after": self.cursor}
            payload = {"query": SUBSCRIBE, "variables": variables}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            self.connects.append(base_url)
            self.ready.set()
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                    continue
                assert message["type"] == "next", message
                assert "errors" not in message["payload"], message
                edge = message["payload"]["data"]["auditEvents"]
                self.ids.append(edge["node"]["id"])
                self.cursor = edge["cursor"]


@dataclass
class Spread:
    """Producers sending fixed batches over the APIs in turn; a batch that fails
    (the API gone, a 503) is sent again, same ids, to the next API."""

    workspace: WorkspaceKeys
    urls: list[str]
    sent: list[str] = field(default_factory=list)
    accepted: int = 0
    retried: int = 0
    by_api: dict[str, int] = field(default_factory=dict)

    async def produce(self, number: int) -> None:
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(httpx.AsyncClient(base_url=u, timeout=10))
                for u in self.urls
            ]
            turn = number
            for b in range(BATCHES):
                batch = [
                    event("file.uploaded" if (b + i) % 2 else "user.login.success")
                    for i in range(BATCH)
                ]
                for _attempt in range(200):
                    client = clients[turn % len(clients)]
                    turn += 1
                    try:
                        response = await client.post(
                            "/v1/events",
                            json=batch,
                            headers=self.workspace.auth(self.workspace.ingest_key),
                        )
                    except httpx.TransportError:
                        self.retried += 1
                        await asyncio.sleep(0.1)
                        continue
                    if response.status_code == 202:
                        self.sent += [e["id"] for e in batch]
                        self.accepted += 1
                        api = str(client.base_url)
                        self.by_api[api] = self.by_api.get(api, 0) + 1
                        break
                    assert response.status_code == 503, response.text
                    self.retried += 1
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("a batch was never accepted")
                await asyncio.sleep(0.02)


@pytest.fixture
def own_servers() -> Iterator[tuple[PostgresServer, RedisServer, str]]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    pg = PostgresServer()
    redis = RedisServer()
    s3_port = free_port()
    s3_url = f"http://127.0.0.1:{s3_port}"
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    try:
        pg.init()
        pg.start()
        redis.start()
        s3.start()
        yield pg, redis, s3_url
    finally:
        with contextlib.suppress(Exception):
            s3.stop()
        redis.stop()
        pg.cleanup()


@contextlib.asynccontextmanager
async def processes(env: dict[str, str], *argvs: list[str]) -> AsyncIterator[list[Any]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        for argv in argvs:
            started.append(start_cli(env, *argv))
        yield started
    finally:
        for proc in started:
            stop_process(proc)


def s3_ids(s3: Any, bucket: str) -> set[str]:
    out: set[str] = set()
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        if not item["Key"].endswith(".ndjson.gz"):
            continue  # a checkpoint object
        raw = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        out.update(json.loads(line)["id"] for line in gzip.decompress(raw).splitlines())
    return out


@pytest.mark.timeout(180)
async def test_two_apis_two_workers_one_database_survive_sigkill(
    own_servers: tuple[PostgresServer, RedisServer, str], tmp_path: Path
) -> None:
    pg, redis, s3_endpoint = own_servers
    started_at = time.monotonic()
    admin = await asyncpg.connect(pg.url)
    try:
        await admin.execute("CREATE DATABASE auditlog")
    finally:
        await admin.close()
    url = pg.url.rsplit("/", 1)[0] + "/auditlog"
    env = cli_env(
        url,
        tmp_path,
        REDIS_URL=redis.url,
        AUDITLOG_SIGNING_KEY=SIGNING_KEY,
        AUDITLOG_LIVE_POLL_SECONDS="0.5",
    )
    ports = [free_port(), free_port()]
    apis = [f"http://127.0.0.1:{p}" for p in ports]
    settings: Settings = make_settings(url, tmp_path, redis_url=redis.url, signing_key=SIGNING_KEY)
    hec = HecReceiver(token="hec-topology")
    hook = Receiver()
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="topo", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    await hook.start()
    await hec.start()
    try:
        # Migrated once here; then the four processes start together.
        async with (
            open_services(settings) as services,
            httpx.AsyncClient(timeout=30) as http,
            processes(
                env,
                ["serve", "--no-background", "--port", str(ports[0]), "--log-level", "warning"],
                ["serve", "--no-background", "--port", str(ports[1]), "--log-level", "warning"],
                ["worker", "--lease-seconds", "4", "--send-timeout", "2"],
                ["worker", "--lease-seconds", "4", "--send-timeout", "2"],
            ) as (api_a, api_b, worker_1, worker_2),
        ):
            await asyncio.gather(*(wait_ready(a, within=60) for a in apis))
            http.base_url = httpx.URL(apis[1])
            workspace = await create_workspace_keys(services, http)
            created = await create_destination(workspace, {"webhook": {"url": hook.url}})
            secret = created["webhookSecret"]
            await create_destination(
                workspace, {"splunkHec": {"url": hec.url, "token": "hec-topology"}}, "hec"
            )
            s3_config = {
                "bucket": "topo",
                "region": "eu-west-1",
                "accessKeyId": "testing",
                "secretAccessKey": "testing",
                "endpointUrl": s3_endpoint.replace("127.0.0.1", "localhost"),
            }
            await create_destination(workspace, {"s3": s3_config}, "s3")
            seed = await workspace.ingest([event("workspace.domain.added")])
            assert seed.status_code == 202, seed.text
            cursor = (await workspace.gql(SEED))["data"]["auditEvents"]["edges"][0]["cursor"]

            subscribers = [
                Subscriber(f"{name}@{i}", [apis[i], apis[1 - i]], workspace.admin, cursor)
                for name in FILTERS
                for i in (0, 1)
            ]
            tasks = [asyncio.create_task(s.run()) for s in subscribers]
            try:
                await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in subscribers)), 30)
                spread = Spread(workspace, apis)
                producing = asyncio.gather(*(spread.produce(n) for n in range(PRODUCERS)))
                await wait_until(lambda: spread.accepted >= PRODUCERS * BATCHES // 3, within=60)
                worker_1.send_signal(signal.SIGKILL)
                api_a.send_signal(signal.SIGKILL)
                killed_at = spread.accepted
                await asyncio.wait_for(producing, 90)
                ours = set(spread.sent)
                assert len(spread.sent) == len(ours) == PRODUCERS * BATCHES * BATCH

                stored = [i for i in await stored_ids(url, workspace.id) if i in ours]
                assert len(stored) == len(ours), "an accepted event is missing or doubled"
                payloads = await payloads_in_ingest_order(url, workspace.id)
                expected = {
                    name: [p["id"] for p in payloads if p["id"] in ours and matches(name, p)]
                    for name in FILTERS
                }

                def level() -> bool:
                    return all(
                        len(s.ids) >= len(expected[s.name.split("@")[0]]) for s in subscribers
                    )

                await wait_until(level, within=45)
                for s in subscribers:
                    assert s.ids == expected[s.name.split("@")[0]], s.name
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            moved = [s for s in subscribers if s.name.endswith("@0")]
            assert all(s.connects[:2] == [apis[0], apis[1]] for s in moved), [
                s.connects for s in moved
            ]

            def hec_ids() -> set[str]:
                return {o["event"]["id"] for o in hec.objects() if "id" in o["event"]}

            def hook_ids() -> set[str]:
                return {e["id"] for e in webhook_events(hook, secret)}

            await wait_until(lambda: ours <= hook_ids(), within=45)
            await wait_until(lambda: ours <= hec_ids(), within=45)
            await wait_until(lambda: ours <= s3_ids(s3, "topo"), within=45)

            # One signed tree over every event of the workspace (the service's own
            # events included), in ingest order, sealed by the surviving worker.
            everything = await payloads_in_ingest_order(url, workspace.id)

            async def covered() -> bool:
                latest = (await workspace.gql(INTEGRITY))["data"]["integrity"]["latest"]
                return latest is not None and latest["treeSize"] >= len(everything)

            await wait_until(covered, within=30)
            integrity = (await workspace.gql(INTEGRITY))["data"]["integrity"]
            latest = integrity["latest"]
            assert latest["treeSize"] == len(everything)
            checkpoint = v.open_checkpoint(latest["signedNote"], integrity["verifierKey"])
            assert checkpoint.tree_size == len(everything)
            assert checkpoint.root == v.root_of_payloads(everything)
            assert worker_2.poll() is None and api_b.poll() is None
    finally:
        await hook.stop()
        await hec.stop()
    print(
        f"topology: {len(ours)} events, {killed_at} batches before the kills, "
        f"{spread.retried} retries, batches by API {spread.by_api}, "
        f"{time.monotonic() - started_at:.1f} s"
    )
