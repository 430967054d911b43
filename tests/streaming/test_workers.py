"""Workers sharing destinations: leases, fair shares, and a worker killed mid-batch."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from auditlog.runtime import Services
from auditlog.services import workspaces as workspace_service
from auditlog.services.service_events import ServiceEventWriter
from auditlog.streaming.delivery import DeliveryOptions
from auditlog.streaming.worker import StreamWorker, running_worker
from tests.conftest import (
    SECRET_KEY,
    WorkspaceKeys,
    create_workspace_keys,
    event,
    make_settings,
    start_service,
    stop_service,
)
from tests.streaming.conftest import FAST
from tests.streaming.gql import create_destination, destination
from tests.streaming.receivers import Receiver, ingest, wait_until, webhook_events
from tests.test_live_redis import RedisServer


@pytest.fixture
async def slow_receiver() -> AsyncIterator[Receiver]:
    r = Receiver(delay=0.03)
    await r.start()
    yield r
    await r.stop()


async def lease_owners(services: Services) -> set[str]:
    async with services.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT lease_owner FROM stream_destinations WHERE lease_until > now()"
        )
    return {r["lease_owner"] for r in rows}


async def test_two_workers_share_destinations_and_never_send_one_at_once(
    workspace: WorkspaceKeys, services: Services, slow_receiver: Receiver
) -> None:
    created = [
        await create_destination(workspace, {"webhook": {"url": f"{slow_receiver.url}/d{n}"}})
        for n in range(4)
    ]
    async with AsyncExitStack() as stack:
        for _ in range(2):
            await stack.enter_async_context(
                running_worker(
                    services.pool,
                    services.bus,
                    services.settings,
                    FAST,
                    record=ServiceEventWriter(),
                )
            )

        async def two_owners() -> bool:
            return len(await lease_owners(services)) == 2

        await wait_until(two_owners)
        ids: list[str] = []
        for _ in range(6):
            ids += await ingest(workspace, [event("file.uploaded") for _ in range(50)])
            await asyncio.sleep(0.1)
        for n, dest in enumerate(created):
            await wait_until(
                lambda n=n, dest=dest: (
                    ids[-1]
                    in {
                        e["id"]
                        for e in webhook_events(slow_receiver, dest["webhookSecret"], f"/d{n}")
                    }
                )
            )
        await wait_until(two_owners)  # still shared (a stall may have moved leases meanwhile)
    assert set(slow_receiver.max_in_flight) == {f"/d{n}" for n in range(4)}
    assert max(slow_receiver.max_in_flight.values()) == 1
    for n, dest in enumerate(created):
        got = [
            e["id"]
            for e in webhook_events(slow_receiver, dest["webhookSecret"], f"/d{n}")
            if e["action"] == "file.uploaded"
        ]
        assert got == ids


def start_worker_process(services: Services, tmp: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": services.database_url,
        "AUDITLOG_SECRET_KEY": SECRET_KEY,
        "AUDITLOG_ALLOW_PRIVATE_DESTINATIONS": "1",
        "AUDITLOG_DATA_DIR": str(tmp),
    }
    env.pop("REDIS_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "auditlog.cli", "worker", "--lease-seconds", "3"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_worker_killed_mid_batch_loses_nothing(
    workspace: WorkspaceKeys, services: Services, tmp_path: Path
) -> None:
    receiver = Receiver(delay=1.0)
    await receiver.start()
    first = start_worker_process(services, tmp_path)
    second: subprocess.Popen[bytes] | None = None
    try:
        created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/k"}})
        secret = created["webhookSecret"]
        ids = await ingest(workspace, [event("file.uploaded") for _ in range(3000)])
        await wait_until(lambda: len(receiver.requests) >= 1, within=30)
        await wait_until(lambda: receiver.in_flight.get("/k", 0) == 1, within=10, step=0.01)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = len(webhook_events(receiver, secret))
        assert killed_at < len(ids)
        second = start_worker_process(services, tmp_path)
        await wait_until(
            lambda: ids[-1] in {e["id"] for e in webhook_events(receiver, secret)}, within=60
        )
        got = [e["id"] for e in webhook_events(receiver, secret) if e["action"] == "file.uploaded"]
        assert set(got) == set(ids)
        first_seen = list(dict.fromkeys(got))
        assert first_seen == ids
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)
        await receiver.stop()


async def test_serve_runs_stream_workers_in_the_background(
    services: Services, tmp_path: Path
) -> None:
    receiver = Receiver()
    await receiver.start()
    settings = make_settings(services.database_url, tmp_path)
    running = await start_service(settings, background=True)
    try:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as http:
            ws = await create_workspace_keys(running.services, http)
            created = await create_destination(ws, {"webhook": {"url": receiver.url + "/s"}})
            ids = await ingest(ws, [event("file.uploaded") for _ in range(5)])
            await wait_until(
                lambda: (
                    ids[-1] in {e["id"] for e in webhook_events(receiver, created["webhookSecret"])}
                )
            )
    finally:
        await stop_service(running)
        await receiver.stop()


async def test_leaving_the_enterprise_plan_stops_delivery(
    workspace: WorkspaceKeys, services: Services, receiver: Receiver, worker: StreamWorker
) -> None:
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/plan"}})
    secret = created["webhookSecret"]
    first = await ingest(workspace, [event("file.uploaded")])
    await wait_until(lambda: first[0] in {e["id"] for e in webhook_events(receiver, secret)})
    await workspace_service.set_plan(services.pool, workspace.id, "professional")
    await asyncio.sleep(FAST.poll_seconds * 3)
    later = await ingest(workspace, [event("file.uploaded")])
    await asyncio.sleep(1.5)
    assert later[0] not in {e["id"] for e in webhook_events(receiver, secret)}
    await workspace_service.set_plan(services.pool, workspace.id, "enterprise")
    await wait_until(lambda: later[0] in {e["id"] for e in webhook_events(receiver, secret)})


async def test_credentials_that_cannot_be_decrypted_show_failing(
    workspace: WorkspaceKeys, services: Services, receiver: Receiver, tmp_path: Path
) -> None:
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/key"}})
    other_key = make_settings(services.database_url, tmp_path, secret_key="another-key-" + "9" * 20)
    async with running_worker(
        services.pool, services.bus, other_key, FAST, record=ServiceEventWriter()
    ):

        async def failing() -> bool:
            dest = await destination(workspace, created["destination"]["id"])
            return dest["status"] == "FAILING" and "AUDITLOG_SECRET_KEY" in dest["lastError"]

        await wait_until(failing)
    assert receiver.requests == []


@pytest.mark.redis
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_worker_doorbell_survives_a_redis_restart(
    database_url: str, data_dir: Path, workspace: WorkspaceKeys, receiver: Receiver
) -> None:
    """A worker polling only every 60 s still delivers within seconds, before and
    after its Redis restarts: its doorbell listener reconnects (broadcaster alone
    would stay deaf to every later doorbell)."""
    redis = RedisServer()
    redis.start()
    settings = make_settings(database_url, data_dir, redis_url=redis.url)
    running = await start_service(settings)
    slow_poll = DeliveryOptions(lease_seconds=4, poll_seconds=60, send_timeout=1.0)
    try:
        services = running.services
        async with (
            httpx.AsyncClient(base_url=running.base_url, timeout=30) as http,
            running_worker(
                services.pool,
                services.bus,
                services.settings,
                slow_poll,
                record=ServiceEventWriter(),
            ) as worker,
        ):
            workspace.http = http
            created = await create_destination(workspace, {"webhook": {"url": receiver.url}})
            secret = created["webhookSecret"]
            assert worker.doorbells is not None
            await wait_until(lambda: worker.tasks, within=10)  # leased and listening
            await asyncio.sleep(1.0)

            def delivered() -> set[str]:
                return {e["id"] for e in webhook_events(receiver, secret)}

            before = await ingest(workspace, [event("file.uploaded")])
            await wait_until(lambda: before[0] in delivered(), within=8)

            connections = worker.doorbells.listener.connections
            redis.stop()
            redis.start()
            await wait_until(lambda: worker.doorbells.listener.connections > connections, 20)
            await asyncio.sleep(0.5)
            after = await ingest(workspace, [event("file.uploaded")])
            await wait_until(lambda: after[0] in delivered(), within=8)
    finally:
        await stop_service(running)
        redis.stop()
