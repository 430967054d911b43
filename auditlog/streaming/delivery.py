"""Delivery of one destination: the one batching and retry mechanism every sink shares.

Policy:
- Read the workspace's events after the destination's cursor, in ingest order,
  only below the safe watermark (docs/architecture.md, the safe watermark); keep those of the
  destination's categories; cut them into batches the sink accepts (events
  and bytes); send each; move the cursor only after the sink acknowledged.
  At least once: a crash between acknowledgement and cursor update resends.
- New events are noticed by the worker's doorbell listener (the same one the
  live tail uses: it reconnects after a Redis restart and then rings every
  workspace) and, whatever happens to it, by polling every `poll_seconds`.
- A retryable failure (network, timeout, 408/425/429, 5xx) backs off
  exponentially with full jitter, at least as long as `Retry-After` says; after
  `FAILING_AFTER` in a row the destination shows FAILING. A permanent one
  (other 4xx, a refused address) shows FAILING at once and retries slowly.
  The retry time lives in the database, so any worker continues the backoff;
  an update or a resume clears it and bumps the generation, which this loop
  notices within one poll and retries at once.
- Checkpoints: when the workspace's latest signed checkpoint is larger than
  the destination's checkpoint cursor, at least `checkpoint_interval` after
  the last one was acknowledged (or before any was), and once the events it
  covers are delivered (the event cursor passed its last leaf, or nothing
  final is left to read), that checkpoint alone goes through the sink, with
  the same retries and failure state as a batch, whatever the categories.
  Its cursor and time move only after the sink acknowledged, like the events'.
- Every write is fenced by the lease: a worker that lost it stops.
- The database down (restarting, unreachable): the round is retried every
  `poll_seconds` from the cursor in the database (a batch sent but not yet
  recorded is sent again: at least once), logged once per outage. A lease that
  expired meanwhile stops the delivery as any lost lease does.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from auditlog.catalog import Category
from auditlog.errors import ConfigError
from auditlog.storage import streams as store
from auditlog.storage.database import DATABASE_UNAVAILABLE
from auditlog.storage.integrity import CoveringCheckpoint, read_latest_checkpoint_covering
from auditlog.storage.live import LiveEvent, read_live_events
from auditlog.storage.workspaces import read_workspace
from auditlog.streaming.config import MASK, restore_config
from auditlog.streaming.credentials import CredentialBox
from auditlog.streaming.doorbell import WakeEvents
from auditlog.streaming.netguard import NetworkPolicy
from auditlog.streaming.sinks import build_sink
from auditlog.streaming.sinks.base import OutCheckpoint, OutEvent, Sink, SinkError, SinkTarget

log = logging.getLogger(__name__)

ALL_CATEGORIES = frozenset(c.value for c in Category)
BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0
SLOW_RETRY = 300.0
MAX_RETRY_AFTER = 3600.0
FAILING_AFTER = 5


@dataclass(frozen=True)
class DeliveryOptions:
    lease_seconds: float = 30.0
    poll_seconds: float = 0.5
    send_timeout: float = 10.0
    read_limit: int = 5000
    checkpoint_interval: float = 60.0  # at least this long between two checkpoints sent

    @property
    def send_deadline(self) -> float:
        """A send is abandoned well before the lease it started under can expire."""
        return min(self.send_timeout + 2.0, self.lease_seconds / 2)


def backoff_delay(attempts: int, retry_after: float | None, rng: random.Random) -> float:
    """Seconds before the next attempt after `attempts` failures in a row."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(attempts, 20))
    delay = rng.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def plan_batches(entries: list[bytes], sink: Sink) -> list[tuple[int, int]]:
    """[start, end) slices of `entries` within the sink's event and byte limits."""
    batches: list[tuple[int, int]] = []
    start, size = 0, 0
    for index, entry in enumerate(entries):
        cost = len(entry) + 1
        if index > start and (index - start >= sink.max_events or size + cost > sink.max_bytes):
            batches.append((start, index))
            start, size = index, 0
        size += cost
    if start < len(entries):
        batches.append((start, len(entries)))
    return batches


def scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text[:300]


def _out(event: LiveEvent) -> OutEvent:
    return OutEvent(event.xid, event.seq, event.occurred_at, event.payload)


def _out_checkpoint(covering: CoveringCheckpoint) -> OutCheckpoint:
    cp = covering.checkpoint
    return OutCheckpoint(cp.tree_size, cp.root_hash, cp.signed_note, cp.sealed_at)


class DestinationDelivery:
    """Delivers one leased destination until the lease is lost, it is paused or deleted."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        doorbells: WakeEvents | None,
        box: CredentialBox,
        policy: NetworkPolicy,
        worker_id: str,
        key: store.DestinationKey,
        options: DeliveryOptions,
    ) -> None:
        self.pool = pool
        self.doorbells = doorbells
        self.box = box
        self.policy = policy
        self.worker_id = worker_id
        self.key = key
        self.options = options
        self.sink: Sink | None = None
        self.generation = 0
        self.rng = random.Random()
        self.database_down = False  # logged once per outage

    async def run(self) -> None:
        try:
            with self._doorbell() as wake:
                while await self._step_retrying(wake):
                    pass
        finally:
            if self.sink is not None:
                await self.sink.aclose()

    @contextmanager
    def _doorbell(self) -> Iterator[asyncio.Event]:
        """Set when the destination's workspace gets events (without a bus: never,
        and the delivery polls)."""
        if self.doorbells is None:
            yield asyncio.Event()
            return
        with self.doorbells.wake_for(self.key.workspace_id) as wake:
            yield wake

    async def _wait(self, wake: asyncio.Event, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=max(seconds, 0.0))
        wake.clear()

    async def _ensure_sink(self, row: store.DestinationRow) -> bool:
        """A sink for the row's generation; False (failure recorded) when it cannot be built."""
        if self.sink is not None and row.generation == self.generation:
            return True
        if self.sink is not None:
            await self.sink.aclose()
            self.sink = None
        try:
            config = restore_config(row.kind, row.config, self.box.open(row.secrets))
        except ConfigError as exc:
            await self._failed(row, SinkError(str(exc), retryable=False))
            return False
        self.sink = build_sink(
            SinkTarget(row.workspace_id, row.id), config, self.policy, self.options.send_timeout
        )
        self.generation = row.generation
        return True

    async def _step_retrying(self, wake: asyncio.Event) -> bool:
        """One round, or a pause when the database is unavailable."""
        try:
            proceed = await self._step(wake)
        except DATABASE_UNAVAILABLE as exc:
            if not self.database_down:
                self.database_down = True
                log.warning(
                    "destination %s: database unavailable (%s); retrying every %g s",
                    self.key.id,
                    exc,
                    self.options.poll_seconds,
                )
            await asyncio.sleep(self.options.poll_seconds)
            return True
        if self.database_down:
            self.database_down = False
            log.info("destination %s: database available again", self.key.id)
        return proceed

    async def _step(self, wake: asyncio.Event) -> bool:
        """One round; False when this worker must stop delivering the destination."""
        async with self.pool.acquire() as conn:
            row = await store.renew_lease(
                conn, self.worker_id, self.key, self.options.lease_seconds
            )
        if row is None or row.status == "PAUSED":
            return False
        now = datetime.now(UTC)
        if row.retry_at is not None and row.retry_at > now:
            wait = (row.retry_at - now).total_seconds()
            await self._wait(wake, min(wait, self.options.poll_seconds))
            return True
        if not await self._ensure_sink(row):
            await self._wait(wake, self.options.poll_seconds)
            return True
        async with self.pool.acquire() as conn:
            checkpoint = (
                await read_latest_checkpoint_covering(conn, row.workspace_id, row.checkpoint_size)
                if self._checkpoint_interval_passed(row, now)
                else None
            )
            # Never an event older than the retention as it is now (docs/retention.md).
            workspace = await read_workspace(conn, row.workspace_id)
            # The category comes as a column: no payload is parsed to filter.
            events = await read_live_events(
                conn,
                row.workspace_id,
                after=(row.cursor_xid, row.cursor_seq),
                limit=self.options.read_limit,
                retention_start=workspace.retention_start(now) if workspace else None,
            )
        # A checkpoint follows the events it covers: the cursor passed its last leaf,
        # or nothing final is left to read (what is left expired).
        if checkpoint is not None and (
            (row.cursor_xid, row.cursor_seq) >= (checkpoint.last_xid, checkpoint.last_seq)
            or not events
        ):
            return await self._deliver_checkpoint(row, _out_checkpoint(checkpoint))
        if not events:
            await self._wait(wake, self.options.poll_seconds)
            return True
        return await self._deliver(row, events)

    def _checkpoint_interval_passed(self, row: store.DestinationRow, now: datetime) -> bool:
        last = row.checkpoint_delivered_at
        return last is None or (now - last).total_seconds() >= self.options.checkpoint_interval

    async def _send(self, row: store.DestinationRow, send: Awaitable[int | None]) -> bool:
        """One send (of a batch or a checkpoint) within the deadline; False when it
        failed, the failure recorded for the backoff."""
        try:
            await asyncio.wait_for(send, timeout=self.options.send_deadline)
        except TimeoutError:
            await self._failed(row, SinkError("timed out", retryable=True))
            return False
        except SinkError as exc:
            await self._failed(row, exc)
            return False
        return True

    async def _deliver(self, row: store.DestinationRow, events: list[LiveEvent]) -> bool:
        assert self.sink is not None
        sink = self.sink
        wanted = set(row.categories)
        selected = (
            [_out(e) for e in events]
            if wanted >= ALL_CATEGORIES
            else [_out(e) for e in events if e.category in wanted]
        )
        entries = [sink.encode(e) for e in selected]
        for start, end in plan_batches(entries, sink):
            batch = selected[start:end]
            if not await self._send(row, sink.send(entries[start:end], batch)):
                return True
            if not await self._advance(row, (batch[-1].xid, batch[-1].seq), delivered=True):
                return False
        last = events[-1]
        if not selected or (selected[-1].xid, selected[-1].seq) != (last.xid, last.seq):
            return await self._advance(row, (last.xid, last.seq), delivered=False)
        return True

    async def _deliver_checkpoint(
        self, row: store.DestinationRow, checkpoint: OutCheckpoint
    ) -> bool:
        assert self.sink is not None
        sink = self.sink
        entry = sink.encode_checkpoint(checkpoint)
        if not await self._send(row, sink.send_checkpoint(entry, checkpoint)):
            return True
        async with self.pool.acquire() as conn:
            return await store.record_checkpoint_delivery(
                conn,
                self.worker_id,
                self.key,
                row.generation,
                checkpoint.tree_size,
                self.options.lease_seconds,
            )

    async def _advance(
        self, row: store.DestinationRow, cursor: tuple[int, int], *, delivered: bool
    ) -> bool:
        async with self.pool.acquire() as conn:
            return await store.record_delivery(
                conn,
                self.worker_id,
                self.key,
                row.generation,
                cursor,
                delivered,
                self.options.lease_seconds,
            )

    async def _failed(self, row: store.DestinationRow, error: SinkError) -> None:
        message = scrub(str(error), self.sink.secret_values() if self.sink else [])
        if error.retryable:
            delay = backoff_delay(row.attempts, error.retry_after, self.rng)
            failing = row.attempts + 1 >= FAILING_AFTER
        else:
            delay, failing = SLOW_RETRY, True
        log.warning(
            "destination %s (%s) failed: %s; next attempt in %.1fs",
            row.id,
            row.kind,
            message,
            delay,
        )
        async with self.pool.acquire() as conn:
            await store.record_failure(
                conn,
                self.worker_id,
                self.key,
                row.generation,
                error=message,
                failing=failing,
                retry_in=delay,
            )
