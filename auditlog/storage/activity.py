"""Where an actor has been seen: distinct IP addresses, countries and devices.

Read from the events themselves (every event of the actor, not only logins),
so it always agrees with the log. Countries are ISO codes and devices the
"browser / os / device" label, as login anomalies use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

MAX_VALUES = 500  # per kind; the most recently seen first


@dataclass(frozen=True, slots=True)
class SeenRow:
    kind: str  # ip | country | device
    value: str
    count: int
    first_seen: datetime
    last_seen: datetime


_SQL = """
WITH e AS MATERIALIZED (
    SELECT occurred_at, ip, payload::jsonb AS p
    FROM audit_events
    WHERE workspace_id = $1 AND actor_email = $2
      AND ($3::timestamptz IS NULL OR occurred_at >= $3)
      AND ($4::timestamptz IS NULL OR occurred_at < $4)
), seen AS (
    SELECT 'ip' AS kind, host(ip) AS value, occurred_at FROM e WHERE ip IS NOT NULL
    UNION ALL
    SELECT 'country', p #>> '{location,countryCode}', occurred_at FROM e
    UNION ALL
    SELECT 'device', nullif(concat_ws(' / ', p #>> '{device,browser}', p #>> '{device,os}',
                                      p #>> '{device,device}'), ''), occurred_at FROM e
), grouped AS (
    SELECT kind, value, count(*) AS count, min(occurred_at) AS first_seen,
           max(occurred_at) AS last_seen
    FROM seen WHERE value IS NOT NULL
    GROUP BY kind, value
)
SELECT kind, value, count, first_seen, last_seen FROM (
    SELECT *, row_number() OVER (PARTITION BY kind ORDER BY last_seen DESC, value) AS n
    FROM grouped
) ranked
WHERE n <= $5
ORDER BY kind, last_seen DESC, value
"""


async def read_actor_activity(
    conn: asyncpg.Connection,
    workspace_id: str,
    actor_email: str,
    occurred_from: datetime | None,
    occurred_to: datetime | None,
) -> list[SeenRow]:
    """Distinct values seen on the actor's events (email lower-cased), newest first."""
    records = await conn.fetch(
        _SQL, workspace_id, actor_email, occurred_from, occurred_to, MAX_VALUES
    )
    return [
        SeenRow(r["kind"], r["value"], r["count"], r["first_seen"], r["last_seen"]) for r in records
    ]
