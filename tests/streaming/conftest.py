"""Fixtures of the streaming tests: receivers, a fast worker, a clean slate."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from moto.server import ThreadedMotoServer

from auditlog.runtime import Services
from auditlog.services.service_events import ServiceEventWriter
from auditlog.storage.database import owner_connection
from auditlog.streaming.delivery import DeliveryOptions
from auditlog.streaming.worker import StreamWorker, running_worker
from tests.conftest import free_port
from tests.streaming.receivers import Receiver

# Short leases and polls so failures and takeovers show within seconds.
FAST = DeliveryOptions(lease_seconds=4, poll_seconds=0.2, send_timeout=1.0)


@pytest.fixture(autouse=True)
async def no_leftover_destinations(services: Services) -> None:
    """Destinations of earlier tests point at receivers that are gone."""
    async with owner_connection(services.database_url) as conn:
        await conn.execute("DELETE FROM stream_destinations")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A receiver that answers 200, started for one test."""
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def worker(services: Services) -> AsyncIterator[StreamWorker]:
    """One stream worker in this process for the test."""
    async with running_worker(
        services.pool, services.bus, services.settings, FAST, record=ServiceEventWriter()
    ) as w:
        yield w


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a loopback port."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
