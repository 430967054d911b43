"""Doorbells: the process's bus subscriptions, kept alive across Redis restarts.

One listener per process and bus (`doorbells_of`): the live tails, the stream
deliveries and the websocket registry's revocation notices all watch their
channels on it, so a process holds one subscription connection and one heartbeat.

broadcaster does not reconnect: when Redis restarts, its listener task dies
quietly and no message arrives again. This listener owns its own Broadcast,
subscribes one channel per tailed workspace, and proves the connection is alive
with a heartbeat on a channel private to this process. When the heartbeat does
not come back in time (or any bus call fails) it throws the Broadcast away,
opens a new one, subscribes every channel again and rings every doorbell, so
each tail reads what it may have missed from PostgreSQL. Nothing is lost
meanwhile: tails poll the database on their own, the bus only makes them fast.

Every bus call is bounded in time (a frozen Redis accepts connections and never
answers), reconnecting backs off up to `RETRY_DELAY_MAX`, and an outage is
logged once when it starts and once when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from weakref import WeakKeyDictionary

from broadcaster import Broadcast

from auditlog.aio import cancel_and_wait
from auditlog.streaming.bus import LiveBus, channel_for

log = logging.getLogger(__name__)

Ring = Callable[[str], None]
RETRY_DELAY_MAX = 5.0


class BusDown(Exception):
    """The bus stopped answering; the listener reconnects."""


class DoorbellListener:
    def __init__(
        self,
        bus: LiveBus,
        ring: Ring,
        *,
        heartbeat_interval: float = 2.0,
        heartbeat_timeout: float = 15.0,
        retry_delay: float = 0.5,
        connect_timeout: float = 5.0,
        channel: Callable[[str], str] = channel_for,
    ) -> None:
        self.bus = bus
        self._channel = channel  # the bus channel of a watched name
        self._ring = ring
        self._connect_timeout = connect_timeout
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout
        self._retry_delay = retry_delay
        self._workspaces: set[str] = set()
        self._broadcast: Broadcast | None = None
        self._channel_tasks: dict[str, asyncio.Task[None]] = {}
        self._heartbeat_channel = f"auditlog:live-heartbeat:{uuid.uuid4().hex}"
        self._last_beat = 0.0
        self._task: asyncio.Task[None] | None = None
        self.connections = 0  # how many times a bus connection was opened (tests, logs)
        self._down_since: float | None = None

    @property
    def connected(self) -> bool:
        """Whether doorbells arrive now: connected, and the last heartbeat is recent."""
        if self._broadcast is None:
            return False
        return time.monotonic() - self._last_beat <= self._heartbeat_timeout

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="live-doorbells")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    def watch(self, workspace_id: str) -> None:
        self._workspaces.add(workspace_id)
        self._listen(workspace_id)

    def unwatch(self, workspace_id: str) -> None:
        self._workspaces.discard(workspace_id)
        task = self._channel_tasks.pop(workspace_id, None)
        if task is not None:
            task.cancel()  # its own finally unsubscribes the channel

    def _listen(self, workspace_id: str) -> None:
        if self._broadcast is None or workspace_id in self._channel_tasks:
            return
        self._channel_tasks[workspace_id] = asyncio.get_running_loop().create_task(
            self._listen_channel(self._broadcast, workspace_id)
        )

    async def _listen_channel(self, broadcast: Broadcast, workspace_id: str) -> None:
        with contextlib.suppress(Exception):  # a broken bus is noticed by the heartbeat
            async with broadcast.subscribe(self._channel(workspace_id)) as subscriber:
                while True:
                    await subscriber.get()
                    self._ring(workspace_id)

    async def _run(self) -> None:
        delay = self._retry_delay
        while True:
            connections = self.connections
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connections > connections:
                    delay = self._retry_delay  # it was up: try again soon
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning(
                        "live bus unreachable (%s); reconnecting, polling the database meanwhile",
                        f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc),
                    )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_DELAY_MAX)

    async def _session(self) -> None:
        shared = self.bus.broadcast
        broadcast = shared if shared is not None else Broadcast(self.bus.url)
        beats: list[asyncio.Task[None]] = []
        try:
            if shared is None:
                # Bounded: a frozen Redis accepts the connection and never answers.
                await asyncio.wait_for(broadcast.connect(), self._connect_timeout)
            self._broadcast = broadcast
            self.connections += 1
            if self._down_since is not None:
                log.info("live bus reconnected after %.1f s", time.monotonic() - self._down_since)
                self._down_since = None
            beats.append(asyncio.get_running_loop().create_task(self._receive_beats(broadcast)))
            for workspace_id in sorted(self._workspaces):
                self._listen(workspace_id)
                self._ring(workspace_id)  # catch up whatever was rung while we were away
            await self._beat(broadcast)
        finally:
            self._broadcast = None
            tasks = beats + list(self._channel_tasks.values())
            self._channel_tasks.clear()
            await _cancel_all(tasks)  # before closing: their unsubscribe would reconnect
            if shared is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_close(broadcast), self._connect_timeout)

    async def _receive_beats(self, broadcast: Broadcast) -> None:
        with contextlib.suppress(Exception):
            async with broadcast.subscribe(self._heartbeat_channel) as subscriber:
                while True:
                    await subscriber.get()
                    self._last_beat = time.monotonic()

    async def _beat(self, broadcast: Broadcast) -> None:
        self._last_beat = time.monotonic()
        while True:
            await asyncio.wait_for(
                broadcast.publish(self._heartbeat_channel, "beat"), self._heartbeat_timeout
            )
            await asyncio.sleep(self._heartbeat_interval)
            if time.monotonic() - self._last_beat > self._heartbeat_timeout:
                raise BusDown("heartbeat not received")
            if _listener_died(broadcast):
                raise BusDown("subscription connection lost")


class Doorbells:
    """Rings for any number of watchers on one DoorbellListener, by channel.

    Started and stopped by each part that uses it (counted): the listener runs while
    one of them does. After a reconnect every watched channel rings, so each watcher
    reads what it may have missed.
    """

    def __init__(self, bus: LiveBus) -> None:
        self._rings: dict[str, list[Callable[[], None]]] = {}
        self.listener = DoorbellListener(bus, self._ring, channel=lambda name: name)
        self._users = 0

    @property
    def connections(self) -> int:
        return self.listener.connections

    @property
    def connected(self) -> bool:
        return self.listener.connected

    def start(self) -> None:
        self._users += 1
        if self._users == 1:
            self.listener.start()

    async def stop(self) -> None:
        self._users -= 1
        if self._users == 0:
            await self.listener.stop()

    def watch(self, channel: str, ring: Callable[[], None]) -> None:
        rings = self._rings.setdefault(channel, [])
        if not rings:
            self.listener.watch(channel)
        rings.append(ring)

    def unwatch(self, channel: str, ring: Callable[[], None]) -> None:
        rings = self._rings.get(channel)
        if rings is None or ring not in rings:
            return
        rings.remove(ring)
        if not rings:
            del self._rings[channel]
            self.listener.unwatch(channel)

    def _ring(self, channel: str) -> None:
        for ring in list(self._rings.get(channel, ())):
            ring()


_per_bus: WeakKeyDictionary[LiveBus, Doorbells] = WeakKeyDictionary()


def doorbells_of(bus: LiveBus) -> Doorbells:
    """The process's one set of doorbells on `bus`."""
    doorbells = _per_bus.get(bus)
    if doorbells is None:
        doorbells = _per_bus[bus] = Doorbells(bus)
    return doorbells


class WakeEvents:
    """asyncio.Events rung by the process's doorbells, any number per workspace.

    For the stream workers: each delivery task waits on its own Event, and the
    doorbells (which reconnect after a Redis restart and then ring every watched
    workspace) set the Events of the workspace that got events.
    """

    def __init__(self, bus: LiveBus) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}
        self._rings: dict[str, Callable[[], None]] = {}
        self.listener = doorbells_of(bus)

    def start(self) -> None:
        self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()

    @contextlib.contextmanager
    def wake_for(self, workspace_id: str) -> Iterator[asyncio.Event]:
        """An Event set whenever workspace_id rings, until the block ends."""
        event = asyncio.Event()
        events = self._events.setdefault(workspace_id, set())
        if not events:
            ring = self._rings[workspace_id] = self._ringer(workspace_id)
            self.listener.watch(channel_for(workspace_id), ring)
        events.add(event)
        try:
            yield event
        finally:
            events.discard(event)
            if not events:
                del self._events[workspace_id]
                self.listener.unwatch(channel_for(workspace_id), self._rings.pop(workspace_id))

    def _ringer(self, workspace_id: str) -> Callable[[], None]:
        def ring() -> None:
            for event in self._events.get(workspace_id, ()):
                event.set()

        return ring


def _listener_died(broadcast: Broadcast) -> bool:
    """Whether broadcaster's Redis reader ended (it dies quietly with its connection):
    no doorbell can arrive any more, so reconnect now rather than at the heartbeat
    timeout."""
    backend = getattr(broadcast, "_backend", None)
    listener = getattr(backend, "_listener", None)
    return isinstance(listener, asyncio.Task) and listener.done()


async def _close(broadcast: Broadcast) -> None:
    """Disconnect, even from a dead Redis: broadcaster stops at the first error and
    would leave the publishing connection open, so close each piece on its own."""
    with contextlib.suppress(Exception):
        await broadcast.disconnect()
    backend = getattr(broadcast, "_backend", None)
    listener = getattr(backend, "_listener", None)
    if isinstance(listener, asyncio.Task):
        listener.cancel()
        with contextlib.suppress(BaseException):
            await listener  # also retrieves the error it died of
    for name in ("_pubsub", "_conn"):
        closer = getattr(getattr(backend, name, None), "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task
