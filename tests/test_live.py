"""Live tail over websockets: auth, filters, isolation, resume without gap, bad input."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import RunningService, WorkspaceKeys, create_workspace_keys, event
from tests.live_client import live_client, ws_url

PROTOCOLS = ["graphql-transport-ws", "graphql-ws"]
# The service writes audit_log.* events (WORKSPACE) of its own when keys are made.
PRODUCT = {"filter": {"categories": ["AUTHENTICATION", "DATA", "AI"]}}


async def ingest(workspace: WorkspaceKeys, events: list[dict[str, Any]]) -> list[str]:
    response = await workspace.ingest(events)
    assert response.status_code == 202, response.text
    ids: list[str] = response.json()["ids"]
    return ids


async def close_code(base_url: str, payload: dict[str, Any]) -> tuple[int, str]:
    async with websockets.connect(ws_url(base_url), subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_connection_init_without_or_with_bad_token_closes_4401(
    service: RunningService, workspace: WorkspaceKeys
) -> None:
    code, reason = await close_code(service.base_url, {})
    assert code == 4401 and "Unauthorized" in reason
    code, _ = await close_code(service.base_url, {"authorization": "Bearer alk_key_nope.secret"})
    assert code == 4401
    code, reason = await close_code(
        service.base_url, {"authorization": f"Bearer {workspace.member}"}
    )
    assert code == 4403 and "member" in reason
    code, _ = await close_code(
        service.base_url, {"authorization": f"Bearer {workspace.ingest_key}"}
    )
    assert code == 4403


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_subscriber_receives_new_events_as_edges(
    service: RunningService, workspace: WorkspaceKeys, protocol: str
) -> None:
    async with live_client(service.base_url, workspace.admin, protocol) as client:
        op = await client.subscribe(PRODUCT)
        await asyncio.sleep(0.3)
        ids = await ingest(workspace, [event(), event("file.uploaded")])
        edges = await client.edges(op, 2)
    assert [e["node"]["id"] for e in edges] == ids
    # The edge cursor works with the query API: nothing newer than the last one.
    page = await workspace.gql(
        "query($c: String) { auditEvents(after: $c) { edges { node { id } } } }",
        {"c": edges[-1]["cursor"]},
    )
    assert ids[-1] not in [e["node"]["id"] for e in page["data"]["auditEvents"]["edges"]]
    assert ids[0] in [e["node"]["id"] for e in page["data"]["auditEvents"]["edges"]]
