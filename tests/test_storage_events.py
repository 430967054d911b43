"""Storage-level behaviour of the append path under concurrency."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from auditlog.model import EventFilter
from auditlog.runtime import Services
from auditlog.storage import events as event_store
from auditlog.storage.database import EITHER_PLANS, acquire_with_plans, create_pool
from tests.conftest import WorkspaceKeys, event


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


async def test_page_connections_plan_generically_only_where_one_plan_serves_every_value(
    database_url: str,
) -> None:
    """A page whose plan fits every value gets a connection with generic plans (no
    planning per request); two selective filters together or a target keep plans
    made for their values; any other acquirer gets custom plans back, also from
    a connection a page read left generic, and a failed page read changes
    nothing of that."""
    network = ipaddress.ip_network("10.1.0.0/16")
    cases = [
        (EventFilter(), "force_generic_plan"),
        (EventFilter(actions=["file.uploaded", "file.deleted"]), "force_generic_plan"),
        (EventFilter(ip_network=network), "force_generic_plan"),
        (EventFilter(actor_email="a@x.io", actions=["file.uploaded"]), "force_custom_plan"),
        (EventFilter(target_id="t-1"), "force_custom_plan"),
    ]
    pool = await create_pool(database_url, min_size=1, max_size=1)  # one connection, reused
    try:
        for flt, mode in cases:
            async with event_store.page_connection(pool, flt) as conn:
                assert await conn.fetchval("SHOW plan_cache_mode") == mode
                assert not conn.is_in_transaction()
            async with pool.acquire() as conn:
                assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
        with pytest.raises(asyncpg.DivisionByZeroError):
            async with event_store.page_connection(pool, EventFilter()) as conn:
                await conn.fetchval("SELECT 1 / 0")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
        # The mode is set only when it changes: page after page, one SET.
        sent: list[str] = []
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda record: sent.append(record.query))
        for _ in range(3):
            async with event_store.page_connection(pool, EventFilter()) as conn:
                await conn.fetchval("SELECT 1")
            # An API key lookup between pages (either mode plans it alike) keeps it.
            async with acquire_with_plans(pool, EITHER_PLANS) as conn:
                assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        assert [q for q in sent if q.startswith("SET plan_cache_mode")] == [
            "SET plan_cache_mode = force_generic_plan"
        ]
    finally:
        await pool.close()


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
    async with event_store.page_connection(services.pool, flt) as conn:
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        # A server-side prepared statement, as asyncpg makes, explained on
        # its 7th execution, when a generic plan would be cached in any mode.
        await conn.execute(f"PREPARE page AS {sql}")
        values = ", ".join(
            f"'{a.isoformat()}'::timestamptz" if isinstance(a, datetime) else repr(a) for a in args
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


def test_which_filters_get_generic_plans() -> None:
    net = ipaddress.ip_network
    suits = event_store.generic_plans_suit
    assert suits(EventFilter())
    assert suits(EventFilter(actor_email="a@x.io"))
    assert suits(EventFilter(categories=["FILES"], actions=["file.uploaded", "file.deleted"]))
    assert suits(EventFilter(ip_network=net("10.1.2.3/32")))
    assert suits(EventFilter(ip_network=net("10.1.0.0/16"), actor_id="u1"))  # bounded window
    # Two selective dimensions, a target, or a block read per listed value: custom.
    assert not suits(EventFilter(actor_email="a@x.io", actions=["file.uploaded"]))
    assert not suits(EventFilter(actor_id="u1", ip_network=net("10.1.2.3/32")))
    assert not suits(EventFilter(target_id="t-1"))
    assert not suits(EventFilter(ip_network=net("10.1.0.0/16"), actions=["a.b", "c.d"]))
    assert not suits(
        EventFilter(ip_network=net("10.1.0.0/16"), actor_id="u1", actions=["file.uploaded"])
    )
    assert not suits(EventFilter(ip_network=net("10.1.0.0/16"), target_id="t-1"))


async def test_an_address_block_page_is_exact_whether_common_or_rare(
    workspace: WorkspaceKeys, services: Services
) -> None:
    """A common block fills its page from the newest BLOCK_WINDOW events; a rare
    one (its events older than the window) is read again with its own plan.
    Both give exactly the newest matches, both ways of paging."""
    base = datetime.now(UTC) - timedelta(hours=5)
    total = event_store.BLOCK_WINDOW + 200
    rare = {0, 1, 2}  # the three oldest: outside the newest BLOCK_WINDOW
    events = [
        event(
            "file.uploaded",
            occurredAt=(base + timedelta(seconds=i)).isoformat(),
            ipAddress=f"10.77.0.{i % 200 + 1}" if i in rare else f"10.{i % 2}.0.{i % 200 + 1}",
        )
        for i in range(total)
    ]
    for start in range(0, total, 1000):
        assert (await workspace.ingest(events[start : start + 1000])).status_code == 202

    def newest(block: str, n: int) -> list[str]:
        net = ipaddress.ip_network(block)
        hits = [e for e in events if ipaddress.ip_address(e["ipAddress"]) in net]
        return [e["id"] for e in reversed(hits)][:n]

    async def page(block: str, limit: int, oldest_first: bool = False) -> list[str]:
        flt = EventFilter(ip_network=ipaddress.ip_network(block))
        async with event_store.page_connection(services.pool, flt) as conn:
            rows = await event_store.read_events_page(
                conn, workspace.id, flt, limit=limit, oldest_first=oldest_first,
                workspace_retention=True,
            )  # fmt: skip
            mode = await conn.fetchval("SHOW plan_cache_mode")
        assert mode in ("force_generic_plan", "force_custom_plan")
        return [orjson.loads(r.payload)["id"] for r in rows]

    assert await page("10.0.0.0/16", 50) == newest("10.0.0.0/16", 50)
    assert await page("10.77.0.0/16", 50) == newest("10.77.0.0/16", 50)  # 3, from the fallback
    assert await page("10.77.0.0/16", 2) == newest("10.77.0.0/16", 2)
    oldest = await page("10.1.0.0/16", 40, oldest_first=True)
    hits = [e["id"] for e in events if e["ipAddress"].startswith("10.1.")]
    assert oldest == list(reversed(hits[:40]))
