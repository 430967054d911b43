"""How much export work a process does at once: download slots and the counters of
costly work, kept per process by the runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


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


def download_slots_for(pool_size: int) -> int:
    """Concurrent export downloads per process: a third of the pool, at least one."""
    return max(1, pool_size // 3)
