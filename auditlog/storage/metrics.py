"""What /metrics reads from the database, in one round trip per scrape.

Destination lags are bounded as the API's lagEvents is (an index range scan of
at most `cap` rows each); the sealing lag is one index probe per workspace.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from auditlog.storage.events import SAFE_WATERMARK


@dataclass(frozen=True)
class DestinationGauge:
    workspace_id: str
    id: uuid.UUID
    kind: str
    status: str
    attempts: int  # failures in a row
    lag_events: int  # at most the cap
    lag_seconds: float  # age of the oldest event not yet delivered; 0 when none


@dataclass(frozen=True)
class DatabaseGauges:
    destinations: list[DestinationGauge]
    sealing_lag_seconds: float  # the oldest final event not yet sealed, of any workspace
    unsealed_workspaces: int
    purged_events: dict[str, int]  # by method (rows, partition), since the log began
    purge_records: dict[str, int]


_PENDING = """FROM audit_events e
    WHERE e.workspace_id = d.workspace_id
      AND (e.xid, e.seq) > (d.cursor_xid::text::xid8, d.cursor_seq)
      AND e.category = ANY(d.categories)"""

_GAUGES = f"""
WITH dest AS (
    SELECT d.workspace_id, d.id, d.kind, d.status, d.attempts,
           (SELECT count(*) FROM (SELECT 1 {_PENDING} LIMIT $1) AS p) AS lag_events,
           (SELECT extract(epoch FROM clock_timestamp() - e.received_at) {_PENDING}
            ORDER BY e.xid, e.seq LIMIT 1) AS lag_seconds
    FROM stream_destinations d
), unsealed AS (
    SELECT (SELECT e.received_at FROM audit_events e
            WHERE e.workspace_id = w.id
              AND (e.xid, e.seq) > (coalesce(f.last_xid, '0'::xid8), coalesce(f.last_seq, 0))
              AND e.xid < {SAFE_WATERMARK}
            ORDER BY e.xid, e.seq LIMIT 1) AS oldest
    FROM workspaces w
    LEFT JOIN LATERAL (
        SELECT r.last_xid, r.last_seq FROM integrity_leaves r
        WHERE r.workspace_id = w.id ORDER BY r.start_index DESC LIMIT 1) AS f ON true
)
SELECT
    (SELECT coalesce(json_agg(json_build_object(
        'workspace_id', workspace_id, 'id', id, 'kind', kind, 'status', status,
        'attempts', attempts, 'lag_events', lag_events,
        'lag_seconds', coalesce(lag_seconds, 0)) ORDER BY workspace_id, id), '[]')
     FROM dest) AS destinations,
    (SELECT coalesce(extract(epoch FROM clock_timestamp() - min(oldest)), 0)
     FROM unsealed) AS sealing_lag,
    (SELECT count(oldest) FROM unsealed) AS unsealed_workspaces,
    (SELECT coalesce(json_agg(json_build_object(
        'method', method, 'records', records, 'events', events)), '[]')
     FROM auditlog_purge_totals()) AS purges
"""


async def read_database_gauges(conn: asyncpg.Connection, lag_cap: int) -> DatabaseGauges:
    row = await conn.fetchrow(_GAUGES, lag_cap)
    assert row is not None
    destinations = [
        DestinationGauge(
            workspace_id=d["workspace_id"],
            id=uuid.UUID(d["id"]),
            kind=d["kind"],
            status=d["status"],
            attempts=int(d["attempts"]),
            lag_events=int(d["lag_events"]),
            lag_seconds=max(0.0, float(d["lag_seconds"])),
        )
        for d in _json(row["destinations"])
    ]
    purges = _json(row["purges"])
    return DatabaseGauges(
        destinations=destinations,
        sealing_lag_seconds=max(0.0, float(row["sealing_lag"])),
        unsealed_workspaces=int(row["unsealed_workspaces"]),
        purged_events={p["method"]: int(p["events"]) for p in purges},
        purge_records={p["method"]: int(p["records"]) for p in purges},
    )


def _json(value: Any) -> list[dict[str, Any]]:
    # json columns arrive decoded (the pool's type codec).
    assert isinstance(value, list)
    return value
