"""Download slots are shared fairly: a workspace whose clients stop reading cannot
stall another workspace's downloads, and a stalled download is dropped after the
idle timeout, giving its slot, connection and snapshot back.

Stalled clients are raw sockets with a tiny receive buffer that read the first
bytes and then nothing: the server's writes block on them for real.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from auditlog.config import Settings
from auditlog.errors import ConfigError
from auditlog.model import EventFilter, ExportRow, Principal
from auditlog.runtime import DownloadSlots, Services
from auditlog.services import exports as export_service
from auditlog.services import integrity as integrity_service
from tests.conftest import (
    RunningService,
    create_workspace_keys,
    event,
    make_settings,
    start_service,
    stop_service,
)
from tests.exports_support import StalledClient, open_stalled

BIG = 6_000  # events of about 1.6 kB: a 2,000-row batch is megabytes, far past any buffer
PADDING = "x" * 1000
IN_TRANSACTION = """SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND state LIKE 'idle in transaction%'"""
END_OF_CHUNKED_BODY = b"\r\n0\r\n\r\n"


@dataclass
class Exports:
    big_workspace: str
    big_file: ExportRow  # NDJSON, one part of BIG rows
    big_json: ExportRow  # JSON, sealed: its proof bundle downloads
    small_workspace: str
    small_file: ExportRow  # NDJSON, 3 rows


@pytest.fixture(scope="module")
async def exports(services: Services, service: RunningService) -> Exports:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=120) as client:
        big = await create_workspace_keys(services, client)
        for start in range(0, BIG, 1000):
            batch = [
                event("file.uploaded", metadata={"n": start + i, "pad": PADDING})
                for i in range(1000)
            ]
            assert (await big.ingest(batch)).status_code == 202
        small = await create_workspace_keys(services, client)
        assert (await small.ingest([event("file.uploaded") for _ in range(3)])).status_code == 202
    async with services.pool.acquire() as conn:
        await integrity_service.seal_until_caught_up(conn, big.id, services.signing_keys.current())

    async def create(workspace_id: str, file_format: str) -> ExportRow:
        principal = Principal(workspace_id=workspace_id, role="admin", key_id="key_test")
        criteria = EventFilter(actions=["file.uploaded"])
        return await export_service.create_export(
            services, principal, workspace_id, criteria, {}, file_format
        )

    return Exports(
        big.id,
        await create(big.id, "NDJSON"),
        await create(big.id, "JSON"),
        small.id,
        await create(small.id, "NDJSON"),
    )


def _file_url(running: RunningService, row: ExportRow) -> str:
    (link,) = export_service.download_links(
        running.services, row, running.base_url, datetime.now(UTC)
    )
    return link.url


def _proof_url(running: RunningService, row: ExportRow) -> str:
    url = export_service.proof_link(running.services, row, running.base_url, datetime.now(UTC))
    assert url is not None
    return url


@pytest.fixture
async def stalled() -> AsyncIterator[list[StalledClient]]:
    """Stalled clients opened by a test, closed (reset) at its end whatever happened."""
    clients: list[StalledClient] = []
    yield clients
    for client in clients:
        client.close()


async def _first_byte_and_rest(url: str) -> tuple[float, bytes]:
    """Seconds until the first body byte of a download, and the whole body."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as http, http.stream("GET", url) as response:
        assert response.status_code == 200
        chunks = response.aiter_raw()
        try:
            first = await asyncio.wait_for(anext(chunks), 10)
        except TimeoutError:
            pytest.fail("no first byte in 10 s: the download never got a slot")
        waited = time.monotonic() - started
        return waited, first + b"".join([chunk async for chunk in chunks])


async def _eventually(owner: asyncpg.Connection, query: str, expected: int) -> int:
    value = -1
    for _ in range(100):
        value = await owner.fetchval(query)
        if value == expected:
            break
        await asyncio.sleep(0.1)
    return int(value)


async def test_stalled_downloads_of_one_workspace_leave_slots_to_another(
    exports: Exports,
    database_url: str,
    data_dir: Path,
    owner: asyncpg.Connection,
    stalled: list[StalledClient],
) -> None:
    """Three downloads of one workspace whose clients stopped reading: the process has
    three slots, but a workspace gets at most two, so another workspace's download
    starts at once. The idle timeout is long here: it plays no part."""
    settings = make_settings(database_url, data_dir, download_idle_seconds=60)
    running = await start_service(settings)
    try:
        slots = running.services.download_slots
        assert (slots.total, slots.per_workspace) == (3, 2)
        url = _file_url(running, exports.big_file)
        stalled += await asyncio.gather(*(open_stalled(url) for _ in range(3)))
        assert [c.status for c in stalled] == [200] * 3
        # Each download streaming holds its part's transaction open (and blocks on write).
        holding = await _eventually(owner, IN_TRANSACTION, 2)

        waited, body = await _first_byte_and_rest(_file_url(running, exports.small_file))
        assert waited < 5, f"another workspace's first byte took {waited:.1f} s"
        assert len(body.splitlines()) == 3
        assert holding == 2
        # The stalled ones still stall: two hold a slot, the third waits for its workspace's.
        assert await owner.fetchval(IN_TRANSACTION) == 2
        assert sorted(bool(c.body) for c in stalled) == [False, True, True]
    finally:
        for client in stalled:
            client.close()
        stalled.clear()
        await stop_service(running)


async def test_a_stalled_download_is_dropped_after_the_idle_time(
    exports: Exports,
    database_url: str,
    data_dir: Path,
    owner: asyncpg.Connection,
    stalled: list[StalledClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A file and a proof bundle of one workspace stall (its two slots); a third
    download of it waits, and gets its first bytes once the idle timeout has dropped
    a stalled one: that one's slot, connection and snapshot are given back, it is
    logged, and its client sees a cut transfer, never a complete-looking file."""
    idle = 2.0
    running = await start_service(make_settings(database_url, data_dir, download_idle_seconds=idle))
    counters = running.services.export_counters
    try:
        caplog.set_level(logging.WARNING, logger="auditlog.endpoints.exports")
        stalled += await asyncio.gather(
            open_stalled(_file_url(running, exports.big_file)),
            open_stalled(_proof_url(running, exports.big_json)),
        )
        assert [c.status for c in stalled] == [200, 200]
        assert all(c.body for c in stalled)
        assert running.services.download_slots.active(exports.big_workspace) == 2

        waited, body = await _first_byte_and_rest(_file_url(running, exports.big_file))
        assert counters.downloads_aborted_idle >= 1  # it got its slot from a dropped download
        assert waited < idle + 5
        assert len(body.splitlines()) == BIG  # whole, though it came after a drop

        for _ in range(100):
            if counters.downloads_aborted_idle == 2:
                break
            await asyncio.sleep(0.1)
        assert counters.downloads_aborted_idle == 2
        assert running.services.download_slots.active() == 0
        assert await _eventually(owner, IN_TRANSACTION, 0) == 0
        for client in stalled:
            async with asyncio.timeout(10):
                received = await client.read_to_end()  # up to the server's close
            assert not received.endswith(END_OF_CHUNKED_BODY), "a cut download looked complete"
        messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        aborted = [m for m in messages if m.startswith("export download aborted")]
        assert len(aborted) == 2, messages
        assert any(f"part 1 of export {exports.big_file.id}" in m for m in aborted)
        assert any(f"proof bundle of export {exports.big_json.id}" in m for m in aborted)
        assert all(f"no data for {idle:g} s" in m for m in aborted)
    finally:
        for client in stalled:
            client.close()
        stalled.clear()
        await stop_service(running)


async def test_download_slots_cap_each_workspace_below_the_total() -> None:
    slots = DownloadSlots(total=3, per_workspace=5)
    assert slots.per_workspace == 2  # one fewer than the total: never every slot
    assert DownloadSlots(total=1, per_workspace=2).per_workspace == 1
    async with slots.slot("a"), slots.slot("a"):
        third = asyncio.ensure_future(slots.slot("a").__aenter__())
        await asyncio.sleep(0.05)
        assert not third.done()  # the workspace's share is taken
        async with slots.slot("b"):  # another workspace's is not
            assert (slots.active("a"), slots.active("b"), slots.active()) == (2, 1, 3)
        third.cancel()
        with pytest.raises(asyncio.CancelledError):
            await third
    assert slots.active() == 0


def test_download_settings_are_read_and_checked() -> None:
    defaults = Settings.from_env({})
    assert (defaults.download_idle_seconds, defaults.downloads_per_workspace) == (30.0, 2)
    env = {"AUDITLOG_DOWNLOAD_IDLE_SECONDS": "2.5", "AUDITLOG_DOWNLOADS_PER_WORKSPACE": "4"}
    settings = Settings.from_env(env)
    assert (settings.download_idle_seconds, settings.downloads_per_workspace) == (2.5, 4)
    for name, bad in (
        ("AUDITLOG_DOWNLOAD_IDLE_SECONDS", "0"),
        ("AUDITLOG_DOWNLOAD_IDLE_SECONDS", "soon"),
        ("AUDITLOG_DOWNLOADS_PER_WORKSPACE", "0"),
        ("AUDITLOG_DOWNLOADS_PER_WORKSPACE", "-1"),
    ):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: bad})
