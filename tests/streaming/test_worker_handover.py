"""Two real `auditlog worker` processes: one killed (SIGKILL) or stopped (SIGTERM) in
the middle of a send; the other takes its destination over, and every event arrives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from auditlog.runtime import Services
from tests.conftest import SECRET_KEY, WorkspaceKeys, event
from tests.streaming.gql import create_destination
from tests.streaming.receivers import (
    Receiver,
    ingest,
    wait_until,
    webhook_events,
    webhook_messages,
)

PATH = "/handover"


def start_worker(services: Services, tmp: Path, lease_seconds: float) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": services.database_url,
        "AUDITLOG_SECRET_KEY": SECRET_KEY,
        "AUDITLOG_ALLOW_PRIVATE_DESTINATIONS": "1",
        "AUDITLOG_DATA_DIR": str(tmp),
    }
    env.pop("REDIS_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "auditlog.cli", "worker", "--lease-seconds", str(lease_seconds)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
async def slow() -> AsyncIterator[Receiver]:
    """Each request takes a second: a send is easily caught in flight."""
    r = Receiver(delay=1.0)
    await r.start()
    yield r
    await r.stop()


async def lease(services: Services) -> tuple[str | None, float | None]:
    """The destination's lease owner and expiry (epoch seconds; same host clock)."""
    async with services.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT lease_owner, extract(epoch FROM lease_until)::float8 AS until"
            " FROM stream_destinations"
        )
    assert row is not None
    return row["lease_owner"], row["until"]


def pid_of(worker_id: str) -> int:
    return int(worker_id.split(":")[-2])  # host:pid:nonce (worker.new_worker_id)


def check_everything_arrived(receiver: Receiver, secret: str, ids: list[str]) -> None:
    """Every event, first seen in order; only the batch in flight arrived twice."""
    got = [e["id"] for e in webhook_events(receiver, secret) if e["action"] == "file.uploaded"]
    assert list(dict.fromkeys(got)) == ids
    counts = Counter(got)
    assert max(counts.values()) <= 2
    twice = [i for i in ids if counts[i] == 2]
    wanted = set(ids)
    batches = [
        [e["id"] for e in data if e["id"] in wanted]
        for kind, data in webhook_messages(receiver, secret, PATH)
        if kind == "audit_log.events"
    ]
    assert not twice or twice in batches, "duplicates beyond the batch in flight"


async def caught_in_flight(workspace: WorkspaceKeys, receiver: Receiver) -> tuple[str, list[str]]:
    """A destination, 3000 events, and a moment when its owner is sending a batch."""
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + PATH}})
    ids = await ingest(workspace, [event("file.uploaded") for _ in range(3000)])
    await wait_until(lambda: len(receiver.requests) >= 1, within=30)
    await wait_until(lambda: receiver.in_flight.get(PATH, 0) == 1, within=10, step=0.01)
    return created["webhookSecret"], ids


async def test_a_worker_killed_mid_send_is_taken_over_once_its_lease_expires(
    workspace: WorkspaceKeys, services: Services, slow: Receiver, tmp_path: Path
) -> None:
    processes = [start_worker(services, tmp_path, lease_seconds=3) for _ in range(2)]
    try:
        secret, ids = await caught_in_flight(workspace, slow)
        owner, _ = await lease(services)
        assert owner is not None
        (victim,) = [p for p in processes if p.pid == pid_of(owner)]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = time.time()
        _, until = await lease(services)
        assert until is not None and until > killed_at  # still held by the dead worker

        async def taken_over() -> bool:
            holder, _ = await lease(services)
            return holder is not None and holder != owner

        await wait_until(taken_over, within=15)
        await wait_until(
            lambda: ids[-1] in {e["id"] for e in webhook_events(slow, secret)}, within=60
        )
        check_everything_arrived(slow, secret, ids)
        assert slow.max_in_flight[PATH] == 1  # the dead worker's request ended long before
        # The survivor sent nothing before the dead worker's lease expired.
        started = [r.at - slow.delay for r in slow.requests]
        resumed = min(s for s in started if s > killed_at)
        assert resumed >= until - 0.05
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)


async def test_a_worker_stopped_mid_send_hands_over_at_once(
    workspace: WorkspaceKeys, services: Services, slow: Receiver, tmp_path: Path
) -> None:
    processes = [start_worker(services, tmp_path, lease_seconds=30) for _ in range(2)]
    try:
        secret, ids = await caught_in_flight(workspace, slow)
        owner, _ = await lease(services)
        assert owner is not None
        (stopping,) = [p for p in processes if p.pid == pid_of(owner)]
        stopping.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()

        async def taken_over() -> bool:
            holder, _ = await lease(services)
            return holder is not None and holder != owner

        # The lease lasts 30 s: only its release explains a takeover within seconds.
        await wait_until(taken_over, within=10, step=0.05)
        assert time.monotonic() - stopped_at < 10
        assert stopping.wait(20) == 0
        await wait_until(
            lambda: ids[-1] in {e["id"] for e in webhook_events(slow, secret)}, within=60
        )
        # The abandoned request may still be answered by the receiver, while the new
        # owner sends: two in flight there, and that batch twice.
        check_everything_arrived(slow, secret, ids)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
