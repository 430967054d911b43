"""Maintenance inside `serve`: a pass at start, then one every interval.

Policy: every serving process with background work runs the scheduler; the
advisory lock in run_maintenance makes the passes of several processes take
turns instead of doubling up. A failed pass is logged and retried at the next
interval; it never stops the service.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from auditlog.config import DEFAULT_RETENTION_GRACE_DAYS
from auditlog.jobs.maintenance import MaintenanceReport, run_maintenance
from auditlog.jobs.periodic import every

MAINTENANCE_INTERVAL_SECONDS = 600.0


class MaintenanceScheduler:
    def __init__(
        self,
        database_url: str,
        *,
        interval: float = MAINTENANCE_INTERVAL_SECONDS,
        grace_days: int = DEFAULT_RETENTION_GRACE_DAYS,
    ) -> None:
        self._database_url = database_url
        self._interval = interval
        self._grace_days = grace_days
        self.passes: list[MaintenanceReport] = []

    async def run_once(self) -> MaintenanceReport:
        report = await run_maintenance(self._database_url, grace_days=self._grace_days)
        self.passes.append(report)
        self.passes[:] = self.passes[-10:]
        return report

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[MaintenanceScheduler]:
        async with every(self._interval, "maintenance", self.run_once):
            yield self
