"""The live tail: one reader per workspace per process, fanned out to bounded queues.

Policy:
- A `WorkspaceTail` reads its workspace's new events from PostgreSQL in ingest
  order, below the safe watermark, when the bus rings (doorbell) and at least
  every `poll_interval` seconds, which covers lost notifications, Redis restarts
  and transactions that commit out of order. Each distinct filter is evaluated
  once per event; a matching event is handed to each subscriber's queue, as one
  `Delivery` per sharing group, so identical subscriptions share its rendering.
- A subscriber's queue holds at most `queue_size` deliveries. When it is full
  the subscriber is switched to catch-up: it gets no more pushes, drains its
  queue, reads from the database after the last event it was given until it
  reaches the tail, and goes live again. Memory never grows with its lag.
- A subscriber with a cursor starts in catch-up from that cursor: replay from
  the database, then live, with no gap and no duplicate (positions only grow).
- Retention: events older than the workspace's retention are never delivered.
- The tail stops when its last subscriber leaves; leaving always cleans up.
- Read replicas: a catch-up reads from a standby only when that standby has
  replayed past its target; the tail's own reads stay on the primary.
- The database down (restarting, unreachable): reads are retried every poll,
  positions move only after a read, so subscribers resume where they were,
  with no gap; the outage is logged once per tail, not once per poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from auditlog.aio import cancel_and_wait
from auditlog.config import Settings
from auditlog.metrics import count_live_deliveries
from auditlog.model import EventFilter, WorkspaceRow
from auditlog.storage.database import DATABASE_UNAVAILABLE
from auditlog.storage.events import read_safe_watermark
from auditlog.storage.live import LiveEvent, Position, read_live_events
from auditlog.storage.replicas import acquire_fenced
from auditlog.storage.workspaces import read_workspace
from auditlog.streaming.bus import LiveBus, channel_for
from auditlog.streaming.doorbell import doorbells_of
from auditlog.streaming.matcher import EventMatcher, filter_key

log = logging.getLogger(__name__)

READ_BATCH = 500
RETENTION_REFRESH_SECONDS = 60.0


class TailEvent:
    """One event read by a tail; `rendered` is filled once by the API layer."""

    __slots__ = ("event", "rendered")

    def __init__(self, event: LiveEvent) -> None:
        self.event = event
        self.rendered: Any = None


class Delivery:
    """One event for one sharing group; `shared` memoizes the group's execution."""

    __slots__ = ("item", "shared")

    def __init__(self, item: TailEvent) -> None:
        self.item = item
        self.shared: Any = None


@dataclass(eq=False)
class Subscriber:
    matcher: EventMatcher
    filter_key: Hashable
    group: Hashable
    position: Position
    live: bool
    queue: deque[Delivery] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    catch_ups: int = 0


class WorkspaceTail:
    def __init__(self, hub: LiveHub, workspace_id: str) -> None:
        self.hub = hub
        self.workspace_id = workspace_id
        self.position: Position = (0, 0)
        self.subscribers: set[Subscriber] = set()
        self.doorbell = asyncio.Event()
        self.ready = asyncio.Event()
        self._workspace: WorkspaceRow | None = None
        self._workspace_read_at = 0.0
        self.task: asyncio.Task[None] | None = None
        self.database_down = False  # logged once per outage

    def read_failed(self, what: str, exc: Exception) -> None:
        """Log a failed read: once per outage when the database is unavailable."""
        if not isinstance(exc, DATABASE_UNAVAILABLE):
            log.error("live tail of %s could not %s", self.workspace_id, what, exc_info=exc)
        elif not self.database_down:
            self.database_down = True
            log.warning(
                "live tail of %s could not %s: database unavailable (%s); retrying every %g s",
                self.workspace_id,
                what,
                exc,
                self.hub.poll_interval,
            )

    def read_succeeded(self) -> None:
        if self.database_down:
            self.database_down = False
            log.info("live tail of %s reads the database again", self.workspace_id)

    async def retention_start(self, conn: asyncpg.Connection) -> datetime | None:
        """The oldest occurred_at still deliverable (the plan may change: re-read now and then)."""
        if time.monotonic() - self._workspace_read_at > RETENTION_REFRESH_SECONDS:
            self._workspace = await read_workspace(conn, self.workspace_id)
            self._workspace_read_at = time.monotonic()
        if self._workspace is None:
            return datetime.max.replace(tzinfo=UTC)  # no such workspace: nothing to deliver
        return self._workspace.retention_start(datetime.now(UTC))

    async def run(self) -> None:
        """Start where the log is final now, then read on every doorbell or poll.

        A failed read (database restarting, anything unexpected) is logged and
        retried on the next poll: the position only moves after a fan-out.
        """
        while not self.ready.is_set():
            try:
                async with self.hub.pool.acquire() as conn:
                    self.position = await read_safe_watermark(conn)
                self.ready.set()
                self.read_succeeded()
            except Exception as exc:
                self.read_failed("start", exc)
                await asyncio.sleep(self.hub.poll_interval)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.doorbell.wait(), self.hub.poll_interval)
            self.doorbell.clear()
            try:
                await self._read_new()
                self.read_succeeded()
            except Exception as exc:
                self.read_failed("read", exc)

    async def _read_after(
        self, position: Position, *, upto: Position | None = None
    ) -> tuple[list[LiveEvent], datetime | None]:
        """The next batch of final events after `position`, and the retention it applied.

        With `upto` (a catch-up's target), from a read replica when one has
        replayed past it (the replica's own safe watermark is at or past
        `upto`), so it holds every event up to there; from the primary otherwise.
        """
        primary = self.hub.pool
        replica = primary if upto is None else self.hub.read_pool()

        async def replayed(conn: asyncpg.Connection) -> bool:
            assert upto is not None
            return await read_safe_watermark(conn) >= upto

        async with acquire_fenced(primary, replica, replayed) as conn:
            retention = await self.retention_start(conn)
            rows = await read_live_events(
                conn,
                self.workspace_id,
                after=position,
                limit=READ_BATCH,
                retention_start=retention,
            )
        return rows, retention

    async def _read_new(self) -> None:
        while True:
            rows, retention = await self._read_after(self.position)
            handed = 0
            for event in rows:
                handed += self._fan_out(event, retention)
                self.position = event.position
            count_live_deliveries(handed)
            if len(rows) < READ_BATCH:
                return

    def _fan_out(self, event: LiveEvent, retention: datetime | None) -> int:
        """Queue the event for its subscribers; returns how many got it."""
        position = event.position
        handed = 0
        verdicts: dict[Hashable, bool] = {}
        shared: dict[Hashable, Delivery] = {}
        item: TailEvent | None = None
        limit = self.hub.queue_size
        for sub in self.subscribers:
            if not sub.live or position <= sub.position:
                continue
            verdict = verdicts.get(sub.filter_key)
            if verdict is None:
                verdict = verdicts[sub.filter_key] = sub.matcher.matches(event, retention)
            if not verdict:
                continue
            if len(sub.queue) >= limit:
                sub.live = False  # it will read this event again from the database
                sub.catch_ups += 1
                sub.wakeup.set()
                continue
            delivery = shared.get(sub.group)
            if delivery is None:
                item = item or TailEvent(event)
                delivery = shared[sub.group] = Delivery(item)
            sub.queue.append(delivery)
            sub.position = position
            sub.wakeup.set()
            handed += 1
        return handed

    async def catch_up(self, sub: Subscriber) -> list[Delivery]:
        """The next events for a subscriber behind the tail; goes live when level."""
        target = self.position
        if sub.position >= target:
            sub.live = True  # no await since reading self.position: nothing slipped by
            return []
        rows, retention = await self._read_after(sub.position, upto=target)
        out: list[Delivery] = []
        for event in rows:
            if event.position > target:
                break
            sub.position = event.position
            if sub.matcher.matches(event, retention):
                out.append(Delivery(TailEvent(event)))
        count_live_deliveries(len(out))
        if len(rows) < READ_BATCH or (rows and rows[-1].position > target):
            # Every final event up to the target has been seen (some excluded by retention).
            sub.position = max(sub.position, target)
        return out


class LiveHub:
    """Every live subscription of this process, grouped by workspace."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: LiveBus,
        *,
        poll_interval: float = 1.0,
        queue_size: int = 256,
        sharing: bool = True,
        read_pool: Callable[[], asyncpg.Pool] | None = None,
    ) -> None:
        self.pool = pool
        # Catch-ups (subscription backfill) read from a replica when one has
        # replayed far enough (WorkspaceTail._read_after); the tail itself reads
        # the primary, so live events are never later than the replication delay.
        self.read_pool = read_pool or (lambda: pool)
        self.poll_interval = poll_interval
        self.queue_size = queue_size
        self.sharing = sharing
        self.tails: dict[str, WorkspaceTail] = {}
        self.doorbells = doorbells_of(bus)

    async def start(self) -> None:
        self.doorbells.start()

    async def stop(self) -> None:
        for tail in list(self.tails.values()):
            await self._stop_tail(tail)
        await self.doorbells.stop()

    async def _stop_tail(self, tail: WorkspaceTail) -> None:
        self.tails.pop(tail.workspace_id, None)
        self.doorbells.unwatch(channel_for(tail.workspace_id), tail.doorbell.set)
        if tail.task is not None:
            with contextlib.suppress(Exception):
                await cancel_and_wait(tail.task)

    def subscriber_count(self) -> int:
        return sum(len(t.subscribers) for t in self.tails.values())

    async def _tail(self, workspace_id: str) -> WorkspaceTail:
        while True:
            tail = self.tails.get(workspace_id)
            if tail is None:
                tail = self.tails[workspace_id] = WorkspaceTail(self, workspace_id)
                tail.task = asyncio.get_running_loop().create_task(
                    tail.run(), name=f"live-tail:{workspace_id}"
                )
                self.doorbells.watch(channel_for(workspace_id), tail.doorbell.set)
            try:
                await tail.ready.wait()
            except BaseException:
                # The subscriber left before the tail could start (the database may
                # be down): a tail nobody listens to must not poll on forever.
                if not tail.subscribers and self.tails.get(workspace_id) is tail:
                    await self._stop_tail(tail)
                raise
            if self.tails.get(workspace_id) is tail:  # not stopped while we waited
                return tail

    async def subscribe(
        self,
        workspace_id: str,
        flt: EventFilter,
        *,
        after: Position | None,
        group: Hashable,
    ) -> AsyncGenerator[Delivery, None]:
        """Deliveries for one subscription, forever; closing the iterator cleans up."""
        tail = await self._tail(workspace_id)
        sub = Subscriber(
            matcher=EventMatcher(flt),
            filter_key=filter_key(flt),
            group=group if self.sharing else object(),
            position=after if after is not None else tail.position,
            live=after is None,
        )
        tail.subscribers.add(sub)
        try:
            while True:
                if sub.queue:
                    yield sub.queue.popleft()
                elif not sub.live:
                    try:
                        deliveries = await tail.catch_up(sub)
                    except DATABASE_UNAVAILABLE as exc:
                        # Kept open: it resumes from its position once the database is back.
                        tail.read_failed("catch up", exc)
                        await asyncio.sleep(self.poll_interval)
                        continue
                    for delivery in deliveries:
                        yield delivery
                else:
                    sub.wakeup.clear()
                    await sub.wakeup.wait()
        finally:
            tail.subscribers.discard(sub)
            sub.queue.clear()
            if not tail.subscribers and self.tails.get(workspace_id) is tail:
                await self._stop_tail(tail)


@asynccontextmanager
async def open_live_hub(
    pool: asyncpg.Pool,
    bus: LiveBus,
    settings: Settings,
    read_pool: Callable[[], asyncpg.Pool] | None = None,
) -> AsyncIterator[LiveHub]:
    """The process's live tail, for the web app's lifespan."""
    hub = LiveHub(
        pool,
        bus,
        poll_interval=settings.live_poll_seconds,
        sharing=settings.live_sharing,
        read_pool=read_pool,
    )
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()
