"""The retention purge: expired events removed for good.

Policy, per pass:
1. A partition lying wholly in the past whose every workspace has expired all
   its rows in it is dropped whole: one short transaction takes the parent's
   lock NOWAIT (retried a few times, never queued: a queued ACCESS EXCLUSIVE
   request would stall every ingest and read behind it), checks again under
   that lock, and detaches and drops it; then its workspaces' ledger ids go (in
   short batches). When the lock stays busy the drop, and the ids, wait for the
   next pass.
2. Every other expired event (a workspace sharing its months with workspaces
   that keep theirs) is deleted row by row through auditlog_purge_events, the
   one function allowed past the append-only guard, in batches of BATCH_SIZE,
   each its own short transaction: no long lock, and no long-running writing
   transaction holding back the safe watermark of streams and live tail.
   After each batch the purge rests as long as the batch took (PACE), so it
   never takes more than about half of the database's time from ingest.
Expired means older than the LONGEST retention the workspace had at any time
during the grace window (now - grace .. now), as its append-only plan history
records it; the bound is computed by the database, never passed in. A cut
therefore deletes nothing more until it is `grace_days` old, counted from when
a pass (or the CLI) first saw it; reads hide the events at once all the same. A
workspace under a legal hold at any time during the window loses nothing.
Every drop and every workspace purged is logged with counts, in the log, in
the append-only table retention_purge_log and, in the same transaction, as an
`audit_log.retention.purged` event of each workspace that lost events, with
metadata {"events": N, "occurredBefore": bound}. The integrity tree is never
touched: proofs of the remaining events still verify.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import asyncpg

from auditlog.ingest.enrich import GeoIP
from auditlog.model import format_timestamp
from auditlog.services.ingest import Ingestor
from auditlog.services.service_events import audited
from auditlog.storage import retention as store
from auditlog.storage.retention import PurgeRecord

log = logging.getLogger(__name__)

BATCH_SIZE = 5_000
PACE = 1.0  # rest after each batch, as a multiple of the time the batch took
LOCK_ATTEMPTS = 20
LOCK_TIMEOUT_MS = 200  # the partition itself; the parent is taken NOWAIT


async def _record(
    conn: asyncpg.Connection, record: PurgeRecord, events_by_workspace: dict[str, int]
) -> None:
    """The purge record and each workspace's audit event commit together."""
    # On the owner's connection: no address to look up, nobody to notify (live
    # tails and streams find the events by polling).
    service_events = Ingestor(None, GeoIP(None, quiet=True, country_default=False))
    async with audited(conn, service_events) as audit:
        await store.insert_purge_record(conn, record)
        for workspace_id, count in sorted(events_by_workspace.items()):
            if count:
                await audit.record(
                    workspace_id,
                    "audit_log.retention.purged",
                    metadata={
                        "events": count,
                        "occurredBefore": format_timestamp(record.purged_before),
                    },
                )


@dataclass
class RetentionReport:
    purged: list[PurgeRecord] = field(default_factory=list)
    deferred_partitions: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # under a legal hold: nothing purged

    @property
    def events_deleted(self) -> int:
        return sum(r.events_deleted for r in self.purged)


async def run_once(
    conn: asyncpg.Connection,
    *,
    batch_size: int = BATCH_SIZE,
    grace_days: int,
    keep: frozenset[str] = frozenset(),
) -> RetentionReport:
    """One purge pass on an owner connection (outside any transaction); workspaces in
    `keep` (their sealing failed this pass) lose nothing, nor do partitions holding them."""
    # Every bound of this session follows the grace; changes seen from now on
    # count from now, one committed late under an old stamp included.
    await store.set_retention_grace(conn, grace_days)
    await store.observe_plan_history(conn)
    report = RetentionReport(held=await store.read_held_workspaces(conn))
    for partition in await store.read_partitions(conn):
        if await store.partition_expired(conn, partition.name):
            if keep.intersection(await store.read_partition_workspaces(conn, partition.name)):
                report.deferred_partitions.append(partition.name)
                continue
            await _drop_partition(conn, partition, batch_size, report)
    for workspace in await store.read_limited_workspaces(conn):
        if workspace.id not in keep:
            await _purge_rows(conn, workspace.id, batch_size, report)
    return report


async def _drop_partition(
    conn: asyncpg.Connection,
    partition: store.PartitionRange,
    batch_size: int,
    report: RetentionReport,
) -> None:
    workspaces = await store.read_partition_workspaces(conn, partition.name)
    per_workspace = await store.count_partition_events_by_workspace(conn, partition.name)
    events = sum(per_workspace.values())
    # Drop first, then the ledger ids: a drop put off (the table busy) must not
    # leave events whose ids are gone, or a retried event would be stored twice
    # if retention grew again. Ids left by a crash in between only name events
    # that are gone and expired (ingest refuses those anyway).
    dropped = await _drop_when_free(conn, partition.name)
    ids = 0
    if not dropped:
        report.deferred_partitions.append(partition.name)
        log.warning(
            "retention: partition %s kept for now (busy or no longer expired)", partition.name
        )
    for workspace_id in workspaces if dropped else ():
        while True:
            started = time.perf_counter()
            deleted = await store.purge_event_ids_batch(
                conn, workspace_id, partition.range_to, batch_size
            )
            ids += deleted
            if deleted < batch_size:
                break
            await _rest_after(started)
    record = PurgeRecord(
        "partition",
        workspaces,
        partition.name,
        partition.range_to,
        events if dropped else 0,
        ids,
    )
    if dropped or ids:
        await _record(conn, record, per_workspace if dropped else {})
        report.purged.append(record)
        log.info(
            "retention: dropped partition %s (%d events, %d ids; workspaces %s)",
            partition.name,
            record.events_deleted,
            ids,
            ", ".join(workspaces) or "none",
        )


async def _rest_after(started: float) -> None:
    """Leave the database to ingest for as long as the batch took (PACE times that)."""
    await asyncio.sleep((time.perf_counter() - started) * PACE)


async def _drop_when_free(conn: asyncpg.Connection, partition: str) -> bool:
    for attempt in range(LOCK_ATTEMPTS):
        try:
            return await store.drop_expired_partition(
                conn, partition, lock_timeout_ms=LOCK_TIMEOUT_MS
            )
        except asyncpg.LockNotAvailableError:
            await asyncio.sleep(0.05 * (attempt + 1))
    return False


async def _purge_rows(
    conn: asyncpg.Connection, workspace_id: str, batch_size: int, report: RetentionReport
) -> None:
    bound = await store.read_purge_bound(conn, workspace_id)
    if bound is None:
        return
    events = ids = 0
    while True:
        started = time.perf_counter()
        batch_events, batch_ids = await store.purge_events_batch(
            conn, workspace_id, bound, batch_size
        )
        events += batch_events
        ids += batch_ids
        if batch_events < batch_size:
            break
        await _rest_after(started)
    if events or ids:
        record = PurgeRecord("rows", [workspace_id], None, bound, events, ids)
        await _record(conn, record, {workspace_id: events})
        report.purged.append(record)
        log.info(
            "retention: purged %d events and %d ids of workspace %s older than %s",
            events,
            ids,
            workspace_id,
            bound.isoformat(),
        )
