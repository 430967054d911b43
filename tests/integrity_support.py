"""Helpers of the integrity tests: the real CLI as a subprocess, a service on a
database of its own, and reading a workspace's checkpoints and events through
GraphQL as a verifier outside the service would."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from auditlog.runtime import Services
from auditlog.services import integrity as svc
from auditlog.storage import integrity as tree_store
from tests import integrity_verifier as v
from tests.conftest import (
    SECRET_KEY,
    RunningService,
    SpareDatabases,
    WorkspaceKeys,
    create_workspace_keys,
    make_settings,
    start_service,
    stop_service,
)


async def run_auditlog(
    database_url: str,
    data_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    """`auditlog ARGS...` as a user runs it; (exit code, stdout, stderr)."""
    full = {
        **os.environ,
        "DATABASE_URL": database_url,
        "AUDITLOG_DATA_DIR": str(data_dir),
        "AUDITLOG_SECRET_KEY": SECRET_KEY,
    }
    for name in ("REDIS_URL", "AUDITLOG_SIGNING_KEY", "AUDITLOG_LOG_NAME"):
        full.pop(name, None)
    full.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auditlog.cli",
        *args,
        env=full,
        cwd=data_dir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@asynccontextmanager
async def isolated_service(
    spare: SpareDatabases, data_dir: Path, **settings: Any
) -> AsyncIterator[RunningService]:
    """The real service on a database of its own, so that `verify --database`
    (which checks every workspace) sees only what this service's tests did."""
    url = await spare.new()
    running = await start_service(make_settings(url, data_dir, **settings))
    try:
        yield running
    finally:
        await stop_service(running)


async def new_workspace(service: RunningService, http: httpx.AsyncClient) -> WorkspaceKeys:
    return await create_workspace_keys(service.services, http)


async def seal(services: Services, workspace_id: str, batch: int = svc.SEAL_BATCH) -> int:
    """Seal what is final; the tree size after."""
    async with services.pool.acquire() as conn:
        await svc.seal_until_caught_up(
            conn, workspace_id, services.signing_keys.current(), batch=batch
        )
        return (await tree_store.read_frontier(conn, workspace_id)).size


async def gql_data(ws: WorkspaceKeys, query: str, variables: dict[str, Any] | None = None) -> Any:
    body = await ws.gql(query, variables)
    assert "errors" not in body, body
    return body["data"]


CHECKPOINTS = """query($before: Int) { integrity { origin verifierKey verifierKeys
  checkpoints(first: 500, before: $before) { treeSize rootHash signedNote sealedAt } } }"""


async def checkpoints(ws: WorkspaceKeys) -> list[dict[str, Any]]:
    """Every checkpoint of the workspace, smallest tree first."""
    out: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        page = (await gql_data(ws, CHECKPOINTS, {"before": before}))["integrity"]["checkpoints"]
        out.extend(page)
        if len(page) < 500:
            return sorted(out, key=lambda c: int(c["treeSize"]))
        before = page[-1]["treeSize"]


async def integrity_keys(ws: WorkspaceKeys) -> tuple[str, str, list[str]]:
    """(origin, current verifier key, every verifier key)."""
    data = (await gql_data(ws, CHECKPOINTS, {"before": 1}))["integrity"]
    return data["origin"], data["verifierKey"], data["verifierKeys"]


EVENTS = """query($after: String) { auditEvents(first: 500, after: $after) {
  edges { node { id payload leafIndex } } pageInfo { hasNextPage endCursor } } }"""


async def events(ws: WorkspaceKeys) -> list[dict[str, Any]]:
    """Every event the service shows (id, payload, leafIndex), in its order."""
    out: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = (await gql_data(ws, EVENTS, {"after": after}))["auditEvents"]
        out.extend(e["node"] for e in page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            return out
        after = page["pageInfo"]["endCursor"]


def open_with_any(note: str, keys: list[str]) -> v.Checkpoint:
    for key in keys:
        try:
            return v.open_checkpoint(note, key)
        except v.NotVerified:
            continue
    raise v.NotVerified("no listed verifier key verifies this checkpoint")


@asynccontextmanager
async def superuser(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The attacker: the database superuser, with every user trigger (the append-only
    guards included) switched off for this session."""
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        await conn.execute("SET session_replication_role = replica")
        yield conn
    finally:
        await conn.close()


async def payloads_in_ingest_order(database_url: str, workspace_id: str) -> list[Any]:
    """The events as the database now holds them, in ingest order (xid, seq), parsed."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT payload FROM audit_events WHERE workspace_id = $1 ORDER BY xid, seq",
            workspace_id,
        )
    finally:
        await conn.close()
    return [orjson.loads(r["payload"]) for r in rows]
