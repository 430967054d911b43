"""Where an actor has been seen: distinct IP addresses, countries and devices.

Read from the events themselves (every event of the actor, not only logins),
so it always agrees with the log; from the newest ACTIVITY_MAX_EVENTS of them in the
range at most (one backward index scan), so one actor's millions of events
cannot make one query read them all. Countries are ISO codes and devices the
"browser / os / device" label, as login anomalies use them.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from auditlog.model import ACTIVITY_MAX_EVENTS, ActivityRows, SeenRow

MAX_VALUES = 500  # per kind; the most recently seen first
# The newest ACTIVITY_MAX_EVENTS + 1 events: the one more only tells that there are more.
_SQL = """
WITH newest AS MATERIALIZED (
    SELECT occurred_at, ip, payload
    FROM audit_events
    WHERE workspace_id = $1 AND actor_email = $2
      AND ($3::timestamptz IS NULL OR occurred_at >= $3)
      AND ($4::timestamptz IS NULL OR occurred_at < $4)
    ORDER BY occurred_at DESC, seq DESC
    LIMIT $6 + 1
), e AS MATERIALIZED (
    SELECT occurred_at, ip, payload::jsonb AS p FROM newest LIMIT $6
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
SELECT kind, value, count, first_seen, last_seen,
       (SELECT count(*) FROM newest) > $6 AS truncated
FROM (
    SELECT *, row_number() OVER (PARTITION BY kind ORDER BY last_seen DESC, value) AS n
    FROM grouped
) ranked
WHERE n <= $5
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, (SELECT count(*) FROM newest) > $6
ORDER BY 1, 5 DESC, 2
"""


async def read_actor_activity(
    conn: asyncpg.Connection,
    workspace_id: str,
    actor_email: str,
    occurred_from: datetime | None,
    occurred_to: datetime | None,
    *,
    max_events: int = ACTIVITY_MAX_EVENTS,
) -> ActivityRows:
    """Distinct values seen on the actor's newest events (email lower-cased), the
    most recently seen first; one row more (kind NULL) carries `truncated`."""
    records = await conn.fetch(
        _SQL, workspace_id, actor_email, occurred_from, occurred_to, MAX_VALUES, max_events
    )
    rows = [
        SeenRow(r["kind"], r["value"], r["count"], r["first_seen"], r["last_seen"])
        for r in records
        if r["kind"] is not None
    ]
    return ActivityRows(rows, any(r["truncated"] for r in records))
