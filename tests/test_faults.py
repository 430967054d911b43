"""Faults of the servers the service leans on, each test breaking servers of its own
(never the shared PostgreSQL or Redis).

Redis is a doorbell, never a dependency: `serve` and `worker` start and work with
it down, ingest never waits on it (frozen with SIGSTOP: p99 under 1 s), the live
tail and stream workers poll meanwhile and lose nothing, and reconnect on their
own. PostgreSQL restarting (fast and immediate shutdown mid-ingest): 503 with
Retry-After, never a 500 or a hang; the pool recovers by itself; producers that
retry store every event exactly once; subscribers and destinations resume with
no gap.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from auditlog.runtime import migrate
from auditlog.services.service_events import ServiceEventWriter
from auditlog.storage.database import owner_connection
from auditlog.streaming.delivery import DeliveryOptions
from auditlog.streaming.worker import running_worker
from tests.conftest import (
    WorkspaceKeys,
    create_workspace_keys,
    event,
    free_port,
    make_settings,
    start_service,
    stop_service,
)
from tests.faults import (
    Producers,
    cli_env,
    edges_until,
    ids_of,
    start_cli,
    stop_process,
    stored_ids,
    wait_ready,
)
from tests.live_client import live_client
from tests.postgres_server import PostgresServer, unavailable_reason
from tests.streaming.gql import create_destination
from tests.streaming.receivers import Receiver, wait_until, webhook_events
from tests.test_live import PRODUCT
from tests.test_live_redis import RedisServer

pytestmark = [
    pytest.mark.slow,
    # redis-py leaves the socket of a connection Redis dropped to the garbage
    # collector (a ResourceWarning); the behaviour under test is unaffected.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)

POLLING = DeliveryOptions(lease_seconds=5, poll_seconds=0.5, send_timeout=2.0)


@pytest.fixture(autouse=True)
async def no_leftover_destinations(database_url: str) -> None:
    """Destinations of earlier tests point at receivers that are gone."""
    async with owner_connection(database_url) as conn:
        await conn.execute("DELETE FROM stream_destinations")


@asynccontextmanager
async def receiver_running() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def delivered(receiver: Receiver, secret: str) -> set[str]:
    return {e["id"] for e in webhook_events(receiver, secret)}


async def stored_once(database_url: str, workspace_id: str, ours: list[str]) -> list[str]:
    """Our events as stored, in ingest order, after checking each is stored exactly once
    (the workspace also holds the service's own events: left out)."""
    wanted = set(ours)
    mine = [i for i in await stored_ids(database_url, workspace_id) if i in wanted]
    assert len(mine) == len(set(mine)), "an event was stored twice"
    assert set(mine) == wanted, f"{len(wanted - set(mine))} accepted events are not stored"
    return mine


async def bus_state(http: httpx.AsyncClient) -> str:
    response = await http.get("/readyz")
    assert response.status_code == 200, response.text
    state: str = response.json()["bus"]
    return state


async def ingest_ids(workspace: WorkspaceKeys, count: int) -> list[str]:
    response = await workspace.ingest([event("file.uploaded") for _ in range(count)])
    assert response.status_code == 202, response.text
    ids: list[str] = response.json()["ids"]
    return ids


@needs_redis_server
@pytest.mark.timeout(90)
async def test_serve_and_worker_start_with_redis_down_deliver_by_polling_then_reconnect(
    database_url: str, data_dir: Path, workspace: WorkspaceKeys
) -> None:
    redis = RedisServer()  # its port: nothing listens there yet
    env = cli_env(database_url, data_dir, REDIS_URL=redis.url, AUDITLOG_LIVE_POLL_SECONDS="0.5")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = start_cli(
        env, "serve", "--port", str(port), "--log-level", "warning", "--no-background"
    )
    worker = start_cli(env, "worker", "--lease-seconds", "5")
    try:
        async with (
            receiver_running() as receiver,
            httpx.AsyncClient(base_url=base, timeout=10) as http,
        ):
            ready = await wait_ready(base)
            assert ready.json() == {"status": "ready", "bus": "down"}
            workspace.http = http
            created = await create_destination(workspace, {"webhook": {"url": receiver.url}})
            secret = created["webhookSecret"]
            async with live_client(base, workspace.admin) as client:
                op = await client.subscribe(PRODUCT)
                await asyncio.sleep(0.5)
                ids: list[str] = []
                for _ in range(3):
                    started = time.perf_counter()
                    ids += await ingest_ids(workspace, 5)
                    assert time.perf_counter() - started < 1.0
                # Polling alone: every event, in order, to the subscriber and the destination.
                assert ids_of(await edges_until(client, op, set(ids))) == ids
                await wait_until(lambda: set(ids) <= delivered(receiver, secret), within=20)

                await asyncio.to_thread(redis.start)
                channel = f"workspace:{workspace.id}"
                # The live tail of `serve` and the worker's doorbell both subscribe again...
                await wait_until(lambda: redis.channel_subscribers(channel) >= 2, within=20)
                # ...and the tail's heartbeat comes back through Redis.
                await wait_until(lambda: _equals(bus_state(http), "up"), within=20)
                later = await ingest_ids(workspace, 1)
                assert ids_of(await edges_until(client, op, set(later))) == later
                await wait_until(lambda: set(later) <= delivered(receiver, secret), within=20)
        assert await stored_once(database_url, workspace.id, ids + later) == ids + later
    finally:
        stop_process(serve)
        stop_process(worker)
        redis.stop()


async def _equals(value: Awaitable[str], expected: str) -> bool:
    return await value == expected


@needs_redis_server
@pytest.mark.timeout(90)
async def test_redis_killed_mid_run_and_restarted_loses_nothing_and_reconnects(
    database_url: str, data_dir: Path, workspace: WorkspaceKeys
) -> None:
    redis = RedisServer()
    await asyncio.to_thread(redis.start)
    running = await start_service(
        make_settings(database_url, data_dir, redis_url=redis.url, live_poll_seconds=1.0)
    )
    services = running.services
    try:
        async with (
            receiver_running() as receiver,
            httpx.AsyncClient(base_url=running.base_url, timeout=10) as http,
            running_worker(
                services.pool, services.bus, services.settings, POLLING, record=ServiceEventWriter()
            ) as worker,
            live_client(running.base_url, workspace.admin) as client,
        ):
            workspace.http = http
            created = await create_destination(workspace, {"webhook": {"url": receiver.url}})
            secret = created["webhookSecret"]
            op = await client.subscribe(PRODUCT)
            await wait_until(lambda: worker.tasks, within=10)  # leased and listening
            await asyncio.sleep(0.5)
            hub = services.live
            assert hub is not None and worker.doorbells is not None
            listeners = (hub.doorbells, worker.doorbells.listener)
            ids: list[str] = []
            for n in range(30):
                if n == 10:
                    await asyncio.to_thread(redis.stop)
                    connections = [listener.connections for listener in listeners]
                if n == 20:
                    await asyncio.to_thread(redis.start)  # the same port
                started = time.perf_counter()
                ids += await ingest_ids(workspace, 3)
                assert time.perf_counter() - started < 1.0
                await asyncio.sleep(0.05)
            assert services.bus.dropped > 0  # the doorbells rung while Redis was down
            # Both listeners reconnect by themselves.
            await wait_until(
                lambda: all(
                    listener.connections > before
                    for listener, before in zip(listeners, connections, strict=True)
                ),
                within=20,
            )
            later = await ingest_ids(workspace, 1)
            got = await edges_until(client, op, set(ids + later))
            assert ids_of(got) == ids + later  # every event, in order, no duplicate
            await wait_until(lambda: set(ids + later) <= delivered(receiver, secret), within=20)
        assert await stored_once(database_url, workspace.id, ids + later) == ids + later
    finally:
        await stop_service(running)
        await asyncio.to_thread(redis.stop)


@needs_redis_server
@pytest.mark.timeout(120)
async def test_redis_frozen_ingest_p99_under_one_second_and_nothing_lost(
    database_url: str, data_dir: Path, workspace: WorkspaceKeys
) -> None:
    redis = RedisServer()
    await asyncio.to_thread(redis.start)
    running = await start_service(
        make_settings(database_url, data_dir, redis_url=redis.url, live_poll_seconds=1.0)
    )
    services = running.services
    frozen = False
    try:
        async with (
            receiver_running() as receiver,
            httpx.AsyncClient(base_url=running.base_url, timeout=10) as http,
            running_worker(
                services.pool, services.bus, services.settings, POLLING, record=ServiceEventWriter()
            ) as worker,
            live_client(running.base_url, workspace.admin) as client,
        ):
            workspace.http = http
            created = await create_destination(workspace, {"webhook": {"url": receiver.url}})
            secret = created["webhookSecret"]
            op = await client.subscribe(PRODUCT)
            await wait_until(lambda: worker.tasks, within=10)
            await wait_until(lambda: _equals(bus_state(http), "up"), within=10)
            ids = await ingest_ids(workspace, 1)
            await edges_until(client, op, set(ids))

            redis.freeze()
            frozen = True
            latencies: list[float] = []
            for _ in range(200):
                started = time.perf_counter()
                ids += await ingest_ids(workspace, 5)
                latencies.append(time.perf_counter() - started)
            assert (await http.get("/readyz")).status_code == 200  # Redis is no dependency
            p50, p99 = (statistics.quantiles(latencies, n=100)[i] for i in (49, 98))
            print(
                f"\ningest with Redis frozen: {len(latencies)} batches of 5, p50 {p50 * 1000:.1f}"
                f" ms, p99 {p99 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
            )
            assert p99 < 1.0
            # By polling, meanwhile: every event to the subscriber, in order, and the sink.
            got = await edges_until(client, op, set(ids[1:]), within=60)
            assert ids_of(got) == ids[1:]
            await wait_until(lambda: set(ids) <= delivered(receiver, secret), within=60)

            redis.thaw()
            frozen = False
            await wait_until(lambda: _equals(bus_state(http), "up"), within=30)
            later = await ingest_ids(workspace, 1)
            assert ids_of(await edges_until(client, op, set(later))) == later
        assert await stored_once(database_url, workspace.id, ids + later) == ids + later
    finally:
        if frozen:
            redis.thaw()
        await stop_service(running)
        await asyncio.to_thread(redis.stop)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    server = PostgresServer()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.cleanup()


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


@pytest.mark.timeout(120)
async def test_postgres_fast_and_immediate_shutdown_mid_ingest_loses_nothing(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    pg = own_postgres
    admin = await asyncpg.connect(pg.url)
    try:
        await admin.execute("CREATE DATABASE auditlog")
    finally:
        await admin.close()
    url = pg.url.rsplit("/", 1)[0] + "/auditlog"
    await migrate(url)
    running = await start_service(make_settings(url, tmp_path, live_poll_seconds=0.5))
    services = running.services
    try:
        async with (
            receiver_running() as receiver,
            httpx.AsyncClient(base_url=running.base_url, timeout=10) as http,
            running_worker(
                services.pool, services.bus, services.settings, POLLING, record=ServiceEventWriter()
            ),
        ):
            workspace = await create_workspace_keys(services, http)
            created = await create_destination(workspace, {"webhook": {"url": receiver.url}})
            secret = created["webhookSecret"]
            async with live_client(running.base_url, workspace.admin) as client:
                op = await client.subscribe(PRODUCT)
                await asyncio.sleep(0.5)
                producers = Producers(workspace, batches=40, size=10)
                producing = asyncio.create_task(producers.run(3))
                for mode in ("fast", "immediate"):
                    target = producers.accepted_batches + 15
                    await wait_until(
                        lambda t=target: producers.accepted_batches >= t or producing.done(),
                        within=30,
                    )
                    assert not producing.done(), "the producers finished before the fault"
                    await asyncio.to_thread(pg.stop, mode)  # mid-ingest
                    answers = sum(producers.statuses.values())
                    down = await http.get("/readyz")
                    assert down.status_code == 503, down.text
                    # Producers get answers meanwhile (503, checked below), no hang.
                    await wait_until(
                        lambda a=answers: sum(producers.statuses.values()) >= a + 3, within=10
                    )
                    await asyncio.to_thread(pg.start)
                    await wait_until(lambda: _ready(http), within=20)  # the pool recovered
                await asyncio.wait_for(producing, 90)
                assert producers.unexpected == []  # never a 500, a 503 always with Retry-After
                assert producers.transport_errors == []  # never a hang or a dropped request
                assert set(producers.statuses) == {202, 503}, producers.statuses
                stored = await stored_once(url, workspace.id, producers.sent)
                assert len(stored) == 3 * 40 * 10
                # The subscriber resumed where it was: every event, in ingest order, once.
                got = await edges_until(client, op, set(stored), within=60)
                assert ids_of(got) == stored
            await wait_until(lambda: set(stored) <= delivered(receiver, secret), within=60)
    finally:
        await stop_service(running)
