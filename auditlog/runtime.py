"""The service's shared resources, opened once and closed once.

`open_services` is used by the web app's lifespan and by CLI commands that
need the database (keys, workspaces), so both see the same wiring.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg

from auditlog.auth import SessionTokens
from auditlog.config import Settings
from auditlog.cursors import CursorCodec
from auditlog.exports.slots import DownloadSlots, ExportCounters, download_slots_for
from auditlog.ingest.enrich import GeoIP
from auditlog.ingest.rate import IngestRateLimiter
from auditlog.integrity.keys import SigningKeys
from auditlog.services.ingest import Ingestor
from auditlog.storage.database import create_pool, owner_connection, resolve_database_url
from auditlog.storage.migrations import apply_migrations
from auditlog.storage.replicas import ReadReplicas
from auditlog.streaming.bus import LiveBus
from auditlog.streaming.tail import LiveHub
from auditlog.ws_registry import SocketRegistry

log = logging.getLogger(__name__)


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
