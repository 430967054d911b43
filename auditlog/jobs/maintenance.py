"""One maintenance pass: partitions ahead, the retention purge, then exports
that expired more than EXPORT_RECORD_DAYS ago.

Policy: maintenance connects as the owner (DATABASE_URL), because dropping a
partition needs ownership and because the runtime role must never be able to
delete anything, not even through the purge functions. One runner at a time
across every process: the pass holds a session-level advisory lock on its own
connection (pg_try_advisory_lock); a runner that finds it taken does nothing
and says so. The lock goes with the connection if the process dies.

With a signer, the pass seals every workspace's tree first (as the sealer in
`serve` does), so that events about to be purged are leaves before they go:
retention removes events, never the tree (docs/integrity.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from auditlog.config import DEFAULT_RETENTION_GRACE_DAYS
from auditlog.integrity.notes import NoteSigner
from auditlog.jobs import partitions, retention
from auditlog.services import integrity as integrity_service
from auditlog.storage import exports as export_store
from auditlog.storage import retention as store
from auditlog.storage.database import owner_connection

log = logging.getLogger(__name__)

MAINTENANCE_LOCK_KEY = 7_311_402_119  # arbitrary, fixed: "auditlog maintenance"
# An expired export is still answered (status EXPIRED, no files) this long
# after it expired, so a script asking about it learns why; then it is removed.
EXPORT_RECORD_DAYS = 30


@dataclass
class MaintenanceReport:
    ran: bool  # False: another runner held the lock, nothing was done
    partitions_created: list[str] = field(default_factory=list)
    retention: retention.RetentionReport = field(default_factory=retention.RetentionReport)
    exports_removed: int = 0
    leaves_sealed: int | None = None  # None: the pass had no signer

    def summary(self) -> str:
        if not self.ran:
            return "maintenance: another runner is active; nothing done"
        lines = [
            "maintenance: partitions created: "
            + (", ".join(self.partitions_created) or "none (already there)")
        ]
        for record in self.retention.purged:
            where = (
                f"partition {record.partition_name}"
                if record.method == "partition"
                else f"workspace {record.workspace_ids[0]}"
            )
            lines.append(
                f"maintenance: purged {where}: {record.events_deleted} events, "
                f"{record.ids_deleted} ids older than {record.purged_before.isoformat()}"
            )
        for name in self.retention.deferred_partitions:
            lines.append(f"maintenance: partition {name} kept for the next pass (lock busy)")
        if not self.retention.purged:
            lines.append("maintenance: nothing expired")
        if self.retention.held:
            lines.append(
                "maintenance: legal hold (nothing purged): " + ", ".join(self.retention.held)
            )
        lines.append(
            f"maintenance: exports expired over {EXPORT_RECORD_DAYS} days ago removed: "
            f"{self.exports_removed}"
        )
        if self.leaves_sealed is not None:
            lines.append(f"maintenance: integrity: {self.leaves_sealed} events sealed")
        return "\n".join(lines)


async def run_maintenance(
    database_url: str,
    *,
    batch_size: int = retention.BATCH_SIZE,
    signer: NoteSigner | None = None,
    grace_days: int = DEFAULT_RETENTION_GRACE_DAYS,
) -> MaintenanceReport:
    """One pass, unless another process is running one right now. A retention cut
    purges nothing more until it is `grace_days` old (docs/retention.md)."""
    async with owner_connection(database_url) as conn:
        if not await store.try_lock_maintenance(conn, MAINTENANCE_LOCK_KEY):
            log.info("maintenance: another runner holds the lock; skipping this pass")
            return MaintenanceReport(ran=False)
        try:
            sealed = None
            unsealed: frozenset[str] = frozenset()
            if signer is not None:
                done = await integrity_service.seal_all(conn, signer)
                sealed = done.leaves_added
                # Never purge what could not be sealed first: it would escape the tree.
                unsealed = frozenset(done.failed)
            created = await partitions.run_once(conn)
            purged = await retention.run_once(
                conn, batch_size=batch_size, grace_days=grace_days, keep=unsealed
            )
            removed = await export_store.delete_exports_expired_before(
                conn, datetime.now(UTC) - timedelta(days=EXPORT_RECORD_DAYS)
            )
        finally:
            await store.unlock_maintenance(conn, MAINTENANCE_LOCK_KEY)
    if created:
        log.info("maintenance: created partitions %s", ", ".join(created))
    if removed:
        log.info(
            "maintenance: removed %d exports expired over %d days ago", removed, EXPORT_RECORD_DAYS
        )
    return MaintenanceReport(
        ran=True,
        partitions_created=created,
        retention=purged,
        exports_removed=removed,
        leaves_sealed=sealed,
    )
