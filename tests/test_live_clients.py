"""Real third-party clients: gql's websockets transport and the npm graphql-ws client."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport

from tests.conftest import RunningService, WorkspaceKeys, event
from tests.live_client import ws_url
from tests.test_live import ingest

NODE_DIR = Path(__file__).parent / "node"


async def test_gql_websockets_transport_receives_events(
    service: RunningService, workspace: WorkspaceKeys
) -> None:
    transport = WebsocketsTransport(
        url=ws_url(service.base_url),
        init_payload={"authorization": f"Bearer {workspace.admin}"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )
    document = gql(
        'subscription { auditEvents(filter: {actions: ["user.login.*"]}) '
        "{ cursor node { id action } } }"
    )
    received: list[str] = []
    async with Client(transport=transport) as session:

        async def consume() -> None:
            async for result in session.subscribe(document):
                received.append(result["auditEvents"]["node"]["id"])
                if len(received) == 2:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.5)
        ids = await ingest(workspace, [event(), event("file.uploaded"), event("user.login.failed")])
        await asyncio.wait_for(task, 10)
    assert received == [ids[0], ids[2]]


@pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules" / "graphql-ws").is_dir(),
    reason="needs node and `npm ci` in tests/node (.ci/run does it)",
)
async def test_npm_graphql_ws_client_receives_events(
    service: RunningService, workspace: WorkspaceKeys
) -> None:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "subscribe.mjs"),
        ws_url(service.base_url),
        workspace.admin,
        "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        assert first == {"connected": True}
        await asyncio.sleep(0.5)
        ids = await ingest(workspace, [event(), event("workspace.user.invited"), event()])
        lines = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 20)) for _ in range(2)]
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert [line["data"]["auditEvents"]["node"]["id"] for line in lines] == [ids[0], ids[2]]
