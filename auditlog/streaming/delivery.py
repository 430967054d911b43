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
- Dead letters: a batch refused for good in a way one event can cause (400, 413,
  422: `Sink.refuses_event`) is split in halves, each sent in turn, down to the
  single events refused; those are set aside on the destination's dead-letter
  list (with an audit_log.stream.dead_lettered event, in the cursor's
  transaction) and the cursor moves past them. Each one costs at most about
  2*log2(batch) more sends. More than `MAX_SET_ASIDE` in one batch, or since the
  destination last acknowledged events, or a full list, is the destination's
  problem: FAILING as any permanent refusal. Queued letters (retryDeadLetters)
  go first in the next round, out of order; delivered ones leave the list.
- Every write is fenced by the lease: a worker that lost it stops. A send that
  waits for the destination to confirm (Splunk's indexer acknowledgement, up to
  `ack_timeout`) renews the lease while it waits and is abandoned if it is lost.
- Format: an OCSF destination gets each selected event's OCSF form
  (auditlog/ocsf.py) in place of the stored payload, whatever the sink;
  checkpoints are sent as they are (they are not events).
- A replay moves the cursor back under a running worker: the cursor advance of
  a batch read before it moves nothing (the epoch fence), and the next round
  reads from the replayed cursor, in order.
- The database down (restarting, unreachable): the round is retried every
  `poll_seconds` from the cursor in the database (a batch sent but not yet
  recorded is sent again: at least once), logged once per outage. A lease that
  expired meanwhile stops the delivery as any lost lease does.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
import orjson

from auditlog.catalog import Category
from auditlog.errors import ConfigError
from auditlog.metrics import count_delivered, count_delivery_failed
from auditlog.ocsf import ocsf_json
from auditlog.storage import dead_letters as letters
from auditlog.storage import streams as store
from auditlog.storage.database import DATABASE_UNAVAILABLE
from auditlog.storage.integrity import CoveringCheckpoint, read_latest_checkpoint_covering
from auditlog.storage.workspaces import read_workspace
from auditlog.streaming.config import MASK, restore_config
from auditlog.streaming.credentials import CredentialBox
from auditlog.streaming.doorbell import WakeEvents
from auditlog.streaming.netguard import NetworkPolicy
from auditlog.streaming.sinks import ACK_TIMEOUT, build_sink
from auditlog.streaming.sinks.base import OutCheckpoint, OutEvent, Sink, SinkError, SinkTarget

log = logging.getLogger(__name__)

ALL_CATEGORIES = frozenset(c.value for c in Category)
BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0
SLOW_RETRY = 300.0
MAX_RETRY_AFTER = 3600.0
FAILING_AFTER = 5
# Refused events set aside at most per batch, and since the destination last
# acknowledged events; beyond either it refuses more than a few poison events.
MAX_SET_ASIDE = 10
MAX_DEAD_LETTERS = 1000  # a destination's list; when full, a refusal shows FAILING
RETRY_BATCH = 500  # queued dead letters read per round


class _Outcome(enum.Enum):
    DONE = "done"  # acknowledged or set aside: go on
    STOPPED = "stopped"  # a failure was recorded, or the lease lost during a send: next round
    LOST = "lost"  # a write found the lease gone: stop delivering


# True: the cursor moved; False: a replay kept it (read again); None: the lease is lost.
Acknowledged = Callable[[int, int], Awaitable[bool | None]]
SetAside = Callable[[int, SinkError], Awaitable[bool | None]]


class RecordServiceEvent(Protocol):
    """Writes one audit_log.* event on `conn`, in its transaction; handed down by whoever
    starts the worker (services.service_events.ServiceEventWriter), since delivery sits
    below the services that own the audit of the audit."""

    async def __call__(
        self,
        conn: asyncpg.Connection,
        workspace_id: str,
        action: str,
        *,
        targets: list[dict[str, Any]],
        metadata: dict[str, Any],
    ) -> None: ...


@dataclass(frozen=True)
class DeliveryOptions:
    lease_seconds: float = 30.0
    poll_seconds: float = 0.5
    send_timeout: float = 10.0
    read_limit: int = 5000
    checkpoint_interval: float = 60.0  # at least this long between two checkpoints sent
    ack_timeout: float = ACK_TIMEOUT  # how long a sink waits for an indexer acknowledgement

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


def _out(event: store.StreamEvent, ocsf: bool = False) -> OutEvent:
    payload = ocsf_json(event.payload).decode() if ocsf else event.payload
    return OutEvent(event.xid, event.seq, event.occurred_at, payload)


def out_event(event: OutEvent, event_format: str) -> OutEvent:
    """The event in a destination's format (its payload is the stored, NATIVE one)."""
    if event_format != "OCSF":
        return event
    return replace(event, payload=ocsf_json(event.payload).decode())


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
        record: RecordServiceEvent,
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
        self.record = record  # writes audit_log.stream.dead_lettered
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
            SinkTarget(row.workspace_id, row.id),
            config,
            self.policy,
            self.options.send_timeout,
            self.options.ack_timeout,
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
            retention_start = workspace.retention_start(now) if workspace else None
            queued = await letters.read_queued(conn, self.key, RETRY_BATCH, retention_start)
            # The category comes as a column: no payload is parsed to filter.
            events = await store.read_stream_events(
                conn,
                row.workspace_id,
                after=(row.cursor_xid, row.cursor_seq),
                limit=self.options.read_limit,
                retention_start=retention_start,
            )
        if queued:
            return await self._retry_dead_letters(row, queued)
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
        """One send (of a batch or a checkpoint) within the deadline, the lease kept
        meanwhile; False when it failed (the failure recorded for the backoff) or the
        lease was lost (the next round stops)."""
        result = await self._attempt(send)
        if isinstance(result, SinkError):
            await self._failed(row, result)
            return False
        return result

    async def _attempt(self, send: Awaitable[int | None]) -> bool | SinkError:
        """One send as `_send` makes it: True when acknowledged, False when the lease was
        lost meanwhile, the SinkError (not yet recorded) when it failed."""
        assert self.sink is not None
        deadline = self.options.send_deadline + self.sink.confirm_seconds
        sending = asyncio.ensure_future(send)
        keeping = asyncio.create_task(self._keep_lease())
        try:
            done, _ = await asyncio.wait(
                {sending, keeping}, timeout=deadline, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (sending, keeping):
                task.cancel()
            await asyncio.gather(sending, keeping, return_exceptions=True)
        if sending not in done:
            return SinkError("timed out", retryable=True) if keeping not in done else False
        try:
            sending.result()
        except SinkError as exc:
            return exc
        return True

    async def _keep_lease(self) -> None:
        """Renew the lease while a send waits for a confirmation longer than a lease
        lasts; return once it is lost. A quick send is over before the first renewal."""
        while True:
            await asyncio.sleep(self.options.lease_seconds / 3)
            async with self.pool.acquire() as conn:
                renewed = await store.renew_lease(
                    conn, self.worker_id, self.key, self.options.lease_seconds
                )
            if renewed is None:
                log.warning("destination %s: lease lost while waiting; abandoned", self.key.id)
                return

    async def _deliver(self, row: store.DestinationRow, events: list[store.StreamEvent]) -> bool:
        assert self.sink is not None
        sink = self.sink
        wanted = set(row.categories)
        ocsf = row.format == "OCSF"
        selected = (
            [_out(e, ocsf) for e in events]
            if wanted >= ALL_CATEGORIES
            else [_out(e, ocsf) for e in events if e.category in wanted]
        )
        entries = [sink.encode(e) for e in selected]

        async def acknowledged(start: int, end: int) -> bool | None:
            count_delivered(row.workspace_id, row.id, row.kind, end - start)
            return await self._advance(
                row, (selected[end - 1].xid, selected[end - 1].seq), delivered=True
            )

        for start, end in plan_batches(entries, sink):
            set_aside = 0

            async def refused(index: int, error: SinkError) -> bool | None:
                nonlocal set_aside
                if set_aside >= MAX_SET_ASIDE:
                    return None
                set_aside += 1
                return await self._set_aside(row, selected[index], error)

            outcome = await self._send_splitting(
                row, entries, selected, (start, end), acknowledged, refused
            )
            if outcome is not _Outcome.DONE:
                return outcome is _Outcome.STOPPED
        last = events[-1]
        if not selected or (selected[-1].xid, selected[-1].seq) != (last.xid, last.seq):
            return await self._advance(row, (last.xid, last.seq), delivered=False) is not None
        return True

    async def _send_splitting(
        self,
        row: store.DestinationRow,
        entries: list[bytes],
        events: list[OutEvent],
        span: tuple[int, int],
        acknowledged: Acknowledged,
        refused: SetAside,
    ) -> _Outcome:
        """Send events[start:end]; refused for good in a way one event can cause, send
        each half in turn, down to the single events refused, which `refused` sets aside
        (None: it will not, and the refusal is recorded as the destination's failure)."""
        assert self.sink is not None
        sink = self.sink
        start, end = span
        result = await self._attempt(sink.send(entries[start:end], events[start:end]))
        if result is True:
            moved = await acknowledged(start, end)
            if moved is None:
                return _Outcome.LOST
            # Replayed meanwhile: this round ends, the next reads from the replayed cursor.
            return _Outcome.DONE if moved else _Outcome.STOPPED
        if result is False:
            return _Outcome.STOPPED
        if not sink.refuses_event(result):
            await self._failed(row, result)
            return _Outcome.STOPPED
        if end - start > 1:
            # Refused sends do not move the cursor, which would extend the lease.
            async with self.pool.acquire() as conn:
                if (
                    await store.renew_lease(
                        conn, self.worker_id, self.key, self.options.lease_seconds
                    )
                    is None
                ):
                    return _Outcome.LOST
            middle = (start + end) // 2
            for half in ((start, middle), (middle, end)):
                outcome = await self._send_splitting(
                    row, entries, events, half, acknowledged, refused
                )
                if outcome is not _Outcome.DONE:
                    return outcome
            return _Outcome.DONE
        recorded = await refused(start, result)
        if recorded is None:
            limit = f"more events refused than are set aside (dead letters): {result}"
            await self._failed(
                row, SinkError(limit, retryable=False, status_code=result.status_code)
            )
            return _Outcome.STOPPED
        return _Outcome.DONE if recorded else _Outcome.LOST

    async def _set_aside(
        self, row: store.DestinationRow, event: OutEvent, error: SinkError
    ) -> bool | None:
        """Put one refused event on the dead-letter list and move the cursor past it, with
        its audit event, in one transaction; None when the list or the refusals in a row
        are at their limit (the destination's problem), False when the lease is lost."""
        message = scrub(str(error), self.sink.secret_values() if self.sink else [])
        event_id = uuid.UUID(orjson.loads(event.payload)["id"])
        async with self.pool.acquire() as conn, conn.transaction():
            total, in_a_row = await letters.count_dead_letters(conn, self.key)
            if total >= MAX_DEAD_LETTERS or in_a_row >= MAX_SET_ASIDE:
                return None
            moved = await store.record_delivery(
                conn,
                self.worker_id,
                self.key,
                row.generation,
                (event.xid, event.seq),
                False,
                self.options.lease_seconds,
                row.cursor_epoch,
            )
            if moved is None:
                return False
            if not moved:
                # Replayed meanwhile: the replay sends this event again (and sets it
                # aside then, if it is refused again); nothing to keep now.
                return True
            letter = letters.NewDeadLetter(
                event_id, event.xid, event.seq, event.occurred_at, error.status_code, message
            )
            await letters.set_aside(conn, self.key, letter)
            await self._audit_dead_letter(conn, row, event_id, error, retried=False)
        log.warning("destination %s: event %s set aside: %s", row.id, event_id, message)
        return True

    async def _audit_dead_letter(
        self,
        conn: asyncpg.Connection,
        row: store.DestinationRow,
        event_id: uuid.UUID,
        error: SinkError,
        *,
        retried: bool,
    ) -> None:
        # The receiver's answer stays on the list (owners and admins): it may quote the
        # event or the receiver's internals, which every reader of the log would see.
        await self.record(
            conn,
            row.workspace_id,
            "audit_log.stream.dead_lettered",
            targets=[{"type": "streaming_destination", "id": str(row.id), "name": row.name}],
            metadata={
                "kind": row.kind,
                "eventId": str(event_id),
                "statusCode": error.status_code,
                "retried": retried,
            },
        )

    async def _retry_dead_letters(
        self, row: store.DestinationRow, queued: list[letters.QueuedLetter]
    ) -> bool:
        """Send queued dead letters again (split like any batch): delivered ones leave the
        list, refused ones stay, no longer queued; the cursor does not move."""
        assert self.sink is not None
        sink = self.sink
        wanted = set(row.categories)
        # Purged under the retention, or out of the destination's categories since.
        gone = [q.event_id for q in queued if q.payload is None or q.category not in wanted]
        if gone:
            async with self.pool.acquire() as conn:
                if not await letters.remove(conn, self.worker_id, self.key, gone):
                    return False
        sendable = [q for q in queued if q.payload is not None and q.category in wanted]
        selected = [OutEvent(q.xid, q.seq, q.occurred_at, q.payload or "") for q in sendable]
        entries = [sink.encode(e) for e in selected]

        async def acknowledged(start: int, end: int) -> bool:
            ids = [q.event_id for q in sendable[start:end]]
            async with self.pool.acquire() as conn:
                return await letters.remove(conn, self.worker_id, self.key, ids)

        for start, end in plan_batches(entries, sink):
            set_aside = 0

            async def refused(index: int, error: SinkError) -> bool | None:
                nonlocal set_aside
                if set_aside >= MAX_SET_ASIDE:
                    return None
                set_aside += 1
                event_id = sendable[index].event_id
                message = scrub(str(error), sink.secret_values())
                async with self.pool.acquire() as conn, conn.transaction():
                    kept = await letters.refused_again(
                        conn, self.worker_id, self.key, event_id, error.status_code, message
                    )
                    if kept:
                        await self._audit_dead_letter(conn, row, event_id, error, retried=True)
                return kept

            outcome = await self._send_splitting(
                row, entries, selected, (start, end), acknowledged, refused
            )
            if outcome is not _Outcome.DONE:
                return outcome is _Outcome.STOPPED
        return True

    async def _deliver_checkpoint(
        self, row: store.DestinationRow, checkpoint: OutCheckpoint
    ) -> bool:
        assert self.sink is not None
        sink = self.sink
        entry = sink.encode_checkpoint(checkpoint)
        if not await self._send(row, sink.send_checkpoint(entry, checkpoint)):
            return True
        count_delivered(row.workspace_id, row.id, row.kind, 0)
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
    ) -> bool | None:
        """True: moved; False: a replay since `row` was read kept it; None: lease lost."""
        async with self.pool.acquire() as conn:
            return await store.record_delivery(
                conn,
                self.worker_id,
                self.key,
                row.generation,
                cursor,
                delivered,
                self.options.lease_seconds,
                row.cursor_epoch,
            )

    async def _failed(self, row: store.DestinationRow, error: SinkError) -> None:
        message = scrub(str(error), self.sink.secret_values() if self.sink else [])
        count_delivery_failed(row.workspace_id, row.id, row.kind)
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
