"""The open websockets of this process, by the token that admitted them, closed with
4401 once that token is no longer valid.

- API keys: a revocation notice on the bus (published by any process that
  revokes a key: the CLI, the API) wakes the re-check at once; it also runs
  every `AUDITLOG_WS_RECHECK_SECONDS` (2 s) regardless, so a lost notice (Redis
  down, the in-process bus of another process) still closes the sockets in
  time. The database decides, with one query for all the open sockets' keys:
  a notice only says when to look.
- Console sessions: one timer per socket, at the JWT's `exp`.

Nothing here runs per event delivered. Each operation sent on a socket is also
authorized again before it runs (`ws_connections.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

import asyncpg

from auditlog.auth import EXPIRED_SESSION, REVOKED_KEY
from auditlog.config import Settings
from auditlog.model import Principal
from auditlog.storage.database import EITHER_PLANS, acquire_with_plans
from auditlog.storage.keys import read_valid_key_ids
from auditlog.streaming.bus import REVOCATIONS_CHANNEL, LiveBus
from auditlog.streaming.doorbell import doorbells_of

log = logging.getLogger(__name__)

UNAUTHORIZED = 4401
TOO_MANY = 4429


def credential_of(principal: Principal) -> str:
    """What a socket limit counts by: the API key, or the console user of a workspace."""
    if principal.key_id is not None:
        return f"key:{principal.key_id}"
    return f"session:{principal.workspace_id}:{principal.subject}"


class Closable(Protocol):
    async def close(self, code: int, reason: str) -> None: ...


class SocketRegistry:
    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: LiveBus,
        *,
        recheck_interval: float,
        max_sockets_per_key: int = 50,
    ) -> None:
        self.pool = pool
        self.recheck_interval = recheck_interval
        self.max_sockets_per_key = max_sockets_per_key
        self._per_credential: dict[str, int] = {}
        self._principals: dict[Closable, Principal] = {}
        self._by_key: dict[str, set[Closable]] = {}
        self._timers: dict[Closable, asyncio.TimerHandle] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Rung on every notice, and when the bus reconnects (a notice may have been missed).
        self.notices = doorbells_of(bus)
        self.rechecks = 0  # how many re-checks ran (tests, logs)

    async def start(self) -> None:
        self.notices.watch(REVOCATIONS_CHANNEL, self._wake.set)
        self.notices.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ws-recheck")

    async def stop(self) -> None:
        self.notices.unwatch(REVOCATIONS_CHANNEL, self._wake.set)
        await self.notices.stop()
        tasks = [t for t in (self._task, *self._closing) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def __len__(self) -> int:
        return len(self._principals)

    def add(self, socket: Closable, principal: Principal) -> bool:
        """Watch an admitted socket until `discard`; False (not added) when its
        credential already holds `max_sockets_per_key` sockets in this process."""
        self.discard(socket)
        credential = credential_of(principal)
        if self._per_credential.get(credential, 0) >= self.max_sockets_per_key:
            return False
        self._per_credential[credential] = self._per_credential.get(credential, 0) + 1
        self._principals[socket] = principal
        if principal.key_id is not None:
            self._by_key.setdefault(principal.key_id, set()).add(socket)
        if principal.expires_at is not None:
            delay = max(0.0, principal.expires_at - time.time())
            self._timers[socket] = asyncio.get_running_loop().call_later(
                delay, self._close, socket, f"Unauthorized: {EXPIRED_SESSION}"
            )
        return True

    def discard(self, socket: Closable) -> None:
        principal = self._principals.pop(socket, None)
        if principal is None:
            return
        credential = credential_of(principal)
        left = self._per_credential.get(credential, 1) - 1
        if left > 0:
            self._per_credential[credential] = left
        else:
            self._per_credential.pop(credential, None)
        if principal.key_id is not None:
            sockets = self._by_key.get(principal.key_id)
            if sockets is not None:
                sockets.discard(socket)
                if not sockets:
                    del self._by_key[principal.key_id]
        timer = self._timers.pop(socket, None)
        if timer is not None:
            timer.cancel()

    async def recheck(self) -> None:
        """Close every socket whose key is revoked or gone: one query for all of them."""
        key_ids = sorted(self._by_key)
        self.rechecks += 1
        if not key_ids:
            return
        async with acquire_with_plans(self.pool, EITHER_PLANS) as conn:
            valid = await read_valid_key_ids(conn, key_ids)
        for key_id in key_ids:
            if key_id not in valid:
                for socket in list(self._by_key.get(key_id, ())):
                    self._close(socket, f"Unauthorized: {REVOKED_KEY}")

    def _close(self, socket: Closable, reason: str) -> None:
        self.discard(socket)
        task = asyncio.get_running_loop().create_task(socket.close(UNAUTHORIZED, reason))
        self._closing.add(task)
        task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task[None]) -> None:
        self._closing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("closing a websocket failed", exc_info=task.exception())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.recheck_interval)
            self._wake.clear()
            try:
                await self.recheck()
            except Exception:
                # The database is down: the sockets stay (their operations cannot run
                # either, each needs the database to authorize); retried next time.
                log.exception("open websockets' keys could not be re-checked")


@asynccontextmanager
async def open_socket_registry(
    pool: asyncpg.Pool, bus: LiveBus, settings: Settings
) -> AsyncIterator[SocketRegistry]:
    """The process's websocket registry, for the web app's lifespan."""
    registry = SocketRegistry(
        pool,
        bus,
        recheck_interval=settings.ws_recheck_seconds,
        max_sockets_per_key=settings.ws_max_sockets_per_key,
    )
    await registry.start()
    try:
        yield registry
    finally:
        await registry.stop()
