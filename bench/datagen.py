"""Synthetic audit events written straight into the store (as the owner), for
benchmarks that need millions of rows faster than ingest could take them.

Rows look like ingested ones: canonical-looking payload of about 400 bytes,
ledger ids, every index of the real schema; occurred_at uniform over a window.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

CHUNK = 100_000

_INSERT = """
WITH generated AS (
    SELECT g,
           $2::timestamptz - (random() * $3::float8) * interval '1 day' AS ts,
           (ARRAY['user.login.success', 'user.login.failed', 'file.uploaded', 'file.deleted',
                  'workspace.user.invited', 'mailbox.created', 'ai.workflow.created'])[1 + g % 7]
               AS action
    FROM generate_series(1, $4::int) AS g
    ORDER BY ts
), stored AS (
    INSERT INTO audit_events (workspace_id, occurred_at, id, received_at, action, category,
                              actor_type, actor_id, actor_email, ip, target_ids, payload)
    SELECT $1::text, ts, gen_random_uuid(), ts, action,
           CASE split_part(action, '.', 1)
               WHEN 'user' THEN 'AUTHENTICATION' WHEN 'file' THEN 'DATA'
               WHEN 'workspace' THEN 'WORKSPACE' WHEN 'mailbox' THEN 'COMMUNICATION'
               ELSE 'AI' END,
           'USER', 'u_' || (g % 500), 'user' || (g % 500) || '@acme.io',
           ('10.' || (g % 7) || '.' || (g % 250) || '.' || (g % 200))::inet,
           ARRAY['f_' || (g % 5000)],
           json_build_object(
               'action', action, 'actor', json_build_object('email', 'user' || (g % 500)
               || '@acme.io', 'id', 'u_' || (g % 500), 'name', 'User ' || (g % 500),
               'type', 'USER'),
               'ipAddress', '10.0.0.1', 'metadata', json_build_object('reason', 'bench'),
               'occurredAt', ts, 'targets', json_build_array(json_build_object(
                   'id', 'f_' || (g % 5000), 'name', 'report.pdf', 'type', 'file')),
               'userAgent', 'Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101',
               'workspaceId', $1)::text
    FROM generated
    RETURNING workspace_id, id, occurred_at
)
INSERT INTO audit_event_ids (workspace_id, id, occurred_at) SELECT * FROM stored
"""


async def ensure_months(conn: asyncpg.Connection, newest: datetime, days: float) -> None:
    await conn.execute(
        """SELECT auditlog_ensure_partition(d::date)
           FROM generate_series($1::timestamptz - $2::float8 * interval '1 day',
                                $1::timestamptz, interval '1 day') AS d""",
        newest,
        days,
    )


async def generate_events(
    conn: asyncpg.Connection, workspace_id: str, count: int, newest: datetime, days: float
) -> None:
    """`count` events of one workspace, occurred_at uniform over `days` before `newest`."""
    done = 0
    while done < count:
        size = min(CHUNK, count - done)
        await conn.execute(_INSERT, workspace_id, newest, days, size)
        done += size
