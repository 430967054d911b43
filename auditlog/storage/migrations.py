"""Schema migrations: numbered SQL files applied in order, each once, recorded.

Runs as the owner (the DATABASE_URL user), never as the runtime role. Several
processes may call it at once (every `serve` does at start): an advisory lock
makes them take turns, and the second finds nothing left to do.
"""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

_LOCK_KEY = 7_311_402_118  # arbitrary, fixed: "auditlog migrations"


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every migration shipped with the package, in order."""
    folder = resources.files("auditlog.storage") / "migrations"
    files = sorted(
        (entry.name, entry.read_text("utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return files


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply every pending migration; return the names applied now."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   name text PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        applied: list[str] = []
        for name, sql in migration_files():
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            log.info("applied migration %s", name)
            applied.append(name)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def pending_migrations(conn: asyncpg.Connection) -> list[str]:
    """Names of shipped migrations not yet applied (readiness check)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = (
        {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        if exists
        else set()
    )
    return [name for name, _ in migration_files() if name not in done]
