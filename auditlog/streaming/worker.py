"""Stream workers: lease destinations, deliver each in its own task, share the work.

Policy:
- Every second a worker records its heartbeat, counts the live workers and
  the destinations that need one, and holds its fair share:
  ceil(destinations / live workers). It claims free or expired leases
  (`FOR UPDATE SKIP LOCKED`) when under its share and hands back the extra
  ones, after their current send, when over it.
- A lease lasts `lease_seconds` and is renewed on every delivery round; a
  worker that dies stops renewing and its destinations are taken over once
  the lease expired. A worker that loses a lease stops delivering it at once
  (every write is fenced by the lease), so a destination is never sent by
  two workers at the same time.
- Each destination has its own task: one that hangs or fails never slows another.
- The database down: balancing is retried every second (logged once per
  outage); a lease that could not be handed back is handed back later, since
  this worker never claims one it held itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import asyncpg

from auditlog.aio import cancel_and_wait
from auditlog.config import Settings
from auditlog.storage import streams as store
from auditlog.storage.database import DATABASE_UNAVAILABLE
from auditlog.streaming.bus import LiveBus
from auditlog.streaming.credentials import CredentialBox
from auditlog.streaming.delivery import DeliveryOptions, DestinationDelivery, RecordServiceEvent
from auditlog.streaming.doorbell import WakeEvents
from auditlog.streaming.netguard import NetworkPolicy

log = logging.getLogger(__name__)

BALANCE_SECONDS = 1.0
MAX_DESTINATIONS_PER_WORKER = 500


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class StreamWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: LiveBus | None,
        settings: Settings,
        *,
        record: RecordServiceEvent,
        options: DeliveryOptions | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.pool = pool
        self.record = record
        self.bus = bus
        self.options = options or DeliveryOptions()
        self.worker_id = worker_id or new_worker_id()
        self.box = CredentialBox(settings.secret_key)
        self.policy = NetworkPolicy(settings.allow_private_destinations)
        self.tasks: dict[store.DestinationKey, asyncio.Task[None]] = {}
        self.doorbells = WakeEvents(bus) if bus is not None else None
        self.unreleased: set[store.DestinationKey] = set()  # leases to hand back
        self.database_down = False  # logged once per outage

    async def run(self, stop: asyncio.Event) -> None:
        log.info("stream worker %s started", self.worker_id)
        if self.doorbells is not None:
            self.doorbells.start()
        try:
            while not stop.is_set():
                try:
                    await self.balance()
                    if self.database_down:
                        self.database_down = False
                        log.info("stream worker %s: database available again", self.worker_id)
                except DATABASE_UNAVAILABLE as exc:
                    if not self.database_down:
                        self.database_down = True
                        log.warning(
                            "stream worker %s: database unavailable (%s); retrying",
                            self.worker_id,
                            exc,
                        )
                except Exception:  # a background loop outlives any one failure
                    log.exception("stream worker %s: balancing failed; retrying", self.worker_id)
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=BALANCE_SECONDS)
        finally:
            await self._shutdown()
            if self.doorbells is not None:
                await self.doorbells.stop()
            log.info("stream worker %s stopped", self.worker_id)

    async def balance(self) -> None:
        """One round: reap ended deliveries, beat, then claim or hand back to the fair share."""
        await self._reap()
        async with self.pool.acquire() as conn:
            live = await store.beat(conn, self.worker_id, self.options.lease_seconds)
            total = await store.count_streamable(conn)
            share = min(MAX_DESTINATIONS_PER_WORKER, math.ceil(total / max(live, 1)))
            claimed: list[store.DestinationKey] = []
            if len(self.tasks) < share:
                claimed = await store.claim_destinations(
                    conn, self.worker_id, self.options.lease_seconds, share - len(self.tasks)
                )
        for key in claimed:
            if key not in self.tasks:
                self._start(key)
        for key in list(self.tasks)[share:]:
            await self._stop(key)

    def _start(self, key: store.DestinationKey) -> None:
        delivery = DestinationDelivery(
            self.pool,
            self.doorbells,
            self.box,
            self.policy,
            self.worker_id,
            key,
            self.options,
            self.record,
        )
        self.tasks[key] = asyncio.create_task(delivery.run(), name=f"deliver {key.id}")

    async def _reap(self) -> None:
        for key, task in list(self.tasks.items()):
            if not task.done():
                continue
            del self.tasks[key]
            self.unreleased.add(key)
            if not task.cancelled() and task.exception() is not None:
                log.error(
                    "delivery of destination %s stopped on an error",
                    key.id,
                    exc_info=task.exception(),
                )
        for key in list(self.unreleased):
            if key not in self.tasks:
                await self._release(key)
            self.unreleased.discard(key)

    async def _stop(self, key: store.DestinationKey) -> None:
        task = self.tasks.pop(key)
        with suppress(Exception):
            await cancel_and_wait(task)
        self.unreleased.add(key)
        await self._release(key)
        self.unreleased.discard(key)

    async def _release(self, key: store.DestinationKey) -> None:
        async with self.pool.acquire() as conn:
            await store.release_lease(conn, self.worker_id, key)

    async def _shutdown(self) -> None:
        for key in list(self.tasks):
            with suppress(asyncpg.PostgresError, *DATABASE_UNAVAILABLE):
                await self._stop(key)
        with suppress(asyncpg.PostgresError, *DATABASE_UNAVAILABLE):
            async with self.pool.acquire() as conn:
                await store.remove_worker(conn, self.worker_id)


@asynccontextmanager
async def running_worker(
    pool: asyncpg.Pool,
    bus: LiveBus | None,
    settings: Settings,
    options: DeliveryOptions | None = None,
    *,
    record: RecordServiceEvent,
) -> AsyncIterator[StreamWorker]:
    """A worker running in the background of the current event loop until the block ends."""
    worker = StreamWorker(pool, bus, settings, record=record, options=options)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop), name="stream worker")
    try:
        yield worker
    finally:
        stop.set()
        await task
