"""Read replicas: pools on hot standbys (`DATABASE_READ_URL`) for reads that may lag.

Policy (docs/scaling.md):
- Reads that may lag by the replication delay go to a standby: GraphQL queries
  of events and activity, `export(id)` and export files, the live tail's
  catch-up (subscription backfill). Everything that writes, and every
  read that decides what a writer does (API keys, stream cursors and leases,
  sealing, export planning, rate limits), stays on the primary.
- A standby answers from its replayed state, and the safe watermark is
  computed there from that state (`SAFE_WATERMARK`: on a standby
  `pg_current_snapshot()` lists no running transactions, so it takes the
  snapshot's xmin), so a resuming reader on a standby never passes what it has
  replayed. Where a reader must reach a position the standby has not replayed
  yet, or must see a row written a moment ago, it falls back to the primary
  (`acquire_fenced`).
- Several standbys: taken in turn. One that fails its check (`SELECT
  pg_is_in_recovery()`, every CHECK_SECONDS, bounded) is skipped until it
  answers again; with none answering, reads go to the primary. Pools open no
  connection at start, so a standby down never stops a process from starting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import asyncpg

from auditlog.aio import cancel_and_wait
from auditlog.storage.database import (
    DATABASE_UNAVAILABLE,
    DEFAULT_STATEMENT_TIMEOUT,
    create_pool,
    discard_if_broken,
)

log = logging.getLogger(__name__)

CHECK_SECONDS = 2.0
CHECK_TIMEOUT = 2.0


def _where(url: str) -> str:
    """host:port/db of a URL, without its credentials, for logs."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


class _Replica:
    def __init__(self, url: str, pool: asyncpg.Pool) -> None:
        self.url = url
        self.pool = pool
        self.healthy = True  # until a check says otherwise


class ReadReplicas:
    """The pools of this process on the standbys of `DATABASE_READ_URL`."""

    def __init__(self, replicas: list[_Replica]) -> None:
        self._replicas = replicas
        self._next = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        urls: tuple[str, ...],
        *,
        max_size: int = 10,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
        check_seconds: float = CHECK_SECONDS,
    ) -> ReadReplicas:
        replicas = [
            _Replica(
                url,
                await create_pool(
                    url, min_size=0, max_size=max_size, statement_timeout=statement_timeout
                ),
            )
            for url in urls
        ]
        self = cls(replicas)
        self._task = asyncio.get_running_loop().create_task(
            self._check_forever(check_seconds), name="read-replica-checks"
        )
        return self

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        for replica in self._replicas:
            await replica.pool.close()

    def pool(self) -> asyncpg.Pool | None:
        """The next answering standby's pool, in turn; None when none answers."""
        count = len(self._replicas)
        for i in range(count):
            replica = self._replicas[(self._next + i) % count]
            if replica.healthy:
                self._next = (self._next + i + 1) % count
                return replica.pool
        return None

    @property
    def healthy(self) -> int:
        return sum(r.healthy for r in self._replicas)

    async def check(self) -> None:
        """Ask every standby once whether it answers; say when one stops or starts."""
        for replica in self._replicas:
            ok = False
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CHECK_TIMEOUT):
                    async with replica.pool.acquire() as conn:
                        await conn.fetchval("SELECT pg_is_in_recovery()")
                        ok = True
            if ok != replica.healthy:
                replica.healthy = ok
                if ok:
                    log.info("read replica %s answers again", _where(replica.url))
                else:
                    log.warning(
                        "read replica %s does not answer: its reads go elsewhere",
                        _where(replica.url),
                    )

    async def _check_forever(self, seconds: float) -> None:
        while True:
            await self.check()
            await asyncio.sleep(seconds)


@asynccontextmanager
async def acquire_fenced(
    primary: asyncpg.Pool,
    replica: asyncpg.Pool,
    fence: Callable[[asyncpg.Connection], Awaitable[bool]],
) -> AsyncIterator[asyncpg.Connection]:
    """A connection to `replica` if `fence` holds there, else one to the primary.

    The fence is what the reader must see (an export created a moment ago, a
    position reached): a standby that has not replayed it yet is not used. With
    no standby (`replica` is the primary) the fence is not asked.
    """
    if replica is not primary:
        try:
            conn = await replica.acquire()
        except DATABASE_UNAVAILABLE:
            conn = None  # a standby down: the primary has it all
        if conn is not None:
            try:
                seen = await fence(conn)
            except DATABASE_UNAVAILABLE as exc:
                discard_if_broken(conn, exc)
                seen = False
            if seen:
                try:
                    yield conn
                    return
                finally:
                    await replica.release(conn)
            await replica.release(conn)
    async with primary.acquire() as conn:
        yield conn
