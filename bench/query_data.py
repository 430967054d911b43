"""Data for bench/query.py: millions of events generated inside PostgreSQL.

Payloads are built in SQL in the canonical form ingest writes (sorted keys, no
spaces, the same fields and timestamp format), so reading them costs what
reading real events costs. One workspace (`bench-big`) holds `big` events;
the rest are spread over `workspaces - 1` others. Occurred times cover the 12
months before now.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

from auditlog.catalog import CATALOG

BIG = "bench-big"
ACTORS = 2000
TARGETS = 50_000

# (user agent, canonical device JSON)
_AGENTS = [
    (
        "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
        '{"browser":"Firefox","browserVersion":"132.0","device":null,'
        '"os":"Linux","osVersion":null}',
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.1 Safari/605.1.15",
        '{"browser":"Safari","browserVersion":"17.1","device":"Mac",'
        '"os":"Mac OS X","osVersion":"10.15.7"}',
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        '{"browser":"Chrome","browserVersion":"131.0.0","device":null,'
        '"os":"Windows","osVersion":"10"}',
    ),
]
# (/24 prefix, canonical location JSON); blocks 4..19 are 10.N.x.y without location.
_PLACES = [
    (
        "81.2.69",
        '{"city":"London","country":"United Kingdom","countryCode":"GB",'
        '"latitude":51.5142,"longitude":-0.0931,"region":"England"}',
    ),
    (
        "89.160.20",
        '{"city":"Linköping","country":"Sweden","countryCode":"SE",'
        '"latitude":58.4167,"longitude":15.6167,"region":"Östergötland County"}',
    ),
    (
        "175.16.199",
        '{"city":"Changchun","country":"China","countryCode":"CN",'
        '"latitude":43.88,"longitude":125.3228,"region":"Jilin Sheng"}',
    ),
    (
        "216.160.83",
        '{"city":"Milton","country":"United States","countryCode":"US",'
        '"latitude":47.2513,"longitude":-122.3149,"region":"Washington"}',
    ),
]

# One chunk: $1 first g, $2 count, $3 actions, $4 their categories, $5 user agents,
# $6 their devices, $7 /24 prefixes, $8 their locations, $9 for bench-big or not,
# $10 how many other workspaces share the rest.
_INSERT = """
WITH r AS (
    SELECT g,
        CASE WHEN $9 THEN 'bench-big'
             ELSE 'bench-' || lpad(((g % ($10::int)) + 1)::text, 4, '0') END AS ws,
        date_trunc('microseconds', now() - random() * interval '365 days') AS t,
        gen_random_uuid() AS id,
        1 + floor(random() * cardinality($3::text[]))::int AS a,
        floor(random() * 2000)::int AS u,
        floor(random() * 20)::int AS b,
        floor(random() * 256)::int AS h,
        floor(random() * 256)::int AS h2,
        1 + floor(random() * 3)::int AS d,
        floor(random() * 50000)::int AS f
    FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) AS g
), e AS (
    SELECT r.*, t + (random() * interval '2 seconds') AS rt,
        CASE WHEN b < 4 THEN ($7::text[])[b + 1] || '.' || h
             ELSE '10.' || b || '.' || h2 || '.' || h END AS ip_text,
        'user' || u || '@' || ws || '.example' AS email
    FROM r
)
INSERT INTO audit_events (workspace_id, occurred_at, id, received_at, action, category,
                          actor_type, actor_id, actor_email, ip, target_ids, payload)
SELECT ws, t, id, rt, ($3::text[])[a], ($4::text[])[a], 'USER', 'u_' || u, email,
       ip_text::inet, ARRAY['f_' || f],
       '{"action":"' || ($3::text[])[a]
       || '","actor":{"email":"' || email || '","id":"u_' || u || '","name":"User ' || u
       || '","type":"USER"},"anomalies":[],"category":"' || ($4::text[])[a]
       || '","device":' || ($6::text[])[d]
       || ',"id":"' || id || '","ipAddress":"' || ip_text
       || '","location":' || CASE WHEN b < 4 THEN ($8::text[])[b + 1] ELSE 'null' END
       || ',"metadata":{"reason":"bench","requestId":"req_' || (g % 100000) || '"}'
       || ',"occurredAt":"' || to_char(t, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
       || '","receivedAt":"' || to_char(rt, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
       || '","targets":[{"id":"f_' || f || '","name":"file-' || f || '.pdf","type":"file"}]'
       || ',"userAgent":"' || ($5::text[])[d] || '","workspaceId":"' || ws || '"}'
FROM e
"""


@dataclass(frozen=True)
class BenchData:
    total: int
    big: int
    workspaces: int


async def loaded_count(conn: asyncpg.Connection) -> int:
    """How many events `generate` wrote into this database (0: none, or interrupted)."""
    if await conn.fetchval("SELECT to_regclass('bench_generated')") is None:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(total), 0) FROM bench_generated"))


async def generate(conn: asyncpg.Connection, data: BenchData, chunk: int = 250_000) -> None:
    """Create the workspaces, the 13 monthly partitions, and all events (SQL side)."""
    await conn.execute("SET TimeZone = 'UTC'")
    await conn.execute(
        """INSERT INTO workspaces (id, plan, retention_days)
           SELECT 'bench-' || lpad(n::text, 4, '0'), 'ENTERPRISE', NULL::int
           FROM generate_series(1, $1::int - 1) n
           UNION ALL SELECT $2, 'ENTERPRISE', NULL
           ON CONFLICT DO NOTHING""",
        data.workspaces,
        BIG,
    )
    await conn.execute(
        """SELECT auditlog_ensure_partition((now() - m * interval '1 month')::date)
           FROM generate_series(-1, 12) m"""
    )
    args = (
        [e.action for e in CATALOG],
        [e.category.value for e in CATALOG],
        [a for a, _ in _AGENTS],
        [d for _, d in _AGENTS],
        [p for p, _ in _PLACES],
        [loc for _, loc in _PLACES],
    )
    started = time.perf_counter()
    for is_big, count in ((True, data.big), (False, data.total - data.big)):
        done = 0
        while done < count:
            n = min(chunk, count - done)
            await conn.execute(_INSERT, done, n, *args, is_big, data.workspaces - 1)
            done += n
            print(
                f"  {'big' if is_big else 'rest'}: {done:,}/{count:,} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    await conn.execute(
        """INSERT INTO audit_event_ids (workspace_id, id, occurred_at)
           SELECT workspace_id, id, occurred_at FROM audit_events"""
    )
    await conn.execute("ANALYZE audit_events")
    await conn.execute("ANALYZE audit_event_ids")
    await conn.execute("CREATE TABLE bench_generated (total bigint NOT NULL)")
    await conn.execute("INSERT INTO bench_generated VALUES ($1)", data.total)
    print(f"  generated {data.total:,} events in {time.perf_counter() - started:.0f} s")
