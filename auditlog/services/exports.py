"""Creating exports, and the links a caller downloads them with.

Policy: an export is fixed at creation (a snapshot of the log, exact count,
part boundaries) and answered at once as READY; files are produced on download.
The `audit_log.export.created` event and the export row are written in one
transaction: no export exists without its audit event, and no event tells of
an export that was never stored. An export stays downloadable for
EXPORT_TTL; each link is valid for the configured link lifetime (one hour by
default) and never beyond the export's own expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from auditlog.config import Settings
from auditlog.errors import RateLimitedError
from auditlog.exports.links import ExportLinks
from auditlog.exports.slots import DownloadSlots, ExportCounters
from auditlog.model import EventFilter, ExportRow, Principal, uuid7
from auditlog.services.ingest import Ingestor
from auditlog.services.service_events import audited
from auditlog.storage import exports as export_store
from auditlog.storage.replicas import acquire_fenced
from auditlog.storage.workspaces import read_workspace

log = logging.getLogger(__name__)

PART_SIZE = 10_000
EXPORT_TTL = timedelta(days=7)
RATE_WINDOW = timedelta(seconds=60)


class ExportServices(Protocol):
    """What exports need from the process (the runtime's Services has all of it)."""

    @property
    def pool(self) -> asyncpg.Pool: ...

    @property
    def ingestor(self) -> Ingestor: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def export_counters(self) -> ExportCounters: ...

    @property
    def download_slots(self) -> DownloadSlots: ...

    def read_pool(self) -> asyncpg.Pool: ...


@dataclass(frozen=True)
class ExportLink:
    part: int
    row_count: int
    url: str


def is_expired(row: ExportRow, now: datetime) -> bool:
    return now >= row.expires_at


async def create_export(
    services: ExportServices,
    principal: Principal,
    workspace_id: str,
    criteria: EventFilter,
    shown_filter: dict[str, Any],
    file_format: str,
    *,
    event_format: str = "NATIVE",
    part_size: int = PART_SIZE,
) -> ExportRow:
    """Fix the result now and record who exported what; files come on download.

    At most `exports_per_minute` exports per workspace in any 60 seconds. The
    place is reserved before planning, the costly part (a scan of every matching
    row), so a burst of requests runs at most that many scans; a plan that fails
    gives its place back.
    """
    limit = services.settings.exports_per_minute
    now = datetime.now(UTC)
    export_id = uuid7()
    if limit:
        async with services.pool.acquire() as conn:
            taken = await export_store.reserve_export(
                conn, workspace_id, export_id, now, now - RATE_WINDOW, limit
            )
        _check_rate(taken, limit, now)
    try:
        async with services.pool.acquire() as conn:
            workspace = await read_workspace(conn, workspace_id)
            retention_start = workspace.retention_start(now) if workspace else None
            services.export_counters.plans_started += 1
            plan = await export_store.plan_export(
                conn, workspace_id, criteria, retention_start=retention_start, part_size=part_size
            )
        row = ExportRow(
            workspace_id=workspace_id,
            id=export_id,
            format=file_format,
            filter=shown_filter,
            criteria=criteria,
            plan=plan,
            created_by=principal.as_actor(),
            created_at=now,
            expires_at=now + EXPORT_TTL,
            event_format=event_format,
        )
        async with services.pool.acquire() as conn, audited(conn, services.ingestor) as audit:
            await audit.record(
                workspace_id,
                "audit_log.export.created",
                actor=principal.as_actor(),
                targets=[{"type": "export", "id": str(row.id), "name": None}],
                metadata={
                    "exportId": str(row.id),
                    "format": file_format,
                    "eventFormat": event_format,
                    "filter": shown_filter,
                    "rowCount": plan.row_count,
                    "files": row.part_count,
                },
            )
            await export_store.insert_export(conn, row)
            # The stored export counts from now on, in place of its reservation.
            await export_store.release_export_reservation(conn, workspace_id, export_id)
    except BaseException:
        # Nothing was stored (cancelled, or the database failed): the place is free again.
        # Shielded, so a cancelled request still gives it back.
        if limit:
            await asyncio.shield(_release(services, workspace_id, export_id))
        raise
    return row


async def _release(services: ExportServices, workspace_id: str, export_id: uuid.UUID) -> None:
    try:
        async with services.pool.acquire() as conn:
            await export_store.release_export_reservation(conn, workspace_id, export_id)
    except Exception:
        # It stops counting at the end of the rate window all the same.
        log.warning("could not give back the export reservation %s", export_id, exc_info=True)


def _check_rate(created: list[datetime], limit: int, now: datetime) -> None:
    """Refuse when `created` (this workspace's exports within RATE_WINDOW, oldest
    first) already holds `limit`; say when the next one will be accepted."""
    if len(created) < limit:
        return
    oldest_counted = created[len(created) - limit]
    wait = max(1, math.ceil((oldest_counted + RATE_WINDOW - now).total_seconds()))
    raise RateLimitedError(
        f"at most {limit} exports a minute per workspace; retry in {wait} s", retry_after=wait
    )


def _shows_export(
    row: ExportRow,
) -> Callable[[asyncpg.Connection], Awaitable[bool]]:
    async def shows(conn: asyncpg.Connection) -> bool:
        return await export_store.read_export(conn, row.workspace_id, row.id) is not None

    return shows


def download_links(
    services: ExportServices, row: ExportRow, base_url: str, now: datetime
) -> list[ExportLink]:
    """A signed URL for every part; none once the export has expired."""
    if is_expired(row, now):
        return []
    links = ExportLinks(services.settings.secret_key)
    link_ttl = timedelta(seconds=services.settings.export_link_ttl_seconds)
    expires_at = min(now + link_ttl, row.expires_at)
    return [
        ExportLink(
            part=part,
            row_count=row.part_rows(part),
            url=links.url(base_url, row.workspace_id, row.id, part, expires_at),
        )
        for part in range(1, row.part_count + 1)
    ]


def has_proof(row: ExportRow) -> bool:
    """Whether a proof bundle can prove the export's files: NATIVE JSON only. A leaf
    hashes the stored event, which a JSON file holds verbatim; an OCSF file holds
    another object, which no proof of the log can verify."""
    return row.format == "JSON" and row.event_format == "NATIVE"


def proof_link(
    services: ExportServices, row: ExportRow, base_url: str, now: datetime
) -> str | None:
    """A signed URL of the proof bundle: NATIVE JSON exports only (has_proof), none
    once the export has expired."""
    if not has_proof(row) or is_expired(row, now):
        return None
    link_ttl = timedelta(seconds=services.settings.export_link_ttl_seconds)
    expires_at = min(now + link_ttl, row.expires_at)
    links = ExportLinks(services.settings.secret_key)
    return links.proof_url(base_url, row.workspace_id, row.id, expires_at)


async def find_export(
    services: ExportServices, workspace_id: str, export_id: uuid.UUID
) -> ExportRow | None:
    """From a read replica, or from the primary when the replica has not replayed
    the export yet (one created a moment ago: read-your-writes)."""
    replica = services.read_pool()
    if replica is not services.pool:
        async with replica.acquire() as conn:
            row = await export_store.read_export(conn, workspace_id, export_id)
        if row is not None:
            return row
    async with services.pool.acquire() as conn:
        return await export_store.read_export(conn, workspace_id, export_id)


async def list_exports(
    services: ExportServices, workspace_id: str, limit: int, after: uuid.UUID | None
) -> list[ExportRow]:
    async with services.pool.acquire() as conn:
        return await export_store.read_exports(conn, workspace_id, limit=limit, before_id=after)


async def stream_part(
    services: ExportServices, row: ExportRow, part: int
) -> AsyncGenerator[list[str], None]:
    """One part's stored payloads in batches; holds one pooled connection while it runs.

    Downloads take a slot first (services.download_slots, within the
    workspace's share): past that many at once, a download waits for one to end
    (its response has started; its first bytes come later) instead of taking a
    connection the API needs.
    """
    slot = services.download_slots.slot(row.workspace_id)
    # A read replica that shows the export row has replayed every event of its
    # snapshot (they committed before it); one that does not yet: the primary.
    fenced = acquire_fenced(services.pool, services.read_pool(), _shows_export(row))
    async with slot, fenced as conn:
        # A plan changed since the export was made narrows what its files show.
        workspace = await read_workspace(conn, row.workspace_id)
        retention_start = workspace.retention_start(datetime.now(UTC)) if workspace else None
        # Closed explicitly: a download that ends early (GeneratorExit or a
        # cancellation here) must end the part's transaction and its in-flight
        # prefetch before the connection goes back to the pool; `async for` alone
        # leaves that to the garbage collector, after the release.
        async with contextlib.aclosing(
            export_store.stream_export_part(conn, row, part, retention_start=retention_start)
        ) as batches:
            async for batch in batches:
                yield batch
