"""Storage-level behaviour of the append path under concurrency."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from auditlog.runtime import Services
from auditlog.storage import events as event_store
from auditlog.storage.events import EventFilter
from tests.conftest import WorkspaceKeys


async def test_claims_in_opposite_orders_do_not_deadlock(
    workspace: WorkspaceKeys, services: Services
) -> None:
    """Two open transactions claiming the same ids, listed in opposite orders:
    ids are claimed in key order, so the second waits for the first instead of
    deadlocking, then finds every id taken."""
    ids = [uuid.uuid4() for _ in range(5000)]
    now = datetime.now(UTC)
    results: list[set[tuple[str, uuid.UUID]]] = []

    async def claim(order: list[uuid.UUID], hold: float) -> None:
        async with services.pool.acquire() as conn, conn.transaction():
            results.append(
                await event_store.claim_event_ids(
                    conn, [workspace.id] * len(order), order, [now] * len(order)
                )
            )
            await asyncio.sleep(hold)

    await asyncio.gather(claim(ids, 0.2), claim(list(reversed(ids)), 0.2))
    assert sorted(len(r) for r in results) == [0, 5000]


async def test_concurrent_first_events_of_a_month_all_find_its_partition(
    services: Services,
) -> None:
    """Eight connections ask at once for the partition of a month that has none.
    The losers of the race wait on the creator's lock, then must see its table:
    none may fail with "relation already exists" (a late event would have been
    refused with a 500). Repeated over several months, as a race needs chances."""
    for month in range(1, 7):
        day = datetime(1999, month, 15, tzinfo=UTC).date()
        conns = [await services.pool.acquire() for _ in range(8)]
        try:
            results = await asyncio.gather(
                *(event_store.ensure_partitions(c, [day]) for c in conns), return_exceptions=True
            )
        finally:
            for c in conns:
                await services.pool.release(c)
        assert [r for r in results if isinstance(r, BaseException)] == []
        async with services.pool.acquire() as conn:
            name = await conn.fetchval(
                "SELECT to_regclass($1)::text", f"audit_events_1999_{month:02d}"
            )
        assert name == f"audit_events_1999_{month:02d}"


async def test_login_history_lookup_probes_the_index_whatever_the_history(
    workspace: WorkspaceKeys, services: Services, owner: asyncpg.Connection
) -> None:
    """Login anomalies look up only the batch's own values: with 20,000 values
    already seen in the workspace, the plan probes the primary key once per
    candidate instead of hashing the workspace's whole history (which a plain
    join chose, misled by unnest's estimates, and which grew with every login)."""
    await owner.execute(
        """INSERT INTO actor_logins_seen (workspace_id, actor_key, kind, value, first_seen)
           SELECT $1, 'email:u' || (i % 500) || '@x.io', 'ip',
                  '10.0.' || (i / 250) || '.' || (i % 250), now()
           FROM generate_series(1, 20000) AS i""",
        workspace.id,
    )
    await owner.execute("ANALYZE actor_logins_seen")
    candidates = [(f"email:u{i}@x.io", "ip", f"10.0.0.{i}") for i in range(300)]
    args = [workspace.id, *(list(col) for col in zip(*candidates, strict=True)), [], [], [], []]
    async with services.pool.acquire() as conn, conn.transaction():
        plan = "\n".join(
            r[0] for r in await conn.fetch("EXPLAIN " + event_store.REMEMBER_LOGINS, *args)
        )
        seen = await event_store.remember_logins(conn, workspace.id, candidates, [])
    assert "Hash Join" not in plan and "Seq Scan" not in plan, plan
    assert "Index Only Scan using actor_logins_seen_pkey" in plan, plan
    # The statement still answers: the candidates with i in 1..249 were inserted above.
    assert len(seen) == sum(1 for i in range(300) if 1 <= i < 250)


async def test_page_reads_use_generic_plans_only_where_one_plan_serves_every_value(
    services: Services,
) -> None:
    """A page without an address or target filter runs with generic plans (no
    planning per request); the setting ends with the page, also when it fails;
    an address block or a target keeps plans made for its values."""
    network = ipaddress.ip_network("10.1.0.0/16")
    cases = [
        (EventFilter(), "force_generic_plan"),
        (
            EventFilter(actor_email="a@x.io", actions=["file.uploaded", "file.deleted"]),
            "force_generic_plan",
        ),
        (EventFilter(ip_network=network), "force_custom_plan"),
        (EventFilter(target_id="t-1"), "force_custom_plan"),
    ]
    async with services.pool.acquire() as conn:
        for flt, mode in cases:
            async with event_store.page_reads(conn, flt):
                assert await conn.fetchval("SHOW plan_cache_mode") == mode
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
        with pytest.raises(asyncpg.DivisionByZeroError):
            async with event_store.page_reads(conn, EventFilter()):
                await conn.fetchval("SELECT 1 / 0")
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"


async def test_generic_page_plans_still_prune_partitions(
    workspace: WorkspaceKeys, services: Services
) -> None:
    """The generic plan of a one-day page, after six executions of the prepared
    statement, scans only that day's partition (runtime pruning) by the key."""
    day = datetime(2026, 3, 10, tzinfo=UTC)
    months = [datetime(2026, m, 10, tzinfo=UTC).date() for m in (1, 2, 3, 4)]
    flt = EventFilter(occurred_from=day, occurred_to=day + timedelta(days=1))
    sql, args = event_store.page_query(
        workspace.id, flt, event_store.PageBounds(limit=51, workspace_retention=True)
    )
    async with services.pool.acquire() as conn:
        await event_store.ensure_partitions(conn, months)
        async with event_store.page_reads(conn, flt):
            # A server-side prepared statement, as asyncpg makes, explained on
            # its 7th execution, when a generic plan would be cached in any mode.
            await conn.execute(f"PREPARE page AS {sql}")
            values = ", ".join(
                f"'{a.isoformat()}'::timestamptz" if isinstance(a, datetime) else repr(a)
                for a in args
            )
            for _ in range(6):
                await conn.execute(f"EXECUTE page({values})")
            plan = "\n".join(
                r[0] for r in await conn.fetch(f"EXPLAIN (ANALYZE) EXECUTE page({values})")
            )
            await conn.execute("DEALLOCATE page")
    assert "Subplans Removed" in plan, plan
    scanned = set(re.findall(r" on (audit_events_\d{4}_\d{2})", plan))
    assert scanned == {"audit_events_2026_03"}, plan
    assert "_pkey" in plan, plan
