"""The sealer: adds final events to each workspace's tree and signs checkpoints.

Policy: every `serve` with background work and every `auditlog worker` runs
one. A pass every `seal_interval_seconds` (1 s by default) seals each
workspace with final events beyond its tree, so an event is covered by a
signed checkpoint within about that interval of its 202, far inside the
10 s the contract allows. Several sealers are safe: a workspace is sealed
under a transaction-level advisory lock, and one that finds it taken leaves
the workspace to its holder. A failed pass is logged and retried at the next
interval; it never stops the process.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from auditlog.integrity.keys import SigningKeys
from auditlog.jobs.periodic import every
from auditlog.services import integrity as integrity_service


class Sealer:
    def __init__(self, pool: asyncpg.Pool, keys: SigningKeys, *, interval: float = 1.0) -> None:
        self._pool = pool
        self._keys = keys
        self._interval = interval
        self.sealed_leaves = 0  # since start, for tests and the operator

    async def run_once(self) -> integrity_service.SealPass:
        signer = self._keys.current()
        async with self._pool.acquire() as conn:
            done = await integrity_service.seal_all(conn, signer)
        self.sealed_leaves += done.leaves_added
        return done

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Sealer]:
        async with every(self._interval, "sealing", self.run_once):
            yield self
