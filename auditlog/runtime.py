"""The service's shared resources, opened once and closed once.

`open_services` is used by the web app's lifespan and by CLI commands that
need the database (keys, workspaces), so both see the same wiring.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg

from auditlog.auth import SessionTokens
from auditlog.config import Settings
from auditlog.cursors import CursorCodec
from auditlog.ingest.enrich import GeoIP
from auditlog.ingest.rate import IngestRateLimiter
from auditlog.ingest.service import Ingestor
from auditlog.integrity.keys import SigningKeys
from auditlog.storage.database import create_pool, owner_connection, resolve_database_url
from auditlog.storage.migrations import apply_migrations
from auditlog.storage.replicas import ReadReplicas
from auditlog.streaming.bus import LiveBus
from auditlog.streaming.tail import LiveHub
from auditlog.ws_registry import SocketRegistry

log = logging.getLogger(__name__)


@dataclass
class ExportCounters:
    """Counts of this process's costly export work, for operators (and the tests that
    check the limits hold): plans started (one scan of the matching rows each)."""

    plans_started: int = 0
    downloads_aborted_idle: int = 0  # their client stopped reading (download_idle_seconds)


@dataclass
class _WorkspaceDownloads:
    semaphore: asyncio.Semaphore
    users: int = 0  # downloads holding or waiting for one of the workspace's slots
    active: int = 0  # those holding one


class DownloadSlots:
    """Export downloads streaming at once in this process: at most `total`, and at
    most `per_workspace` of one workspace, which is kept below the total, so one
    workspace's downloads (a client that stopped reading, say) never take every
    slot and stall every other workspace's.

    A download waits for its workspace's slot first, then for one of the total:
    a workspace at its cap queues behind itself, never ahead of the others.
    """

    def __init__(self, total: int, per_workspace: int) -> None:
        self.total = total
        self.per_workspace = max(1, min(per_workspace, total - 1))
        self._all = asyncio.Semaphore(total)
        self._workspaces: dict[str, _WorkspaceDownloads] = {}

    @asynccontextmanager
    async def slot(self, workspace_id: str) -> AsyncIterator[None]:
        mine = self._workspaces.get(workspace_id)
        if mine is None:
            mine = self._workspaces[workspace_id] = _WorkspaceDownloads(
                asyncio.Semaphore(self.per_workspace)
            )
        mine.users += 1
        try:
            async with mine.semaphore, self._all:
                mine.active += 1
                try:
                    yield
                finally:
                    mine.active -= 1
        finally:
            mine.users -= 1
            if not mine.users:  # nobody holds or waits: forget the workspace
                del self._workspaces[workspace_id]

    def active(self, workspace_id: str | None = None) -> int:
        """Downloads streaming now: of one workspace, or of all."""
        if workspace_id is not None:
            mine = self._workspaces.get(workspace_id)
            return mine.active if mine else 0
        return sum(w.active for w in self._workspaces.values())


@dataclass
class Services:
    settings: Settings
    database_url: str
    pool: asyncpg.Pool
    geoip: GeoIP
    bus: LiveBus
    ingestor: Ingestor
    cursors: CursorCodec
    sessions: SessionTokens
    # Export downloads hold a pooled connection while they stream; at most
    # download_slots_for(pool size) do at once, so they never take the whole pool.
    download_slots: DownloadSlots
    signing_keys: SigningKeys  # checkpoints: loaded at start, so a bad key stops it there
    ingest_rate: IngestRateLimiter  # per API key, in this process
    live: LiveHub | None = None  # the live tail, started by the web app's lifespan
    export_counters: ExportCounters = field(default_factory=ExportCounters)
    sockets: SocketRegistry | None = None  # open websockets, by the web app's lifespan
    replicas: ReadReplicas | None = None  # hot standbys (DATABASE_READ_URL), if any

    def read_pool(self) -> asyncpg.Pool:
        """A hot standby's pool for reads that may lag by the replication delay
        (queries, export files, live backfill); the primary's without one answering.
        Writes, and reads a writer depends on, use `pool` (docs/scaling.md)."""
        if self.replicas is not None:
            pool = self.replicas.pool()
            if pool is not None:
                return pool
        return self.pool


def download_slots_for(pool_size: int) -> int:
    """Concurrent export downloads per process: a third of the pool, at least one."""
    return max(1, pool_size // 3)


async def migrate(database_url: str) -> list[str]:
    async with owner_connection(database_url) as conn:
        return await apply_migrations(conn)


@asynccontextmanager
async def open_services(
    settings: Settings, *, run_migrations: bool = True, pool_size: int = 10
) -> AsyncIterator[Services]:
    settings = settings.with_secret_key()
    signing_keys = SigningKeys(settings)
    url = resolve_database_url(settings.database_url, settings.data_dir)
    if run_migrations:
        applied = await migrate(url)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
    pool = await create_pool(
        url, max_size=pool_size, statement_timeout=settings.statement_timeout_seconds
    )
    geoip = GeoIP(settings.geoip_db, country_default=settings.geoip_default)
    bus = LiveBus(settings.redis_url)
    replicas: ReadReplicas | None = None
    try:
        if settings.database_read_urls:
            replicas = await ReadReplicas.open(
                settings.database_read_urls,
                max_size=pool_size,
                statement_timeout=settings.statement_timeout_seconds,
            )
        await bus.connect()
        ingestor = Ingestor(pool, geoip, bus.notify)
        yield Services(
            settings=settings,
            database_url=url,
            pool=pool,
            geoip=geoip,
            bus=bus,
            ingestor=ingestor,
            cursors=CursorCodec(settings.secret_key),
            sessions=SessionTokens(
                settings.jwt_secret,
                settings.jwks_url,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
            ),
            download_slots=DownloadSlots(
                download_slots_for(pool_size), settings.downloads_per_workspace
            ),
            signing_keys=signing_keys,
            ingest_rate=IngestRateLimiter(
                settings.ingest_events_per_second, settings.ingest_burst_events
            ),
            replicas=replicas,
        )
    finally:
        if replicas is not None:
            await replicas.close()
        await bus.disconnect()
        geoip.close()
        await pool.close()
