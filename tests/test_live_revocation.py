"""A websocket loses its access with its token: a revoked key or an expired console
session closes it with 4401 within 5 s, and every operation on it is authorized again."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import jwt
import pytest

from auditlog.runtime import Services
from auditlog.services import keys as key_service
from tests.conftest import (
    JWT_SECRET,
    RunningService,
    WorkspaceKeys,
    event,
    make_settings,
    start_service,
    stop_service,
)
from tests.live_client import LiveClient, live_client, ws_url
from tests.test_cli import run_cli
from tests.test_live import PRODUCT, PROTOCOLS, ingest

CLOSE_WITHIN = 5.0  # the contract
NODE_DIR = Path(__file__).parent / "node"
CREATE_EXPORT = "mutation ($input: CreateExportInput!) { createExport(input: $input) { id } }"
CREATE_DESTINATION = """mutation ($input: CreateStreamingDestinationInput!) {
  createStreamingDestination(input: $input) { destination { id } }
}"""


async def new_admin_key(services: Services, workspace_id: str) -> key_service.CreatedKey:
    return await key_service.create_key(
        services.pool, services.ingestor, workspace_id=workspace_id, role="admin"
    )


async def assert_closed_4401(client: LiveClient, within: float = CLOSE_WITHIN) -> str:
    code, reason = await client.closed(within + 1)
    assert code == 4401, (code, reason)
    assert reason is not None and reason.startswith("Unauthorized")
    return reason


async def assert_live(client: LiveClient, op: str, workspace: WorkspaceKeys) -> None:
    """The subscription delivers a new event: it is in place and working."""
    await asyncio.sleep(0.3)
    ids = await ingest(workspace, [event()])
    assert [e["node"]["id"] for e in await client.edges(op, 1)] == ids


@pytest.fixture(scope="module")
async def rare_recheck(database_url: str, data_dir: Path) -> AsyncIterator[RunningService]:
    """A service that re-checks open sockets' keys only every 10 minutes: a key
    revoked in the database alone is then only caught by each operation's own check."""
    running = await start_service(make_settings(database_url, data_dir, ws_recheck_seconds=600.0))
    yield running
    await stop_service(running)


async def test_cli_revocation_closes_a_live_and_an_idle_socket_with_4401(
    service: RunningService, workspace: WorkspaceKeys, database_url: str, data_dir: Path
) -> None:
    """The CLI runs in its own process without Redis: its in-process bus reaches no
    server, so the periodic re-check against the database closes the sockets."""
    created = await new_admin_key(service.services, workspace.id)
    async with (
        live_client(service.base_url, created.key) as live,
        live_client(service.base_url, created.key) as idle,
        live_client(service.base_url, workspace.admin) as bystander,
    ):
        op = await live.subscribe(PRODUCT)
        other = await bystander.subscribe(PRODUCT)
        await assert_live(live, op, workspace)
        await bystander.edges(other, 1)
        # Blocking subprocess in a thread: the service under test runs on this loop.
        revoked = await asyncio.to_thread(
            run_cli, database_url, data_dir, "keys", "revoke", created.id
        )
        assert revoked.returncode == 0, revoked.stderr
        started = time.monotonic()
        reasons = await asyncio.gather(assert_closed_4401(live), assert_closed_4401(idle))
        assert time.monotonic() - started < CLOSE_WITHIN
        assert all("revoked" in reason for reason in reasons), reasons
        # Sockets of other keys stay open and live.
        assert bystander.is_open
        await assert_live(bystander, other, workspace)


def _export(n: int) -> dict[str, object]:
    return {"input": {"format": "CSV"}}


def _destination(n: int) -> dict[str, object]:
    hook = {"webhook": {"url": f"http://127.0.0.1:9/hook-{n}"}}
    return {"input": {"name": f"hook-{n}", "config": hook}}


@pytest.mark.parametrize(
    ("document", "variables", "table"),
    [
        (CREATE_EXPORT, _export, "exports"),
        (CREATE_DESTINATION, _destination, "stream_destinations"),
    ],
    ids=["createExport", "createStreamingDestination"],
)
async def test_a_mutation_sent_after_revocation_is_refused_and_the_socket_closed(
    rare_recheck: RunningService,
    workspace: WorkspaceKeys,
    owner: asyncpg.Connection,
    document: str,
    variables: Callable[[int], dict[str, object]],
    table: str,
) -> None:
    created = await new_admin_key(rare_recheck.services, workspace.id)
    count = f"SELECT count(*) FROM {table} WHERE workspace_id = $1"
    async with live_client(rare_recheck.base_url, created.key) as client:
        # While the key is valid the mutation runs over the socket.
        done = await client.next_message(await client.subscribe(variables(1), query=document))
        assert done["type"] == "next" and "errors" not in done["payload"], done
        # Revoked in the database alone (no bus message, no re-check for minutes):
        # the socket is still open when the next mutation arrives.
        await owner.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", created.id)
        before = await owner.fetchval(count, workspace.id)
        assert before == 1
        op = await client.subscribe(variables(2), query=document)
        reason = await assert_closed_4401(client, within=2.0)
        assert "revoked" in reason
        assert client.inbox[op].empty(), client.inbox[op].get_nowait()
    assert await owner.fetchval(count, workspace.id) == before


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_every_operation_is_authorized_again(
    rare_recheck: RunningService,
    workspace: WorkspaceKeys,
    owner: asyncpg.Connection,
    protocol: str,
) -> None:
    """A subscription runs while the key is valid; once it is revoked the next
    operation closes the socket, on both subprotocols."""
    created = await new_admin_key(rare_recheck.services, workspace.id)
    async with live_client(rare_recheck.base_url, created.key, protocol) as client:
        live = await client.subscribe(PRODUCT)
        await assert_live(client, live, workspace)
        await owner.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", created.id)
        refused = await client.subscribe(PRODUCT)
        await assert_closed_4401(client, within=2.0)
        assert client.inbox[refused].empty()


async def test_revocation_through_the_accounts_api_closes_sockets_at_once(
    rare_recheck: RunningService, workspace: WorkspaceKeys
) -> None:
    """In the same process the revocation notice arrives on the in-process bus: no
    waiting for a re-check (this service re-checks every 10 minutes)."""
    services = rare_recheck.services
    created = await new_admin_key(services, workspace.id)
    async with live_client(rare_recheck.base_url, created.key) as client:
        op = await client.subscribe(PRODUCT)
        await asyncio.sleep(0.3)
        await key_service.revoke_key(services.pool, services.ingestor, created.id, bus=services.bus)
        started = time.monotonic()
        await assert_closed_4401(client, within=1.0)
        assert time.monotonic() - started < 1.0
        assert op


def _session(workspace_id: str, exp: int) -> str:
    claims = {"sub": "u_7", "workspace": workspace_id, "role": "admin", "exp": exp}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


async def test_a_console_session_socket_closes_at_its_exp(
    service: RunningService, workspace: WorkspaceKeys
) -> None:
    exp = math.ceil(time.time()) + 2
    token = _session(workspace.id, exp)
    async with (
        live_client(service.base_url, token) as live,
        live_client(service.base_url, token) as idle,
    ):
        op = await live.subscribe(PRODUCT)
        await assert_live(live, op, workspace)
        reasons = await asyncio.gather(
            assert_closed_4401(live, exp - time.time() + CLOSE_WITHIN),
            assert_closed_4401(idle, exp - time.time() + CLOSE_WITHIN),
        )
        closed_at = time.time()
    assert all("expired" in reason for reason in reasons), reasons
    # Not before the token expires (the clock's resolution aside), and soon after.
    assert exp - 0.2 <= closed_at < exp + CLOSE_WITHIN


@pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules" / "graphql-ws").is_dir(),
    reason="needs node and `npm ci` in tests/node (.ci/run does it)",
)
async def test_npm_graphql_ws_client_sees_4401_on_revocation(
    rare_recheck: RunningService, workspace: WorkspaceKeys
) -> None:
    services = rare_recheck.services
    created = await new_admin_key(services, workspace.id)
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "subscribe.mjs"),
        ws_url(rare_recheck.base_url),
        created.key,
        "1000",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert json.loads(await asyncio.wait_for(proc.stdout.readline(), 20)) == {"connected": True}
        await asyncio.sleep(0.5)
        await key_service.revoke_key(services.pool, services.ingestor, created.id, bus=services.bus)
        assert await asyncio.wait_for(proc.wait(), CLOSE_WITHIN) == 2
        error = (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert '"code":4401' in error, error
