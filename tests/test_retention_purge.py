"""`maintain`: expired events removed for good, by partition drop or row purge,
one runner at a time. Far-past months are used so that no other test's events
share them (the database is shared by the whole session). These passes run with
no grace period, as if each cut were older than it (tests/test_retention_grace.py
has the grace and legal holds)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

from auditlog.jobs.maintenance import MAINTENANCE_LOCK_KEY, MaintenanceReport, run_maintenance
from auditlog.jobs.scheduler import MaintenanceScheduler
from auditlog.runtime import Services
from auditlog.services import workspaces as workspace_service
from auditlog.storage.retention import read_purge_records
from tests.conftest import (
    WorkspaceKeys,
    create_workspace_keys,
    event,
    make_settings,
    start_service,
    stop_service,
)
from tests.exports_support import ONE, create_export

CENTURY = 36500  # ENTERPRISE custom retention that admits events from the 2000s
SHORTER = 5000  # then shortened: everything before about 2013 expires


async def maintain(services: Services) -> MaintenanceReport:
    """A pass that ran (retrying while the serving process's own pass holds the lock)."""
    for _ in range(100):
        report = await run_maintenance(services.database_url, batch_size=7, grace_days=0)
        if report.ran:
            return report
        await asyncio.sleep(0.1)
    raise AssertionError("maintenance never got its lock")


def at(year: int, month: int, count: int) -> list[dict[str, object]]:
    start = datetime(year, month, 3, tzinfo=UTC)
    return [event(occurredAt=(start + timedelta(hours=7 * i)).isoformat()) for i in range(count)]


async def century_workspace(services: Services, http: httpx.AsyncClient) -> WorkspaceKeys:
    return await create_workspace_keys(services, http, "enterprise", retention_days=CENTURY)


async def rows(owner: asyncpg.Connection, table: str, workspace_id: str) -> int:
    """Rows of the workspace before 2010 (its own service events of today left aside)."""
    return int(
        await owner.fetchval(
            f"SELECT count(*) FROM {table} WHERE workspace_id = $1 AND occurred_at < $2",
            workspace_id,
            datetime(2010, 1, 1, tzinfo=UTC),
        )
    )


async def partition_exists(owner: asyncpg.Connection, name: str) -> bool:
    return bool(await owner.fetchval("SELECT to_regclass($1) IS NOT NULL", name))


async def test_downgrade_then_maintain_keeps_only_the_new_window(
    services: Services, http: httpx.AsyncClient, workspace: WorkspaceKeys, owner: asyncpg.Connection
) -> None:
    now = datetime.now(UTC)
    ages = [200, 150, 91, 89, 10]
    batch = [event(occurredAt=(now - timedelta(days=d)).isoformat()) for d in ages for _ in "ab"]
    assert (await workspace.ingest(batch)).status_code == 202
    other = await create_workspace_keys(services, http, "enterprise")
    kept = [event(occurredAt=(now - timedelta(days=d)).isoformat()) for d in (200, 150, 10)]
    assert (await other.ingest(kept)).status_code == 202
    other_before = await owner.fetchval(
        "SELECT count(*) FROM audit_events WHERE workspace_id = $1", other.id
    )

    await workspace_service.set_plan(services.pool, workspace.id, "early_access")
    await maintain(services)

    horizon = now - timedelta(days=90)
    remaining = await owner.fetch(
        "SELECT occurred_at FROM audit_events WHERE workspace_id = $1", workspace.id
    )
    assert remaining and all(r["occurred_at"] >= horizon for r in remaining)
    assert sum(1 for r in remaining if r["occurred_at"] < now - timedelta(days=80)) == 2
    old_ids = await owner.fetchval(
        "SELECT count(*) FROM audit_event_ids WHERE workspace_id = $1 AND occurred_at < $2",
        workspace.id,
        horizon,
    )
    assert old_ids == 0
    assert other_before == await owner.fetchval(
        "SELECT count(*) FROM audit_events WHERE workspace_id = $1", other.id
    )
    (record,) = await read_purge_records(owner, workspace.id)
    assert (record.method, record.events_deleted, record.ids_deleted) == ("rows", 6, 6)


async def test_a_month_only_expired_workspaces_hold_is_dropped_whole(
    services: Services, http: httpx.AsyncClient, owner: asyncpg.Connection
) -> None:
    a, b = await century_workspace(services, http), await century_workspace(services, http)
    for ws in (a, b):
        assert (await ws.ingest(at(2001, 3, 10))).status_code == 202
    assert await partition_exists(owner, "audit_events_2001_03")
    for ws in (a, b):
        await workspace_service.set_plan(services.pool, ws.id, "enterprise", SHORTER)

    report = await maintain(services)

    assert not await partition_exists(owner, "audit_events_2001_03")
    for ws in (a, b):
        assert await rows(owner, "audit_event_ids", ws.id) == 0
    (dropped,) = [r for r in report.retention.purged if r.partition_name == "audit_events_2001_03"]
    assert dropped.method == "partition"
    assert sorted(dropped.workspace_ids) == sorted([a.id, b.id])
    assert (dropped.events_deleted, dropped.ids_deleted) == (20, 20)
    assert await read_purge_records(owner, a.id) == [dropped]

    # A late event for that month, still inside another workspace's retention,
    # finds its partition again.
    late = await century_workspace(services, http)
    response = await late.ingest(at(2001, 3, 1))
    assert response.status_code == 202, response.text
    assert await partition_exists(owner, "audit_events_2001_03")


async def test_a_month_shared_with_a_workspace_that_keeps_its_rows_is_purged_by_row(
    services: Services, http: httpx.AsyncClient, owner: asyncpg.Connection
) -> None:
    expiring, keeping = (
        await century_workspace(services, http),
        await century_workspace(services, http),
    )
    assert (await expiring.ingest(at(2002, 6, 25))).status_code == 202
    assert (await keeping.ingest(at(2002, 6, 4))).status_code == 202
    await workspace_service.set_plan(services.pool, expiring.id, "enterprise", SHORTER)

    await maintain(services)  # batches of 7: four short transactions for 25 rows

    assert await partition_exists(owner, "audit_events_2002_06")
    assert await rows(owner, "audit_events", expiring.id) == 0
    assert await rows(owner, "audit_event_ids", expiring.id) == 0
    assert await rows(owner, "audit_events", keeping.id) == 4
    assert await rows(owner, "audit_event_ids", keeping.id) == 4
    (record,) = await read_purge_records(owner, expiring.id)
    assert (record.method, record.events_deleted, record.ids_deleted) == ("rows", 25, 25)


async def test_two_runners_at_once_do_the_work_once(
    services: Services, http: httpx.AsyncClient, owner: asyncpg.Connection
) -> None:
    ws = await century_workspace(services, http)
    other = await century_workspace(services, http)
    assert (await ws.ingest(at(2003, 2, 30))).status_code == 202
    assert (await other.ingest(at(2003, 2, 1))).status_code == 202
    await workspace_service.set_plan(services.pool, ws.id, "enterprise", SHORTER)

    reports = await asyncio.gather(
        *(run_maintenance(services.database_url, batch_size=3, grace_days=0) for _ in range(2))
    )

    assert await rows(owner, "audit_events", ws.id) == 0
    records = await read_purge_records(owner, ws.id)
    assert [(r.method, r.events_deleted) for r in records] == [("rows", 30)]
    mine = [r for report in reports for r in report.retention.purged if ws.id in r.workspace_ids]
    assert [r.events_deleted for r in mine] == [30]


async def test_a_runner_finding_the_lock_taken_does_nothing(
    services: Services, http: httpx.AsyncClient, owner: asyncpg.Connection
) -> None:
    ws = await century_workspace(services, http)
    assert (await ws.ingest(at(2004, 9, 5))).status_code == 202
    await workspace_service.set_plan(services.pool, ws.id, "enterprise", SHORTER)
    other_process = await asyncpg.connect(services.database_url)
    try:
        assert await other_process.fetchval("SELECT pg_try_advisory_lock($1)", MAINTENANCE_LOCK_KEY)
        report = await run_maintenance(services.database_url)
        assert not report.ran
        assert "another runner" in report.summary()
        assert await rows(owner, "audit_events", ws.id) == 5
    finally:
        await other_process.close()
    await maintain(services)
    assert await rows(owner, "audit_events", ws.id) == 0


async def test_maintenance_creates_the_months_ahead(
    services: Services, owner: asyncpg.Connection
) -> None:
    await maintain(services)
    today = datetime.now(UTC).date()
    year, month = today.year, today.month
    for _ in range(3):
        assert await partition_exists(owner, f"audit_events_{year:04d}_{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


async def test_the_scheduler_runs_passes_and_stops_cleanly(services: Services) -> None:
    scheduler = MaintenanceScheduler(services.database_url, interval=0.05)
    async with scheduler.running():
        for _ in range(200):
            if sum(p.ran for p in scheduler.passes) >= 2:
                break
            await asyncio.sleep(0.05)
    assert sum(p.ran for p in scheduler.passes) >= 2
    count = len(scheduler.passes)
    await asyncio.sleep(0.2)
    assert len(scheduler.passes) == count


async def test_serve_runs_maintenance_in_the_background(database_url: str, data_dir: Path) -> None:
    running = await start_service(make_settings(database_url, data_dir), background=True)
    try:
        app = running.server.config.app
        for _ in range(200):
            if app.state.maintenance.passes:
                break
            await asyncio.sleep(0.05)
        assert app.state.maintenance.passes
    finally:
        await stop_service(running)


async def test_maintenance_removes_exports_long_expired(
    workspace: WorkspaceKeys, services: Services, owner: asyncpg.Connection
) -> None:
    """An export expired 31 days ago is removed; one expired 29 days ago is still
    answered as EXPIRED; their audit events stay in the log."""
    assert (await workspace.ingest([event("file.uploaded")])).status_code == 202
    long_gone, recent, live = [await create_export(workspace, "CSV", None) for _ in range(3)]
    for export, days in ((long_gone, 31), (recent, 29)):
        await owner.execute(
            "UPDATE exports SET expires_at = now() - make_interval(days => $1) "
            "WHERE workspace_id = $2 AND id = $3::uuid",
            days,
            workspace.id,
            export["id"],
        )
    report = await maintain(services)
    assert report.exports_removed >= 1
    assert "exports expired over 30 days ago removed" in report.summary()
    assert (await workspace.gql(ONE, {"id": long_gone["id"]}))["data"]["export"] is None
    shown = (await workspace.gql(ONE, {"id": recent["id"]}))["data"]["export"]
    assert shown["status"] == "EXPIRED" and shown["files"] == []
    assert (await workspace.gql(ONE, {"id": live["id"]}))["data"]["export"]["status"] == "READY"
    audited = await owner.fetchval(
        "SELECT count(*) FROM audit_events WHERE workspace_id = $1 "
        "AND action = 'audit_log.export.created'",
        workspace.id,
    )
    assert audited == 3
