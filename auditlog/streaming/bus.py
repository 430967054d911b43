"""The notification bus: Redis pub/sub, or in-process (broadcaster's memory backend)
without REDIS_URL.

A message on `workspace:<id>` says only "this workspace has new events". It is
a doorbell: subscribers read the events themselves from PostgreSQL, so a lost
message delays them until their next poll and loses nothing.

A message on `auditlog:api-key-revoked` (the key id) says "a key was revoked":
each process re-checks its open websockets' keys against the database at once,
instead of at its next periodic re-check.

Redis is never a dependency: nothing here connects at start, and publishing is
off the caller's path. `notify` and `announce_revoked` only queue a message
(identical ones coalesce, at most `max_pending` wait); one background task
publishes the queue in one pipelined round trip, bounded by `publish_timeout`.
A message that cannot be published (Redis down, frozen, the queue full) is
dropped and counted, with a warning at most every `WARN_EVERY` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from broadcaster import Broadcast
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from auditlog.aio import cancel_and_wait

log = logging.getLogger(__name__)

REVOCATIONS_CHANNEL = "auditlog:api-key-revoked"
WARN_EVERY = 30.0
RETRY_DELAY_MAX = 2.0  # between publishing attempts while Redis fails


def channel_for(workspace_id: str) -> str:
    return f"workspace:{workspace_id}"


def is_redis_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://"))


class LiveBus:
    def __init__(
        self,
        redis_url: str | None,
        *,
        publish_timeout: float = 1.0,
        max_pending: int = 10_000,
    ) -> None:
        self.url = redis_url or "memory://"
        self.publish_timeout = publish_timeout
        self.max_pending = max_pending
        # In-process fan-out only reaches subscribers of this same Broadcast object;
        # with Redis every listener opens its own connection (doorbell.py).
        self.broadcast: Broadcast | None = None if is_redis_url(self.url) else Broadcast(self.url)
        self._redis: Redis | None = None
        self._pending: dict[tuple[str, str], None] = {}  # ordered, coalesced
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.dropped = 0  # messages given up on (for operators and tests)
        self._dropped_unreported = 0
        self._warned_at = 0.0
        self._failing = False

    @property
    def in_process(self) -> bool:
        return self.broadcast is not None

    async def connect(self) -> None:
        """Start the publisher. Redis is not contacted here: it may be down at start."""
        if self.broadcast is not None:
            await self.broadcast.connect()
        else:
            self._redis = Redis.from_url(
                self.url,
                socket_connect_timeout=self.publish_timeout,
                socket_timeout=self.publish_timeout,
                retry=Retry(NoBackoff(), 0),  # a failed publish is dropped, not retried
            )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="live-bus-publish")

    async def disconnect(self) -> None:
        """Publish what is queued (bounded by the timeout), then close."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
            if self._pending:
                await self._publish_pending()  # e.g. the notice of `auditlog keys revoke`
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._redis.aclose(), self.publish_timeout)
            self._redis = None
        if self.broadcast is not None:
            with contextlib.suppress(Exception):
                await self.broadcast.disconnect()

    async def notify(self, workspace_ids: set[str]) -> None:
        """Queue the doorbells of these workspaces; returns at once."""
        for workspace_id in sorted(workspace_ids):
            self._queue(channel_for(workspace_id), "new")

    async def announce_revoked(self, key_id: str) -> None:
        """Queue the revocation notice of a key; returns at once."""
        self._queue(REVOCATIONS_CHANNEL, key_id)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _queue(self, channel: str, message: str) -> None:
        item = (channel, message)
        if item in self._pending:
            return
        if len(self._pending) >= self.max_pending:
            self._drop(1, "too many notifications waiting")
            return
        self._pending[item] = None
        self._wake.set()

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            if await self._publish_pending():
                failures = 0
                continue
            failures += 1
            # While Redis fails, try again after a pause, not once per ingest request;
            # what is queued meanwhile goes in the next attempt.
            await asyncio.sleep(min(RETRY_DELAY_MAX, 0.1 * 2**failures))
            self._wake.set()

    async def _publish_pending(self) -> bool:
        batch = list(self._pending)
        self._pending.clear()
        if not batch:
            return True
        try:
            await asyncio.wait_for(self._publish(batch), self.publish_timeout)
        except asyncio.CancelledError:
            # Stopped mid-publish (disconnect): queued again, for its final flush.
            for item in batch:
                self._pending.setdefault(item)
            raise
        except Exception as exc:
            self._drop(len(batch), f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))
            return False
        self.published += len(batch)
        if self._failing:
            self._failing = False
            log.info("live bus: publishing again (%d notifications dropped so far)", self.dropped)
        return True

    async def _publish(self, batch: list[tuple[str, str]]) -> None:
        if self.broadcast is not None:
            for channel, message in batch:
                await self.broadcast.publish(channel=channel, message=message)
            return
        assert self._redis is not None
        async with self._redis.pipeline(transaction=False) as pipe:
            for channel, message in batch:
                pipe.publish(channel, message)
            await pipe.execute()

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        self._dropped_unreported += count
        now = time.monotonic()
        if not self._failing or now - self._warned_at >= WARN_EVERY:
            log.warning(
                "live bus: %d notification(s) dropped (%s); %d in all; "
                "subscribers and stream workers poll the database meanwhile",
                self._dropped_unreported,
                why,
                self.dropped,
            )
            self._dropped_unreported = 0
            self._warned_at = now
        self._failing = True
