"""Live tail through real Redis: cross-process delivery, surviving a Redis restart,
and revocations reaching the sockets of every instance."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from auditlog.services import keys as key_service
from tests.conftest import (
    SECRET_KEY,
    RunningService,
    WorkspaceKeys,
    event,
    free_port,
    make_settings,
    start_service,
    stop_service,
)
from tests.live_client import live_client, ws_url
from tests.test_live import PRODUCT, ingest
from tests.test_live_revocation import CLOSE_WITHIN, assert_closed_4401, new_admin_key

pytestmark = pytest.mark.redis


class RedisServer:
    """Our own redis-server on a free port (never the shared one), restartable."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(100):
            ping = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, check=False
            )
            if ping.stdout.strip() == b"PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # a frozen process is killed too
            self.proc.wait()
            self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: connections are still accepted (by the kernel), nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def channel_subscribers(self, channel: str) -> int:
        """PUBSUB NUMSUB: how many connections listen on a channel now."""
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), "pubsub", "numsub", channel],
            capture_output=True,
            check=True,
            timeout=5,
        ).stdout.split()
        return int(out[1]) if len(out) > 1 else 0


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# Known: redis-py leaves one socket of the connection Redis dropped to the garbage
# collector (a ResourceWarning at teardown); the behaviour under test is unaffected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_subscriptions_survive_a_redis_restart_and_catch_up(
    database_url: str, data_dir: Path, own_redis: RedisServer, workspace: WorkspaceKeys
) -> None:
    # Polling slower than the test: deliveries within seconds prove the bus works again.
    settings = make_settings(
        database_url, data_dir, redis_url=own_redis.url, live_poll_seconds=60.0
    )
    running = await start_service(settings)
    try:
        hub = running.services.live
        assert hub is not None
        async with (
            httpx.AsyncClient(base_url=running.base_url, timeout=30) as http,
            live_client(running.base_url, workspace.admin) as client,
        ):
            workspace.http = http
            op = await client.subscribe(PRODUCT)
            await asyncio.sleep(0.5)
            before = await ingest(workspace, [event()])
            assert [e["node"]["id"] for e in await client.edges(op, 1, wait=5)] == before

            own_redis.stop()
            during = await ingest(workspace, [event()])  # stored; its doorbell is lost
            own_redis.start()
            connections = hub.doorbells.connections
            for _ in range(200):
                if hub.doorbells.connections > connections:
                    break
                await asyncio.sleep(0.1)
            assert hub.doorbells.connections > connections, "listener did not reconnect"
            # Reconnecting rings every doorbell: the event ingested meanwhile arrives.
            assert [e["node"]["id"] for e in await client.edges(op, 1, wait=10)] == during
            await asyncio.sleep(0.5)
            after = await ingest(workspace, [event()])
            assert [e["node"]["id"] for e in await client.edges(op, 1, wait=5)] == after
    finally:
        await stop_service(running)


def _serve(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "auditlog.cli", "serve", "--port", str(port)),
            *("--log-level", "warning", "--no-background"),
        ],
        env=env,
    )


async def _wait_ready(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        for _ in range(300):
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{base_url} did not start")


async def test_subscriber_on_one_process_receives_events_ingested_on_another(
    database_url: str, data_dir: Path, workspace: WorkspaceKeys, service: RunningService
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": os.environ["REDIS_URL"],
        "AUDITLOG_SECRET_KEY": SECRET_KEY,
        "AUDITLOG_DATA_DIR": str(data_dir),
        "AUDITLOG_LIVE_POLL_SECONDS": "60",  # only the Redis doorbell can be this fast
    }
    ports = [free_port(), free_port()]
    procs = [_serve(port, env) for port in ports]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        await asyncio.gather(*(_wait_ready(url) for url in urls))
        async with (
            httpx.AsyncClient(base_url=urls[1], timeout=30) as http_b,
            live_client(urls[0], workspace.admin) as on_a,
        ):
            op = await on_a.subscribe(PRODUCT)
            await asyncio.sleep(0.5)
            workspace.http = http_b
            ids = await ingest(workspace, [event(), event("file.deleted")])
            started = time.monotonic()
            edges = await on_a.edges(op, 2, wait=10)
            assert time.monotonic() - started < 5
            # A cursor from process A resumes on the query API of process B.
            workspace.http = http_b
            page = await workspace.gql(
                "query($c: String) { auditEvents(before: $c) { edges { node { id } } } }",
                {"c": edges[0]["cursor"]},
            )
        assert [e["node"]["id"] for e in edges] == ids
        assert ids[1] in [e["node"]["id"] for e in page["data"]["auditEvents"]["edges"]]
        # `auditlog serve` declines websocket compression (one deflate per
        # subscriber per event) unless started with --ws-deflate.
        async with websockets.connect(
            ws_url(urls[0]),
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        ) as ws:
            assert ws.request is not None and ws.response is not None
            assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)


async def test_a_revocation_on_one_instance_closes_the_socket_on_another_through_redis(
    database_url: str, data_dir: Path, own_redis: RedisServer, workspace: WorkspaceKeys
) -> None:
    # Re-checks every 10 minutes: a close within a second can only come through the bus.
    settings = make_settings(
        database_url, data_dir, redis_url=own_redis.url, ws_recheck_seconds=600.0
    )
    first = await start_service(settings)
    second = await start_service(settings)
    try:
        created = await new_admin_key(second.services, workspace.id)
        async with live_client(first.base_url, created.key) as on_first:
            op = await on_first.subscribe(PRODUCT)
            await asyncio.sleep(0.5)
            services = second.services
            await key_service.revoke_key(
                services.pool, services.ingestor, created.id, bus=services.bus
            )
            started = time.monotonic()
            reason = await assert_closed_4401(on_first, within=1.0)
            assert time.monotonic() - started < 1.0
            assert "revoked" in reason and op
    finally:
        await stop_service(first)
        await stop_service(second)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_with_the_bus_down_the_periodic_recheck_still_closes_within_5s(
    database_url: str, data_dir: Path, own_redis: RedisServer, workspace: WorkspaceKeys
) -> None:
    running = await start_service(make_settings(database_url, data_dir, redis_url=own_redis.url))
    try:
        services = running.services
        created = await new_admin_key(services, workspace.id)
        async with live_client(running.base_url, created.key) as client:
            op = await client.subscribe(PRODUCT)
            await asyncio.sleep(0.5)
            own_redis.stop()
            # The notice cannot be published; the revocation itself stands.
            row = await key_service.revoke_key(
                services.pool, services.ingestor, created.id, bus=services.bus
            )
            assert row.revoked_at is not None
            started = time.monotonic()
            await assert_closed_4401(client)
            assert time.monotonic() - started < CLOSE_WITHIN
            assert op
    finally:
        own_redis.start()  # the service's bus disconnects cleanly at shutdown
        await stop_service(running)
