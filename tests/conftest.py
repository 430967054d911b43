"""Test fixtures: a real PostgreSQL (DATABASE_URL, or an embedded one), a fresh
database per session, and the real service on a loopback port.

Redis tests need REDIS_URL and are skipped without it (CI sets it).
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from auditlog.app import create_app
from auditlog.config import Settings
from auditlog.runtime import Services, migrate
from auditlog.services import keys as key_service
from auditlog.services import workspaces as workspace_service
from auditlog.storage.database import start_embedded
from tests.geoip import build_city_mmdb

JWT_SECRET = "test-jwt-secret-" + "0123456789abcdef" * 4
SECRET_KEY = "test-secret-key-0123456789abcdef"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("REDIS_URL"):
        return
    skip = pytest.mark.skip(reason="needs REDIS_URL (a real Redis)")
    for item in items:
        if "redis" in item.keywords:
            item.add_marker(skip)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """The PostgreSQL server: DATABASE_URL, or an embedded one in a temp folder."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    with tempfile.TemporaryDirectory(prefix="auditlog-pg-") as tmp:
        server = start_embedded(Path(tmp))
        try:
            yield str(server.get_uri("postgres"))
        finally:
            server.cleanup()


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}" + (f"?{query}" if query else "")


async def _create_database(server_url: str) -> tuple[str, str]:
    """A new migrated database on the server: (name, url)."""
    name = f"auditlog_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _with_database(server_url, name)
    try:
        await migrate(url)
    except BaseException:
        await _drop_databases(server_url, [name])
        raise
    return name, url


async def _drop_databases(server_url: str, names: list[str]) -> None:
    async def drop(name: str) -> None:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    await asyncio.gather(*(drop(n) for n in names))


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """A fresh database for this test session, migrated, dropped afterwards."""
    name, url = await _create_database(server_url)
    yield url
    await _drop_databases(server_url, [name])


class SpareDatabases:
    """Databases for tests that need one to themselves (`auditlog verify --database`
    checks every workspace it finds). All are dropped together at the end of the
    session: each DROP DATABASE waits for a checkpoint, so one wait, not one a test."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.names: list[str] = []

    async def new(self) -> str:
        name, url = await _create_database(self.server_url)
        self.names.append(name)
        return url


@pytest.fixture(scope="session")
async def spare_databases(server_url: str) -> AsyncIterator[SpareDatabases]:
    spare = SpareDatabases(server_url)
    yield spare
    await _drop_databases(server_url, spare.names)


def make_settings(database_url: str, tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": None,
        "data_dir": tmp,
        "secret_key": SECRET_KEY,
        "jwt_secret": JWT_SECRET,
        "allow_private_destinations": True,
        # Tests load tens of thousands of events through one key as fast as they can;
        # the ingest rate limit is tested on a service of its own (test_attacks.py).
        "ingest_events_per_second": 0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="auditlog-data-") as tmp:
        yield Path(tmp)


@dataclass
class RunningService:
    base_url: str
    services: Services
    server: uvicorn.Server


async def start_service(settings: Settings, *, background: bool = False) -> RunningService:
    app = create_app(settings, background=background)
    port = free_port()
    config = uvicorn.Config(  # as `auditlog serve` runs it
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError("service did not start")
    server_task_registry[id(server)] = task
    return RunningService(f"http://127.0.0.1:{port}", app.state.services, server)


server_task_registry: dict[int, asyncio.Task[None]] = {}


async def stop_service(service: RunningService) -> None:
    service.server.should_exit = True
    await server_task_registry.pop(id(service.server))


@pytest.fixture(scope="session")
async def service(database_url: str, data_dir: Path) -> AsyncIterator[RunningService]:
    """The real service on a loopback port (no background workers)."""
    mmdb = build_city_mmdb(data_dir / "city-test.mmdb")
    running = await start_service(make_settings(database_url, data_dir, geoip_db=mmdb))
    yield running
    await stop_service(running)


@pytest.fixture(scope="session")
def services(service: RunningService) -> Services:
    return service.services


@pytest.fixture
async def http(service: RunningService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
        yield client


@dataclass
class WorkspaceKeys:
    """A fresh workspace with one key per role, and helpers that use them."""

    id: str
    admin: str
    owner: str
    member: str
    ingest_key: str
    http: httpx.AsyncClient

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def ingest(self, events: list[dict[str, Any]], key: str | None = None) -> httpx.Response:
        return await self.http.post(
            "/v1/events", json=events, headers=self.auth(key or self.ingest_key)
        )

    async def gql(
        self, query: str, variables: dict[str, Any] | None = None, key: str | None = None
    ) -> dict[str, Any]:
        response = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers=self.auth(key or self.admin),
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


async def create_workspace_keys(
    services: Services, http: httpx.AsyncClient, plan: str = "enterprise", **kw: Any
) -> WorkspaceKeys:
    ws_id = f"ws-{uuid.uuid4().hex[:12]}"
    await workspace_service.create_workspace(services.pool, ws_id, plan, kw.get("retention_days"))
    keys = {}
    for role in ("admin", "owner", "member", "ingest"):
        created = await key_service.create_key(
            services.pool, services.ingestor, workspace_id=ws_id, role=role
        )
        keys[role] = created.key
    return WorkspaceKeys(ws_id, keys["admin"], keys["owner"], keys["member"], keys["ingest"], http)


@pytest.fixture
async def workspace(services: Services, http: httpx.AsyncClient) -> WorkspaceKeys:
    return await create_workspace_keys(services, http)


def event(action: str = "user.login.success", **overrides: Any) -> dict[str, Any]:
    """A valid event; override any field."""
    body: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "occurredAt": datetime.now(UTC).isoformat(),
        "action": action,
        "actor": {"type": "USER", "id": "u_1", "name": "Ada Lovelace", "email": "ada@acme.io"},
        "targets": [{"type": "file", "id": "f_9", "name": "q3-report.pdf"}],
        "ipAddress": "81.2.69.142",
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
        "metadata": {"reason": "test"},
    }
    body.update(overrides)
    return body


@asynccontextmanager
async def serve_asgi(app: Any) -> AsyncIterator[str]:
    """Run any ASGI app (a test receiver, a JWKS endpoint) on a loopback port; yield its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.get_running_loop().create_task(server.serve())
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    if not server.started:
        raise RuntimeError("test server did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def owner(services: Services) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the owner (the DATABASE_URL user), as maintenance has."""
    conn = await asyncpg.connect(services.database_url)
    yield conn
    await conn.close()
